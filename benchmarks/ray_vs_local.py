"""Local Ray vs the plain single-machine path, indexing the same real photos into a collection.

Model: the random-init CLIP with openai/clip-vit-base-patch32's shapes (``build_clip_b32``), fp32.
Data: the photos of ``../shared/data/captioned/images``. One local Ray cluster is started once
(its start-up is timed separately) with ``--ray-cpus`` logical CPUs; every Ray run starts its
own actor pool, so actor start-up and model load are inside each Ray row, while the plain rows
reuse an encoder loaded beforehand, as ``xmodal index`` does once per command. Rows are timed
round-robin, ``--repeats`` rounds, after one untimed warm-up round; medians are reported.

  plain           ``index_paths`` (default decoding workers for the device)
  ray 1x1         ``index_with_ray``: 1 embedding actor with 1 CPU (torch uses 1 thread)
  ray 1x2         ``index_with_ray``: 1 embedding actor with 2 CPUs (torch uses 2 threads)

Run: ``python benchmarks/ray_vs_local.py [--images N] [--repeats R] [--ray-cpus C]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from _common import (  # noqa: E402
    Measurement,
    build_clip_b32,
    cache_dir,
    captioned_images,
    machine_info,
    timed,
    write_json,
)

from xmodal.encoders import Encoder, load_encoder  # noqa: E402
from xmodal.index import Collection  # noqa: E402
from xmodal.pipelines.distributed import RayIndexConfig, index_with_ray  # noqa: E402
from xmodal.pipelines.indexing import IndexConfig, index_paths  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
BATCH = 32


def log(message: str) -> None:
    print(message, flush=True)


def _plain(encoder: Encoder, folder: Path, target: Path) -> None:
    with Collection.create(target, encoder.spec.to_dict(), overwrite=True) as collection:
        index_paths(
            encoder, collection, [str(folder)], IndexConfig(batch_size=BATCH, progress=False)
        )


def _ray(encoder: Encoder, folder: Path, target: Path, cpus: float) -> None:
    config = RayIndexConfig(batch_size=BATCH, shard_size=128, cpus_per_actor=cpus, precision="fp32")
    with Collection.create(target, encoder.spec.to_dict(), overwrite=True) as collection:
        index_with_ray(encoder, collection, [str(folder)], config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=None, help="photos to index (default all)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ray-cpus", type=int, default=3, help="logical CPUs of the local cluster")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import ray

    photos = captioned_images(args.images)
    work = Path(tempfile.mkdtemp(prefix="xmodal-ray-bench-"))
    folder = work / "photos"
    folder.mkdir()
    for photo in photos:  # a private copy: links out of a folder are skipped by the walker
        shutil.copy(photo, folder / Path(photo).name)
    model = build_clip_b32(cache_dir() / "clip-vit-b32-random")
    encoder = load_encoder(str(model), device="cpu", precision="fp32")
    started = time.perf_counter()
    ray.init(num_cpus=args.ray_cpus, include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - started
    log(f"{len(photos)} photos; local Ray cluster started in {ray_start:.1f} s")
    rows = {
        "plain": lambda t: _plain(encoder, folder, t),
        "ray 1x1": lambda t: _ray(encoder, folder, t, 1.0),
        "ray 1x2": lambda t: _ray(encoder, folder, t, 2.0),
    }
    measured = {name: Measurement(name, len(photos)) for name in rows}
    loads = []
    for round_ in range(args.repeats + 1):
        loads.append(round(os.getloadavg()[0], 2))
        for name, run in rows.items():
            seconds = timed(lambda run=run, name=name: run(work / name.replace(" ", "-")))
            if round_:  # round 0 warms caches and Ray's worker pool
                measured[name].seconds.append(seconds)
            log(f"round {round_} {name}: {seconds:.1f} s")
    _check_same(work, len(photos))
    ray.shutdown()
    _write(measured, len(photos), ray_start, loads, args)
    shutil.rmtree(work, ignore_errors=True)


def _check_same(work: Path, n: int) -> None:
    """The Ray collections must hold the plain one's ids and (within fp16) vectors."""
    ids, vectors = Collection.open(work / "plain").raw_embeddings()
    assert len(ids) == n, f"the plain run indexed {len(ids)} of {n} photos"
    for name in ("ray-1x1", "ray-1x2"):
        got_ids, got = Collection.open(work / name).raw_embeddings()
        assert np.array_equal(ids, got_ids), name
        assert np.allclose(vectors.astype(np.float32), got, atol=2e-3), name


def _write(measured: dict[str, Measurement], n: int, ray_start: float, loads: list, args) -> None:
    plain = measured["plain"].median_s
    payload = {
        "benchmark": "ray_vs_local",
        "model": "random-init CLIP ViT-B/32 shapes, fp32",
        "images": n,
        "batch_size": BATCH,
        "repeats": args.repeats,
        "ray_cpus": args.ray_cpus,
        "ray_cluster_start_s": round(ray_start, 2),
        "load_average_per_round": loads,
        "machine": machine_info(),
        "rows": [m.to_dict() for m in measured.values()],
    }
    write_json(args.out / "ray_vs_local.json", payload)
    info = payload["machine"]
    lines = [
        f"# ray vs local — {info['cpu_model']}, {info['cpu_cores']} cores",
        "",
        f"Random-init CLIP ViT-B/32 shapes, fp32, batch {BATCH}, {n} real photos; median of "
        f"{args.repeats} runs after a warm-up round. {info['date']}.",
        "",
        "| workload | median s | images/s | vs plain |",
        "|---|---:|---:|---:|",
    ]
    for m in measured.values():
        lines.append(
            f"| {m.name} | {m.median_s:.2f} | {m.images_per_s:.2f} | {plain / m.median_s:.2f}x |"
        )
    lines += [
        "",
        f"Local cluster start (`ray.init`, {args.ray_cpus} logical CPUs): {ray_start:.1f} s, "
        "not in the rows. Each Ray row includes its actor pool start and model load; the plain "
        f"rows reuse a loaded encoder. 1-min load average at each round's start: {loads}.",
    ]
    (args.out / "ray_vs_local.md").write_text("\n".join(lines) + "\n")
    log("\n".join(lines))


if __name__ == "__main__":
    main()
