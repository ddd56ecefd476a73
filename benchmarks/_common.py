"""Helpers shared by the benchmark scripts: data location, machine facts, timing, models.

Benchmarks run offline: nothing here touches the network, and the photos are read in place from
``../shared/data`` (or ``$XMODAL_SHARED_DATA``), never copied into the repository.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile", "amx_int8")


def shared_data_dir() -> Path:
    """``$XMODAL_SHARED_DATA`` or the ``shared/data`` folder beside the repository."""
    env = os.environ.get("XMODAL_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def captioned_images(limit: int | None = None) -> list[str]:
    """The real photos of ``captioned/images``, sorted, at most ``limit`` of them."""
    folder = shared_data_dir() / "captioned" / "images"
    if not folder.is_dir():
        raise SystemExit(f"photos not found at {folder}; set XMODAL_SHARED_DATA")
    paths = sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
    return paths[:limit] if limit else paths


def cache_dir() -> Path:
    """Where built benchmark models are kept between runs (outside the repository)."""
    root = os.environ.get("XMODAL_BENCH_CACHE")
    return Path(root) if root else Path(tempfile.gettempdir()) / "xmodal-bench"


# ----------------------------------------------------------------------------- machine facts
def _cpuinfo() -> tuple[str, set[str]]:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return platform.processor() or "unknown", set()
    model, flags = "unknown", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model == "unknown":
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return model, flags


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict:
    """CPU, cores, bf16-relevant flags and library versions, for the results file."""
    import torch

    model, flags = _cpuinfo()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu_model": model,
        "cpu_cores": cores,
        "cpu_flags": {flag: flag in flags for flag in _BF16_FLAGS + ("avx2", "avx512f")},
        "native_bf16": any(flag in flags for flag in ("avx512_bf16", "amx_bf16")),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {
            name: _version(name)
            for name in ("torch", "transformers", "faiss-cpu", "pillow", "numpy", "xmodal")
        },
    }


# ----------------------------------------------------------------------------- timing
@dataclass
class Measurement:
    """Repeated timings of one workload over ``images`` images; medians are reported."""

    name: str
    images: int
    seconds: list[float] = field(default_factory=list)
    notes: dict = field(default_factory=dict)

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)

    @property
    def images_per_s(self) -> float:
        return self.images / self.median_s if self.seconds else 0.0

    def to_dict(self) -> dict:
        return {
            **asdict(self),
            "median_s": round(self.median_s, 4),
            "images_per_s": round(self.images_per_s, 2),
            "images_per_s_runs": [round(self.images / s, 2) for s in self.seconds],
        }


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")


# ----------------------------------------------------------------------------- models
def build_clip_b32(directory: Path, *, seed: int = 0) -> Path:
    """A random-init CLIP with openai/clip-vit-base-patch32's shapes, saved like a real one.

    Vision tower and projection are the CLIPConfig defaults (224 px, patch 32, 768 wide,
    12 layers, 512-d projection). The text tower keeps its default width but takes the tiny
    demo tokenizer (vocab 1024, 32 positions), which does not affect image encoding.
    """
    if (directory / "model.safetensors").is_file():
        return directory
    import torch
    from transformers import AutoTokenizer, CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from xmodal.demo.tiny import save_tiny_clip

    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=directory.name + ".", dir=directory.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(save_tiny_clip(staging / "tiny"))
        config = CLIPConfig()
        text = config.text_config
        text.vocab_size, text.max_position_embeddings = len(tokenizer), 32
        text.bos_token_id = tokenizer.bos_token_id
        text.eos_token_id = tokenizer.eos_token_id
        text.pad_token_id = tokenizer.pad_token_id
        torch.manual_seed(seed)
        model = CLIPModel(config).eval()
        out = staging / "model"
        model.save_pretrained(out, safe_serialization=True)
        processor = CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tokenizer)
        processor.save_pretrained(out)
        if directory.exists():  # another run finished first
            return directory
        out.rename(directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory
