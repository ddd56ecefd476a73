"""Train the demo's small CLIP on the synthetic world, for a fixed number of steps, on the CPU.

Recipe: a random-init ``CLIPModel`` (sizes in ``DemoConfig``), symmetric InfoNCE with the
model's learnable logit scale (clamped at 100, as in CLIP), AdamW, linear warm-up then a cosine
decay over the step count. The loss counts every image a caption truly describes as a positive
(see ``contrastive.clip_loss``); with unique captions it is CLIP's loss exactly.

A step count, not a time budget: the amount of training, and so the model every test and figure
is measured on, is the same on a fast, slow or busy machine; only the wall time differs. Earlier
runs with a 90 s budget on a 2-core machine made 2,084 steps (seed 0, held-out text-to-image
precision@5 0.99) and 2,575 steps (seed 1, 0.96); 400 steps reach about 0.53 (``test_demo.py``).
Setup before training (rendering 2,880 images, preprocessing them) takes about 3 s.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from transformers import CLIPModel

from xmodal.demo.contrastive import TrainingData, augment, clip_loss, describes, prepare_data
from xmodal.demo.evaluate import evaluate_precision_at_k
from xmodal.demo.tiny import TinySizes, build_tiny_clip, save_model_dir
from xmodal.demo.world import (
    BACKGROUNDS,
    Attributes,
    captions_for,
    combinations,
)

logger = logging.getLogger(__name__)

DEMO_MODEL_NAME = "demo-model-v2"  # v2: trained for a fixed step count, not a time budget
REPORT_FILE = "xmodal_demo.json"
_REQUIRED = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "processor_config.json",
    REPORT_FILE,
)

__all__ = [
    "DemoConfig",
    "TrainReport",
    "train_demo_model",
    "ensure_demo_model",
    "evaluate_precision_at_k",
]


@dataclass(frozen=True)
class DemoConfig:
    """What ``train_demo_model`` trains; every field is recorded in the saved report."""

    seed: int = 0
    steps: int = 2000
    n_train: int = 2880
    world_size: int = 64  # side of the rendered images; the processor resizes to image_size
    image_size: int = 64
    patch_size: int = 16
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    projection_dim: int = 64
    text_length: int = 16
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 20
    positives: str = "described"  # or "identical": only captions with the same text

    def __post_init__(self) -> None:
        if self.positives not in ("described", "identical"):
            raise ValueError(
                f"positives must be 'described' or 'identical', not {self.positives!r}"
            )


@dataclass(frozen=True)
class TrainReport:
    """The outcome of one training run."""

    out_dir: Path
    steps: int
    seconds: float
    first_loss: float
    final_loss: float
    config: DemoConfig


def _lr_factor(step: int, config: DemoConfig) -> float:
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = min(step / config.steps, 1.0)
    return 0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * progress))


def _train_loop(
    model: CLIPModel, data: TrainingData, config: DemoConfig
) -> tuple[int, list[float]]:
    generator = torch.Generator().manual_seed(config.seed)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    other = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": other, "weight_decay": 0.0},
        ],
        lr=config.lr,
    )
    model.train()
    n, per_image = data.input_ids.shape[:2]
    losses: list[float] = []
    start = time.monotonic()
    step = 0
    while step < config.steps:
        for group in optimizer.param_groups:
            group["lr"] = config.lr * _lr_factor(step, config)
        index = torch.randperm(n, generator=generator)[: config.batch_size]
        choice = torch.randint(per_image, (len(index),), generator=generator)
        input_ids = data.input_ids[index, choice]
        output = model(
            input_ids=input_ids,
            attention_mask=data.attention_mask[index, choice],
            pixel_values=augment(data.pixels[index], generator),
        )
        truth = describes(data, index, choice, identical=config.positives == "identical")
        loss = clip_loss(output.logits_per_text, truth)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0.0, math.log(100.0))
        losses.append(loss.item())
        if step % 50 == 0:
            logger.info("step %d loss %.3f (%.0f s)", step, losses[-1], time.monotonic() - start)
        step += 1
    model.eval()
    return step, losses


def _publish(build_dir: Path, out_dir: Path) -> None:
    """Move a finished ``build_dir`` to ``out_dir`` by rename; an old ``out_dir`` is replaced."""
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}-{time.monotonic_ns()}")
        out_dir.rename(old)
    try:
        build_dir.rename(out_dir)
    except OSError:
        if not is_complete(out_dir):  # lost a race to another trainer only if it finished
            raise
        shutil.rmtree(build_dir, ignore_errors=True)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def train_demo_model(
    out_dir: str | Path,
    *,
    seed: int = 0,
    config: DemoConfig | None = None,
) -> TrainReport:
    """Train the demo CLIP for ``config.steps`` steps and save it to ``out_dir``.

    ``config`` overrides the defaults of every other field; ``seed`` wins.
    The directory appears whole or not at all (built beside it, then renamed into place).
    """
    config = replace(config or DemoConfig(), seed=seed)
    sizes = TinySizes(
        config.image_size,
        config.patch_size,
        config.hidden,
        config.layers,
        config.heads,
        config.projection_dim,
        max_text_positions=32,
    )
    every = [Attributes(c, s, z, b) for c, s, z in combinations() for b in BACKGROUNDS]
    texts = [caption for attrs in every for caption in captions_for(attrs)]
    model, processor = build_tiny_clip(sizes, seed=seed, texts=texts)
    data = prepare_data(
        processor,
        config.n_train,
        seed=config.seed,
        world_size=config.world_size,
        text_length=config.text_length,
    )
    began = time.monotonic()
    steps, losses = _train_loop(model, data, config)
    seconds = time.monotonic() - began
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    build_dir = Path(tempfile.mkdtemp(prefix=f".{out.name}.build-", dir=out.parent))
    report = TrainReport(out, steps, seconds, losses[0], float(np.mean(losses[-10:])), config)
    try:
        save_model_dir(model, processor, build_dir)
        record = {**asdict(report), "out_dir": str(out), "format": DEMO_MODEL_NAME}
        (build_dir / REPORT_FILE).write_text(json.dumps(record, indent=2), encoding="utf-8")
        _publish(build_dir, out)
    finally:
        shutil.rmtree(build_dir, ignore_errors=True)
    logger.info(
        "trained %d steps in %.1f s, loss %.3f -> %.3f",
        steps,
        seconds,
        report.first_loss,
        report.final_loss,
    )
    return report


def is_complete(directory: Path) -> bool:
    """Every file of a saved demo model is there (it is published by one rename)."""
    return all((directory / name).is_file() for name in _REQUIRED)


def default_cache_dir() -> Path:
    """``$XMODAL_CACHE/demo-model-v2`` when set, else ``~/.cache/xmodal/demo-model-v2``."""
    root = os.environ.get("XMODAL_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "xmodal"
    return base / DEMO_MODEL_NAME


def ensure_demo_model(cache_dir: str | Path | None = None) -> Path:
    """The demo model directory: reused when present and complete, else trained (once)."""
    target = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if is_complete(target):
        return target
    logger.info("no demo model at %s; training one (%d steps)", target, DemoConfig().steps)
    train_demo_model(target)
    return target
