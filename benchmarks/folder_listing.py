"""Memory a folder walk holds per file: one folder of N empty files, measured with tracemalloc.

A folder walk lists one folder at a time (sorted, so every walk yields the same order), so the
largest folder's listing is what sits in memory. Two rows, each the peak of Python allocations
(tracemalloc) while the listing is built and consumed, divided by N:

  direntry_list  ``sorted(os.scandir(folder))``: a ``DirEntry`` per file, how the walk listed a
                 folder before it kept names only (for comparison)
  walk_folder    ``xmodal.pipelines.sources.folders.walk_folder`` consumed item by item, as the
                 pipeline does (each Item is dropped before the next: the listing dominates)

The files are empty and named like camera files (``IMG_0000123.jpg``); memory grows with the
name length. Timing-free: the figures do not depend on the machine's load.

Run: ``python benchmarks/folder_listing.py [--files N] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import tracemalloc
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine_info, write_json  # noqa: E402

from xmodal.pipelines.sources import SourcePolicy  # noqa: E402
from xmodal.pipelines.sources.folders import walk_folder  # noqa: E402


def make_folder(root: Path, files: int) -> Path:
    folder = root / "photos"
    folder.mkdir()
    for i in range(files):
        (folder / f"IMG_{i:07d}.jpg").touch()
    return folder


def peak_bytes(work: Callable[[], object]) -> int:
    """Peak Python allocations (bytes) above what was allocated before ``work`` ran."""
    gc.collect()
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        work()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - base


def direntry_list(folder: Path) -> int:
    with os.scandir(folder) as scan:
        entries = sorted(scan, key=lambda entry: entry.name)
    return len(entries)


def walk(folder: Path) -> int:
    count = 0
    for _ in walk_folder(str(folder), SourcePolicy()):
        count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--files", type=int, default=100_000, help="files in the folder (100000)")
    p.add_argument("--quick", action="store_true", help="10,000 files")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = p.parse_args(argv)
    files = 10_000 if args.quick else args.files
    rows = []
    with tempfile.TemporaryDirectory(prefix="xmodal-listing-") as tmp:
        folder = make_folder(Path(tmp), files)
        walk(folder)  # warm the directory cache and imports before measuring
        for name, work in (("direntry_list", direntry_list), ("walk_folder", walk)):
            peak = peak_bytes(lambda work=work: work(folder))
            rows.append(
                {
                    "name": name,
                    "files": files,
                    "peak_bytes": peak,
                    "bytes_per_file": round(peak / files, 1),
                    "gb_per_million_files": round(peak / files * 1e6 / 1e9, 3),
                }
            )
    payload = {
        "benchmark": "folder_listing",
        "command": " ".join(["python", "benchmarks/folder_listing.py", *sys.argv[1:]]),
        "config": {"files": files, "names": "IMG_0000000.jpg .. (15 characters), empty files"},
        "machine": machine_info(),
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "folder_listing.json", payload)
    for row in rows:
        print(f"{row['name']}: {row['bytes_per_file']} bytes/file ({row['files']} files)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
