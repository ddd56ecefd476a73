"""The driver's Python heap peak (tracemalloc) of whole ``index_with_ray`` runs at several sizes.

Data: generated 24x24 PNGs; model: the tiny random CLIP of the tests (``save_tiny_clip``), fp32;
a local Ray cluster of 2 CPUs; 32-input shards, commits and batches. The first size is a warm-up
(it pays Ray Data's lazy imports). Checksumming reads files in 4 MiB blocks, a constant that
would hide the rest, so the block is pinned at 64 KiB here.

Run: ``python benchmarks/ray_driver_memory.py [--window-shards W] [SIZES ...]``
(the figures in docs/ray.md: ``40 200 800`` with ``--window-shards 4`` and ``1000``).
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[40, 200, 800])
    parser.add_argument("--window-shards", type=int, default=4)
    args = parser.parse_args()

    import ray

    import xmodal.index.durable as durable
    from xmodal.demo.tiny import save_tiny_clip
    from xmodal.encoders import load_encoder
    from xmodal.index import Collection
    from xmodal.pipelines.distributed import RayIndexConfig, index_with_ray

    durable.CHUNK = 64 * 1024
    tmp = Path(tempfile.mkdtemp())
    encoder = load_encoder(str(save_tiny_clip(tmp / "m", seed=0)), device="cpu", precision="fp32")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 2**20,
             log_to_driver=False)  # fmt: skip
    config = RayIndexConfig(shard_size=32, batch_size=32, commit_every=32,
                            window_shards=args.window_shards, precision="fp32")  # fmt: skip
    rng = np.random.default_rng(0)
    for n in args.sizes:
        folder = tmp / f"images-{n}"
        folder.mkdir()
        for i in range(n):
            pixels = rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:05d}.png")
        with Collection.create(tmp / f"c{n}", encoder.spec.to_dict()) as collection:
            gc.collect()
            tracemalloc.start()
            start = time.perf_counter()
            report, stats = index_with_ray(encoder, collection, [str(folder)], config)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        seconds = time.perf_counter() - start
        print(f"n={n} window_shards={args.window_shards} indexed={report.indexed} "
              f"shards={stats.shards} peak={peak} B {seconds:.0f} s")  # fmt: skip
    ray.shutdown()


if __name__ == "__main__":
    main()
