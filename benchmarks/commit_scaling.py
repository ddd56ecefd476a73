"""Commit time vs collection size: random unit 512-d rows added and committed in 2048-row chunks.

Each commit's wall time is split into the flush (new segment, tombstones, catalog, manifest) and
the merges the tiered policy ran in it (``xmodal.index.merging``), timed by wrapping the merge
step. Stops at ``--rows`` or once ``--budget`` seconds have run, whichever comes first, and says
which. Writes benchmarks/results/commit_scaling.json and .md.

    PYTHONPATH=$PWD python benchmarks/commit_scaling.py --rows 1000000 --budget 600
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, write_json  # noqa: E402

from xmodal.index import Collection, Record, committing  # noqa: E402

DIM, CHUNK = 512, 2048
RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--budget", type=float, default=600.0, help="seconds of runtime at most")
    args = parser.parse_args()
    merge_seconds: list[float] = []
    original = committing.merge_planned

    def timed_merges(*a, **k):
        started = time.perf_counter()
        try:
            return original(*a, **k)
        finally:
            merge_seconds[-1] += time.perf_counter() - started

    committing.merge_planned = timed_merges
    rng = np.random.default_rng(0)
    work = Path(tempfile.mkdtemp(prefix="commit-scaling-"))
    rows_done, points, started = 0, [], time.perf_counter()
    try:
        with Collection.create(
            work / "c", {"model_id": "bench", "dim": DIM}, index_key="flat"
        ) as col:
            while rows_done < args.rows and time.perf_counter() - started < args.budget:
                rows = rng.standard_normal((CHUNK, DIM)).astype(np.float32)
                rows /= np.linalg.norm(rows, axis=1, keepdims=True)
                col.add(rows, [Record(f"/b/{rows_done + i}.jpg") for i in range(CHUNK)])
                merge_seconds.append(0.0)
                t0 = time.perf_counter()
                col.commit()
                total = time.perf_counter() - t0
                rows_done += CHUNK
                points.append({"rows": rows_done, "commit_s": total, "merge_s": merge_seconds[-1],
                               "segments": col.info().segments})  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write(points, args, time.perf_counter() - started)


def _near(points: list[dict], rows: int) -> dict:
    return min(points, key=lambda p: abs(p["rows"] - rows))


def _flush(window: list[dict]) -> float:
    """Median commit time without merges over a window of commits."""
    return float(np.median([p["commit_s"] - p["merge_s"] for p in window]))


def write(points: list[dict], args: argparse.Namespace, wall: float) -> None:
    reached = points[-1]["rows"]
    first, last = points[:5], points[-5:]
    summary = {
        "rows_reached": reached,
        "target_rows": args.rows,
        "stopped_by": "rows" if reached >= args.rows else f"budget ({args.budget:.0f} s)",
        "flush_s_at_start_median5": _flush(first),
        "flush_s_at_end_median5": _flush(last),
        "flush_ratio_end_vs_start": _flush(last) / _flush(first),
        "commit_s_at_10k": _near(points, 10_240)["commit_s"],
        "commit_s_at_end": points[-1]["commit_s"],
        "merge_s_total": sum(p["merge_s"] for p in points),
        "merge_s_amortised_per_commit": sum(p["merge_s"] for p in points) / len(points),
        "commit_s_total": sum(p["commit_s"] for p in points),
        "wall_s": wall,
        "max_segments": max(p["segments"] for p in points),
    }
    payload = {"machine": machine_info(), "dim": DIM, "chunk": CHUNK, "summary": summary,
               "points": points}  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    write_json(RESULTS / "commit_scaling.json", payload)
    lines = [
        "# Commit scaling (flat index, 512-d, 2048-row commits)",
        "",
        f"Reached {reached} rows (stopped by {summary['stopped_by']}); target {args.rows}.",
        "",
        "| measure | value |",
        "|---|---|",
        *(
            f"| {key} | {value:.4g} |" if isinstance(value, float) else f"| {key} | {value} |"
            for key, value in summary.items()
        ),  # fmt: skip
        "",
        "| rows | commit s | of which merge s | segments |",
        "|---|---|---|---|",
        *(
            f"| {p['rows']} | {p['commit_s']:.3f} | {p['merge_s']:.3f} | {p['segments']} |"
            for p in points
            if p["rows"] % (CHUNK * 10) == 0 or p is points[-1]
        ),  # fmt: skip
    ]
    (RESULTS / "commit_scaling.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:16]))


if __name__ == "__main__":
    main()
