"""Duplicates and outliers at scale: time and peak memory on synthetic CLIP-like rows.

Data: ``n`` rows of 512-d from the seeded mixture of ``_mixture.py`` (CLIP-like spectrum,
clusters, shared offset), of which 1 % are planted near copies of other rows (the row plus
Gaussian noise, cosine 0.96-0.99 to it), stored as float16 in a ``.npy`` file and memory-mapped,
as a collection stores its raw embeddings.

Each measurement runs in a fresh process over the memmap and times the index-level engine that
``xmodal duplicates`` / ``xmodal outliers`` run (``xmodal.index.neighbours`` with the plan
``plan_neighbours`` picks, plus the union-find / the scores); the catalog lookups of the few
group members are not included. Peak memory: ``ru_maxrss`` of that process (includes the
memmap pages it touched, ~1 KB a row) and the tracemalloc peak (numpy buffers; FAISS's own
allocations are not seen by tracemalloc).

Quality: recall of the planted pairs (both in one group) at threshold 0.95; for outliers, the
recall@10 of the clustered k-NN against exact brute force on 200 sampled rows.

Run: ``python benchmarks/curation_scale.py [--sizes 100000 300000] [--out benchmarks/results]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
from _common import machine_info, write_json
from _mixture import Mixture

DIM = 512
PLANTED = 0.01


def make_rows(n: int, path: Path) -> None:
    copies = int(n * PLANTED)
    base = Mixture(DIM, seed=0).sample(n - copies, seed=1)
    rng = np.random.default_rng(5)
    sources = rng.choice(n - copies, copies, replace=False)
    noise = rng.standard_normal((copies, DIM)).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    eps = rng.uniform(0.14, 0.29, (copies, 1)).astype(np.float32)  # cosine ~0.96-0.99
    near = base[sources] + eps * noise
    near /= np.linalg.norm(near, axis=1, keepdims=True)
    rows = np.concatenate([base, near]).astype(np.float16)
    np.save(path, rows)
    np.save(path.with_suffix(".planted.npy"), np.stack([sources, np.arange(n - copies, n)], 1))


def worker(task: str, path: Path) -> dict:
    from xmodal.index.components import UnionFind
    from xmodal.index.neighbours import gather, nearest_neighbours, pairs_at_least, plan_neighbours

    rows = np.load(path, mmap_mode="r")
    n = len(rows)
    positions = np.arange(n, dtype=np.int64)
    tracemalloc.start()
    started = time.perf_counter()
    if task == "duplicates":
        plan = plan_neighbours(n, probes=2)
        links = UnionFind(n)
        for a, b, _ in pairs_at_least(rows, positions, 0.95, plan):
            links.union(a, b)
        groups = links.components()
    else:
        plan = plan_neighbours(n, probes=4)
        cosines, found = nearest_neighbours(rows, positions, 10, plan)
        scores = 1.0 - cosines.mean(axis=1)
        top = np.argsort(-scores)[:20]
    seconds = time.perf_counter() - started
    traced_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    out = {
        "task": task,
        "n": n,
        "plan": {"clusters": plan.clusters, "probes": plan.probes},
        "seconds": round(seconds, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "tracemalloc_peak_mb": round(traced_peak / 2**20),
    }
    if task == "duplicates":
        planted = np.load(path.with_suffix(".planted.npy"))
        labels = links.labels()
        out["groups"] = len(groups)
        out["planted_pair_recall"] = round(
            float(np.mean(labels[planted[:, 0]] == labels[planted[:, 1]])), 4
        )
    else:
        sample = np.random.default_rng(9).choice(n, 200, replace=False)
        truth = gather(rows, sample) @ gather(rows, positions).T
        truth[np.arange(200), sample] = -np.inf
        exact = np.argsort(-truth, axis=1)[:, :10]
        out["knn_recall_at_10"] = round(
            float(np.mean([len(set(exact[i]) & set(found[s])) / 10 for i, s in enumerate(sample)])),
            4,
        )
        out["top_outlier_scores"] = [round(float(scores[i]), 4) for i in top[:5]]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument(
        "--tasks", nargs="+", choices=["duplicates", "outliers"], default=["duplicates", "outliers"]
    )
    parser.add_argument("--worker", choices=["duplicates", "outliers"])
    parser.add_argument("--file", type=Path)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.file)))
        return
    runs = []
    with tempfile.TemporaryDirectory(prefix="xmodal-scale-") as tmp:
        for n in args.sizes:
            path = Path(tmp) / f"rows{n}.npy"
            make_rows(n, path)
            for task in args.tasks:
                cmd = [sys.executable, __file__, "--worker", task, "--file", str(path)]
                done = subprocess.run(cmd, capture_output=True, text=True, check=True)
                runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(runs[-1], flush=True)
    result = {
        "benchmark": "curation_scale",
        "machine": machine_info(),
        "dim": DIM,
        "runs": runs,
        "command": "python benchmarks/curation_scale.py --sizes "
        + " ".join(map(str, args.sizes))
        + ("" if len(args.tasks) == 2 else " --tasks " + " ".join(args.tasks)),
    }
    write_json(args.out / "curation_scale.json", result)
    (args.out / "curation_scale.md").write_text(_markdown(result))


def _markdown(r: dict) -> str:
    m = r["machine"]
    lines = [
        "# Duplicates and outliers at scale (synthetic 512-d float16, 1 % planted copies)",
        "",
        f"Machine: {m['cpu_model']}, {m['cpu_cores']} cores (shared with other jobs). "
        f"Command: `{r['command']}`.",
        "",
        "| task | n | plan (lists x probes) | seconds | peak RSS MB | tracemalloc MB | quality |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in r["runs"]:
        quality = (
            f"planted-pair recall {run['planted_pair_recall']}"
            if run["task"] == "duplicates"
            else f"k-NN recall@10 {run['knn_recall_at_10']}"
        )
        plan = run["plan"]
        lines.append(
            f"| {run['task']} | {run['n']:,} | {plan['clusters']} x {plan['probes']} | "
            f"{run['seconds']} | {run['peak_rss_mb']} | {run['tracemalloc_peak_mb']} | {quality} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
