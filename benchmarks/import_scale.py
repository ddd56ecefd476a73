"""``xmodal import`` at scale: time, peak RSS, and the auto index's recall and speed.

Data: ``n`` rows of 512-d from the seeded CLIP-like mixture of ``_mixture.py``, stored as
float16 in clip-retrieval's inference layout (10 parts: ``img_emb/img_emb_N.npy`` +
``metadata/metadata_N.parquet`` with ``image_path`` and ``caption``). The model named is a tiny
random CLIP with a 512-d projection: the import only reads its spec (dim, revision).

Measured: the wall time of the ``xmodal import`` subprocess and its peak RSS (``ru_maxrss``
from ``os.wait4`` on that one child, so the parent's own memory is not counted); then, in this
process, recall@10 of the collection's auto index against exact inner-product search over the
same float32 rows, on 1000 held-out queries from the mixture, and the single-thread QPS of
both (FAISS at one thread; exact = ``IndexFlatIP``).

Run: ``python benchmarks/import_scale.py [--sizes 100000] [--commit-every 200000]``;
writes ``benchmarks/results/import_scale.{json,md}``.
"""

from __future__ import annotations

import argparse
import os
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


def run_import(parts: Path, collection: Path, model: Path, commit_every: int) -> dict:
    """Time the import subprocess and read its own peak RSS."""
    command = [sys.executable, "-m", "xmodal.cli", "import", str(parts), "-c", str(collection),
               "--model", str(model), "--device", "cpu", "--commit-every", str(commit_every),
               "--json"]  # fmt: skip
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE)
    out = child.stdout.read()  # type: ignore[union-attr]
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"import failed: {command}")
    import json

    report = json.loads(out)
    return {
        "seconds": round(seconds, 2),
        "rows_per_s": round(report["rows_added"] / seconds, 1),
        "peak_rss_gib": round(usage.ru_maxrss * 1024 / GiB, 3),  # ru_maxrss is in KiB on Linux
        "report": {k: v for k, v in report.items() if k not in ("failures", "refused")},
    }


def search_quality(collection: Path) -> dict:
    """Recall@10 of the collection's index vs exact search, and both single-thread QPS."""
    import faiss

    from xmodal.index import Collection

    faiss.omp_set_num_threads(1)
    queries = Mixture(DIM, seed=0).sample(QUERIES, seed=7)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    with Collection.open(collection) as col:
        info = col.info()
        started = time.perf_counter()
        hits = col.search(queries, k=K)
        index_qps = QUERIES / (time.perf_counter() - started)
        found = np.array([[h.id for h in row] + [-1] * (K - len(row)) for row in hits])
        ids, raw = col.raw_embeddings()
        flat = faiss.IndexIDMap(faiss.IndexFlatIP(DIM))
        for start in range(0, len(ids), 65536):  # float32 in blocks: the raw rows are float16
            block = np.asarray(raw[start : start + 65536], np.float32)
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            flat.add_with_ids(block, np.asarray(ids[start : start + 65536]))
    started = time.perf_counter()
    _, truth = flat.search(queries, K)
    exact_qps = QUERIES / (time.perf_counter() - started)
    recall = float(
        np.mean([len(np.intersect1d(f, t)) / K for f, t in zip(found, truth, strict=True)])
    )
    return {
        "index_factory": info.index_factory,
        "recall_at_10": round(recall, 4),
        "index_qps_1thread": round(index_qps, 1),
        "exact_qps_1thread": round(exact_qps, 1),
        "qps_ratio": round(index_qps / exact_qps, 2),
    }


def measure(n: int, commit_every: int, work: Path, model: Path) -> dict:
    parts, collection = work / f"parts-{n}", work / f"col-{n}"
    started = time.perf_counter()
    make_parts(n, parts)
    print(f"n={n}: parts written in {time.perf_counter() - started:.1f} s", flush=True)
    row = {"rows": n, "dim": DIM, "parts": PARTS, "commit_every": commit_every}
    row |= run_import(parts, collection, model, commit_every)
    print(f"n={n}: import {row['seconds']} s, peak RSS {row['peak_rss_gib']} GiB", flush=True)
    row |= search_quality(collection)
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
        "| rows | commit every | import s | rows/s | peak RSS GiB | index | recall@10 | "
        "index QPS | exact QPS | ratio |",
        "|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in payload["results"]:
        lines.append(
            f"| {r['rows']} | {r['commit_every']} | {r['seconds']} | {r['rows_per_s']} | "
            f"{r['peak_rss_gib']} | {r['index_factory']} | {r['recall_at_10']} | "
            f"{r['index_qps_1thread']} | {r['exact_qps_1thread']} | {r['qps_ratio']} |"
        )
    return "\n".join(lines) + "\n"


def _merged(path: Path, results: list[dict]) -> list[dict]:
    """Earlier results of other sizes (each run measures some sizes) plus these, by size."""
    import json

    earlier = json.loads(path.read_text())["results"] if path.is_file() else []
    by_size = {row["rows"]: row for row in earlier} | {row["rows"]: row for row in results}
    return [by_size[n] for n in sorted(by_size)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    parser.add_argument("--commit-every", type=int, default=200_000)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    from xmodal.demo.tiny import save_tiny_clip

    with tempfile.TemporaryDirectory(prefix="xmodal-import-") as temp:
        work = Path(temp)
        model = save_tiny_clip(work / "model-512", seed=0, projection_dim=DIM)
        results = [measure(n, args.commit_every, work, model) for n in args.sizes]
    results = _merged(args.out / "import_scale.json", results)
    payload = {"benchmark": "import_scale", "machine": machine_info(), "results": results}
    write_json(args.out / "import_scale.json", payload)
    (args.out / "import_scale.md").write_text(markdown(payload))


if __name__ == "__main__":
    main()
