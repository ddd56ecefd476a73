"""The timed workloads of ``encode_throughput.py``: (a) a naive transformers loop, (b) the model
alone on prepared pixels, (c) ``index_paths`` into a fresh collection; and the round-robin timer.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from _common import Measurement, timed

from xmodal.encoders import Encoder
from xmodal.index import Collection
from xmodal.pipelines.indexing import IndexConfig, index_paths
from xmodal.pipelines.workers import default_workers, make_pool

BATCH = 32


def log(message: str) -> None:
    print(message, flush=True)


def _batches(items: list, size: int = BATCH) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


# ----------------------------------------------------------------------------- workloads
@dataclass
class Workload:
    """One timed thing: ``warmup`` runs once (first batch), ``run`` is timed every round."""

    measurement: Measurement
    run: Callable[[], object]
    warmup: Callable[[], object]


def naive_workload(model_dir: Path, paths: list[str]) -> tuple[Workload, dict[str, float]]:
    """The loop a typical user script runs; split timers show decode+processor vs model."""
    from PIL import Image
    from transformers import AutoProcessor, CLIPModel

    model = CLIPModel.from_pretrained(model_dir, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    split = {"preprocess_s": 0.0, "model_s": 0.0}

    def run(chunk: list[str]) -> None:
        with torch.inference_mode():
            for batch in _batches(chunk):
                t0 = time.perf_counter()
                images = [Image.open(p).convert("RGB") for p in batch]
                inputs = processor(images=images, return_tensors="pt")
                t1 = time.perf_counter()
                model.get_image_features(**inputs)
                split["preprocess_s"] += t1 - t0
                split["model_s"] += time.perf_counter() - t1

    notes = {"image_processor": type(processor.image_processor).__name__}
    measurement = Measurement("a_naive_transformers_fp32", len(paths), notes=notes)
    return Workload(measurement, lambda: run(paths), lambda: run(paths[:BATCH])), split


def model_workload(encoder: Encoder, pixels: np.ndarray, name: str) -> Workload:
    def run(batch: np.ndarray) -> None:
        for start in range(0, len(batch), BATCH):
            encoder.encode_pixels(batch[start : start + BATCH])

    notes = {"precision": encoder.spec.precision}
    measurement = Measurement(name, len(pixels), notes=notes)
    return Workload(measurement, lambda: run(pixels), lambda: run(pixels[:BATCH]))


def index_once(
    encoder: Encoder, paths: list[str], workers: int | None, root: Path
) -> dict[str, float]:
    """Create a fresh collection, index ``paths`` into it, close it; the run's stage seconds."""
    target = root / "collection"
    shutil.rmtree(target, ignore_errors=True)
    config = IndexConfig(batch_size=BATCH, workers=workers, progress=False)
    with Collection.create(target, encoder.spec.to_dict(), overwrite=True) as collection:
        report = index_paths(encoder, collection, paths, config)
    if report.indexed != len(paths):
        raise RuntimeError(f"indexed {report.indexed} of {len(paths)}: {report.failures}")
    return report.stages | {"index_paths_s": report.seconds}


def index_workload(encoder: Encoder, paths: list[str], workers: int | None, root: Path) -> Workload:
    label = "default" if workers is None else str(workers)
    notes = {
        "workers": default_workers(encoder.spec.device) if workers is None else workers,
        "precision": encoder.spec.precision,
    }
    measurement = Measurement(f"c_xmodal_index_workers_{label}", len(paths), notes=notes)
    stages: list[dict[str, float]] = []
    notes["stages_per_run"] = stages
    return Workload(
        measurement,
        lambda: stages.append(index_once(encoder, paths, workers, root)),
        lambda: index_once(encoder, paths[:BATCH], workers, root),
    )


def pool_startup_s(encoder: Encoder, path: str) -> float:
    """Seconds from creating a 2-process decode pool to its first prepared image."""
    started = time.perf_counter()
    pool = make_pool(encoder.preparer, 2)
    try:
        pool.submit(path).result()
        return time.perf_counter() - started
    finally:
        pool.shutdown()


def prepare_pixels(encoder: Encoder, paths: list[str]) -> tuple[np.ndarray, float]:
    """Pixels for (b), and the seconds the xmodal preparer took inline in this process."""
    started = time.perf_counter()
    pixels = np.stack([encoder.preparer(p) for p in paths])
    return pixels, time.perf_counter() - started


def run_rounds(workloads: list[Workload], repeats: int, extra: Callable[[], float]) -> list:
    """Warm every workload up, then time them round-robin so load swings hit all alike."""
    for w in workloads:
        w.warmup()
    extras, load = [], []
    for round_no in range(repeats):
        load.append(round(os.getloadavg()[0], 2))
        for w in workloads:
            w.measurement.seconds.append(timed(w.run))
            m = w.measurement
            log(f"  round {round_no + 1} {m.name}: {m.images / m.seconds[-1]:.2f} img/s")
        extras.append(extra())
    return [extras, load]
