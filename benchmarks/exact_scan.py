"""Exact search speed: xmodal's exact path against a plain numpy scan and FAISS ``IndexFlatIP``.

153,600 random unit 512-d float32 rows, k = 10, one query at a time and batches of 64. Four ways,
interleaved round by round so a busy machine slows each alike:

- ``numpy``: ``rows @ q.T`` + ``argpartition`` + a sort of the k best (the floor);
- ``exact.top_k``: xmodal's exact function (what Flat segments and every exact fallback run);
- ``collection``: ``Collection.search`` on a Flat collection of the same rows (projection of the
  query, per-segment search and merge, catalog lookup of the hits);
- ``faiss``: ``IndexFlatIP.search``.

Median milliseconds per query over ``--repeats`` rounds; ratios against numpy. Writes
benchmarks/results/exact_scan.json and .md.

    PYTHONPATH=$PWD python benchmarks/exact_scan.py
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, write_json  # noqa: E402

from xmodal.index import Collection, Record, exact  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
K = 10


def numpy_scan(rows: np.ndarray, queries: np.ndarray) -> np.ndarray:
    scores = queries @ rows.T
    top = np.argpartition(-scores, K - 1, axis=1)[:, :K]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
    return np.take_along_axis(top, order, axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=153_600)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((args.rows, args.dim)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    ids = np.arange(args.rows, dtype=np.int64)
    queries = rng.standard_normal((args.repeats * args.batch, args.dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    flat = faiss.IndexFlatIP(args.dim)
    flat.add(rows)
    work = Path(tempfile.mkdtemp(prefix="exact-scan-"))
    load = os.getloadavg()
    try:
        col = Collection.create(
            work / "c", {"model_id": "bench", "dim": args.dim}, index_key="flat"
        )
        for start in range(0, args.rows, 65_536):
            part = rows[start : start + 65_536]
            col.add(part, [Record(f"/b/{start + i}.jpg") for i in range(len(part))])
        col.commit()
        col.close()
        col = Collection.open(work / "c")
        ways = {
            "numpy": lambda q: numpy_scan(rows, q),
            "exact.top_k": lambda q: exact.top_k(rows, ids, q, K),
            "collection": lambda q: col.search(q, K),
            "faiss": lambda q: flat.search(q, K),
        }
        results = {}
        for batch in (1, args.batch):
            times: dict[str, list[float]] = {name: [] for name in ways}
            for r in range(args.repeats):
                q = queries[r * batch : (r + 1) * batch]
                for name, search in ways.items():
                    started = time.perf_counter()
                    search(q)
                    times[name].append((time.perf_counter() - started) * 1000 / batch)
            medians = {name: statistics.median(t) for name, t in times.items()}
            results[f"batch_{batch}"] = {
                name: {"ms_per_query": round(ms, 4), "vs_numpy": round(ms / medians["numpy"], 3)}
                for name, ms in medians.items()
            }
        col.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    payload = {
        "benchmark": "exact_scan",
        "command": "python benchmarks/exact_scan.py",
        "machine": machine_info(),
        "load_average_at_start": [round(v, 2) for v in load],
        "config": {"rows": args.rows, "dim": args.dim, "k": K, "repeats": args.repeats},
        "results": results,
    }
    write_json(args.out / "exact_scan.json", payload)
    (args.out / "exact_scan.md").write_text(markdown(payload))
    print(markdown(payload))


def markdown(payload: dict) -> str:
    m, c = payload["machine"], payload["config"]
    lines = [
        "# Exact search speed",
        "",
        f"{c['rows']:,} x {c['dim']} float32 unit rows, k = {c['k']}, median of {c['repeats']} "
        f"interleaved rounds. Machine: {m['cpu_model']}, {m['cpu_cores']} cores, "
        f"AVX-512 BF16 {m['cpu_flags'].get('avx512_bf16')}; load average at start "
        f"{payload['load_average_at_start'][0]}. Command: `{payload['command']}`.",
        "",
        "| batch | way | ms per query | vs numpy |",
        "|---:|---|---:|---:|",
    ]
    for batch, ways in payload["results"].items():
        for name, row in ways.items():
            lines.append(
                f"| {batch.split('_')[1]} | {name} | {row['ms_per_query']} | {row['vs_numpy']} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
