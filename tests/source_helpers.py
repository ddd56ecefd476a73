"""Helpers for the source tests: tiny images, tar shards, tables, and memory tracing."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from xmodal.encoders.preprocess import PixelPipeline, Preparer
from xmodal.pipelines.sources import Item, Skipped, iter_inputs

PREPARER = Preparer(PixelPipeline(3, 8, None, (8, 8), (0.5,) * 3, (0.5,) * 3))


def png_bytes(seed: int = 0, size: tuple[int, int] = (12, 10)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def relative(found: list[Item | Skipped], root: Path) -> list[tuple[str, str]]:
    """(kind, path relative to root) of each input: kind is 'item' or the skip reason."""
    real = str(root.resolve())
    return [
        ("item" if isinstance(x, Item) else x.reason, os.path.relpath(x.uri, real)) for x in found
    ]


def make_shard(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as shard:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            shard.addfile(info, io.BytesIO(data))
    return path


def write_table(path: Path, rows: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    elif path.suffix == ".csv":
        pcsv.write_csv(pa.Table.from_pylist(rows), path)
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def traced_peaks(sources: list) -> tuple[int, int, int]:
    """Inputs counted, and the peak traced memory of streaming them vs listing them all."""
    import tracemalloc

    peaks = []
    for consume in (lambda found: sum(1 for _ in found), lambda found: len(list(found))):
        tracemalloc.start()
        try:
            count = consume(iter_inputs(sources))
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    return count, peaks[0], peaks[1]
