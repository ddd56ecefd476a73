"""``xmodal import`` at scale: time, peak RSS, and the auto index's recall and speed.

Data: ``n`` rows of 512-d from the seeded CLIP-like mixture of ``_mixture.py``, stored as
float16 in clip-retrieval's inference layout (10 parts: ``img_emb/img_emb_N.npy`` +
``metadata/metadata_N.parquet`` with ``image_path`` and ``caption``). The model named is a tiny
random CLIP with a 512-d projection: the import only reads its spec (dim, revision).

Measured: the wall time of the ``xmodal import`` subprocess and its peak RSS (``ru_maxrss``
from ``os.wait4`` on that one child, started by a small launcher process so that neither this
process's memory nor what a fork inherits from it is counted); then, in this
process, recall@10 of the collection's auto index against exact inner-product search over the
same float32 rows, on 1000 held-out queries from the mixture, and the single-thread QPS of
both (FAISS at one thread; exact = ``IndexFlatIP`` over blocks of rows; medians of 3 timed
runs, see ``search_quality``). Then ``xmodal compact --full`` (time and
peak RSS the same way) merges the import's tiered segments into one, and the search is measured
again: a bulk load followed by a full merge, as one would before serving a read-mostly
collection. ``--index KEY`` passes an index key to the import (default: the collection's auto).

Run: ``python benchmarks/import_scale.py [--sizes 100000] [--commit-every 200000]
[--index ivf-pq] [--no-compact] [--out DIR]``; writes ``DIR/import_scale.{json,md}``
(default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from _common import machine_info, write_json
from _mixture import Mixture

DIM = 512
PARTS = 10
QUERIES = 1000
K = 10
GiB = 1 << 30
EXACT_BLOCK = 262_144
REPEATS = 3  # each search is timed this many times; QPS from the median


def make_parts(n: int, root: Path) -> None:
    """10 parts of float16 rows (normalised, as clip-retrieval writes them) plus metadata."""
    (root / "img_emb").mkdir(parents=True)
    (root / "metadata").mkdir()
    mixture = Mixture(DIM, seed=0)
    bounds = np.linspace(0, n, PARTS + 1).astype(int)
    for part, (start, end) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        rows = mixture.sample(end - start, seed=100 + part)
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        np.save(root / "img_emb" / f"img_emb_{part}.npy", rows.astype(np.float16))
        names = [f"/data/images/{i:08d}.jpg" for i in range(start, end)]
        table = pa.table(
            {"image_path": names, "caption": [f"image {i}" for i in range(start, end)]}
        )
        pq.write_table(table, root / "metadata" / f"metadata_{part}.parquet")


def run_import(
    parts: Path, collection: Path, model: Path, commit_every: int, index: str | None
) -> dict:
    """Time the import subprocess and read its own peak RSS."""
    command = [sys.executable, "-m", "xmodal.cli", "import", str(parts), "-c", str(collection),
               "--model", str(model), "--device", "cpu", "--commit-every", str(commit_every),
               "--json", *(["--index", index] if index else [])]  # fmt: skip
    out, seconds, rss = _child(command)
    import json

    report = json.loads(out)
    return {
        "seconds": round(seconds, 2),
        "rows_per_s": round(report["rows_added"] / seconds, 1),
        "peak_rss_gib": rss,
        "report": {k: v for k, v in report.items() if k not in ("failures", "refused")},
    }


def run_compact(collection: Path) -> dict:
    """Time ``xmodal compact --full`` and read its own peak RSS."""
    command = [sys.executable, "-m", "xmodal.cli", "compact", "-c", str(collection), "--full"]
    _, seconds, rss = _child(command)
    return {"compact_seconds": round(seconds, 2), "compact_peak_rss_gib": rss}


# Runs argv[2:] and writes its ru_maxrss (KiB) to argv[1]: a small process between this one and
# the measured command, because Linux starts a child's ru_maxrss at the RSS of the process that
# forked it (the forked copy is its memory until exec), which here holds gigabytes of rows.
_LAUNCHER = (
    "import os, subprocess, sys; child = subprocess.Popen(sys.argv[2:]); "
    "_, status, usage = os.wait4(child.pid, 0); "
    "open(sys.argv[1], 'w').write(str(usage.ru_maxrss)); "
    "sys.exit(os.waitstatus_to_exitcode(status))"
)


def _child(command: list[str]) -> tuple[bytes, float, float]:
    """Run ``command``: its stdout, wall seconds and own peak RSS in GiB."""
    with tempfile.NamedTemporaryFile("r", suffix=".maxrss") as report:
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-c", _LAUNCHER, report.name, *command], stdout=subprocess.PIPE
        )
        seconds = time.perf_counter() - started
        if result.returncode != 0:
            raise SystemExit(f"failed: {command}")
        kib = int(Path(report.name).read_text())
    return result.stdout, seconds, round(kib * 1024 / GiB, 3)


def search_quality(collection: Path) -> dict:
    """Recall@10 of the collection's index vs exact search, and both single-thread QPS.

    Exact search is FAISS ``IndexFlatIP`` over the stored rows (float16 -> float32, normalised)
    taken EXACT_BLOCK rows at a time, the per-block top-10s merged: the same scan as one flat
    index over every row, in bounded memory (10M rows would need 20 GB at once). Only the
    searches are timed, not the conversion; every timing is the median of REPEATS.
    """
    import faiss

    from xmodal.index import Collection, exact

    faiss.omp_set_num_threads(1)
    queries = Mixture(DIM, seed=0).sample(QUERIES, seed=7)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    with Collection.open(collection) as col:
        info = col.info()
        segments = info.segments
        times = []
        for _ in range(REPEATS):
            started = time.perf_counter()
            hits = col.search(queries, k=K)
            times.append(time.perf_counter() - started)
        index_qps = QUERIES / statistics.median(times)
        found = np.array([[h.id for h in row] + [-1] * (K - len(row)) for row in hits])
        ids, raw = col.raw_embeddings()
        best, exact_seconds = exact.empty(QUERIES, 0), 0.0
        for start in range(0, len(ids), EXACT_BLOCK):
            block = np.asarray(raw[start : start + EXACT_BLOCK], np.float32)
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            flat = faiss.IndexFlatIP(DIM)
            flat.add(block)
            times = []
            for _ in range(REPEATS):
                began = time.perf_counter()
                scores, rows = flat.search(queries, K)
                times.append(time.perf_counter() - began)
            exact_seconds += statistics.median(times)
            best = exact.merge([best, (scores, np.asarray(ids)[start + rows])], QUERIES, K)
            del flat, block
    truth = best[1]
    exact_qps = QUERIES / exact_seconds
    recall = float(
        np.mean([len(np.intersect1d(f, t)) / K for f, t in zip(found, truth, strict=True)])
    )
    return {
        "segments": segments,
        "index_factory": info.index_factory,
        "recall_at_10": round(recall, 4),
        "index_qps_1thread": round(index_qps, 1),
        "exact_qps_1thread": round(exact_qps, 1),
        "qps_ratio": round(index_qps / exact_qps, 2),
    }


def measure(n: int, args: argparse.Namespace, work: Path, model: Path) -> dict:
    parts, collection = work / f"parts-{n}", work / f"col-{n}"
    started = time.perf_counter()
    make_parts(n, parts)
    print(f"n={n}: parts written in {time.perf_counter() - started:.1f} s", flush=True)
    row = {"rows": n, "dim": DIM, "parts": PARTS, "commit_every": args.commit_every,
           "index_key": args.index or "auto"}  # fmt: skip
    row |= run_import(parts, collection, model, args.commit_every, args.index)
    print(f"n={n}: import {row['seconds']} s, peak RSS {row['peak_rss_gib']} GiB", flush=True)
    row["after_import"] = search_quality(collection)
    print(f"n={n}: {row}", flush=True)
    if args.compact:
        row |= run_compact(collection)
        row["after_compact"] = search_quality(collection)
        print(f"n={n}: {row}", flush=True)
    return row


def markdown(payload: dict) -> str:
    lines = [
        "# xmodal import at scale",
        "",
        f"Machine: {payload['machine'].get('cpu_model')}, "
        f"{payload['machine'].get('cpu_cores')} cores. "
        "Rows: 512-d float16, clip-retrieval layout, 10 parts.",
        "",
        "| rows | key | commit every | step | s | peak RSS GiB | segments | largest index | "
        "recall@10 | index QPS | exact QPS | ratio |",
        "|---:|---|---:|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in payload["results"]:
        steps = [("import", r["seconds"], r["peak_rss_gib"], r["after_import"])]
        if "after_compact" in r:
            steps.append(("compact --full", r["compact_seconds"], r["compact_peak_rss_gib"],
                          r["after_compact"]))  # fmt: skip
        for step, seconds, rss, q in steps:
            lines.append(
                f"| {r['rows']} | {r.get('index_key', 'auto')} | {r['commit_every']} | {step} | "
                f"{seconds} | {rss} | {q['segments']} | {q['index_factory']} | "
                f"{q['recall_at_10']} | {q['index_qps_1thread']} | {q['exact_qps_1thread']} | "
                f"{q['qps_ratio']} |"
            )
    return "\n".join(lines) + "\n"


def _merged(path: Path, results: list[dict]) -> list[dict]:
    """Earlier results of other sizes or keys (each run measures some) plus these."""
    import json

    earlier = json.loads(path.read_text())["results"] if path.is_file() else []
    earlier = [row for row in earlier if "after_import" in row]  # rows of this format only
    key = lambda row: (row["rows"], row.get("index_key", "auto"))  # noqa: E731
    by_run = {key(row): row for row in earlier} | {key(row): row for row in results}
    return [by_run[k] for k in sorted(by_run)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    parser.add_argument("--commit-every", type=int, default=200_000)
    parser.add_argument("--index", help="index key for the import (default: auto)")
    parser.add_argument("--no-compact", dest="compact", action="store_false")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    from xmodal.demo.tiny import save_tiny_clip

    with tempfile.TemporaryDirectory(prefix="xmodal-import-") as temp:
        work = Path(temp)
        model = save_tiny_clip(work / "model-512", seed=0, projection_dim=DIM)
        results = [measure(n, args, work, model) for n in args.sizes]
    results = _merged(args.out / "import_scale.json", results)
    payload = {"benchmark": "import_scale", "machine": machine_info(), "results": results}
    write_json(args.out / "import_scale.json", payload)
    (args.out / "import_scale.md").write_text(markdown(payload))


if __name__ == "__main__":
    main()
