"""Search at scale: exact Flat vs the auto-chosen index vs IVF-Flat, and PCA recall, in one run.

Data (seeded, generated in chunks, never written to disk): ``--n`` base rows and ``--queries``
held-out query rows of dim ``--dim``, float32, L2-normalised, drawn from one Gaussian mixture that
mimics CLIP embeddings:

- a power-law spectrum ``lambda_i = (i + 1) ** -ALPHA`` (``ALPHA`` = 1: participation ratio
  about 28 at 512-d, in the range reported for CLIP's intrinsic dimension);
- ``CLUSTERS`` centres ``mu_c = z * sqrt(lambda)`` (z standard normal), with log-normal cluster
  weights (sigma ``WEIGHT_SIGMA``) so cluster sizes are uneven;
- one shared offset of norm ``OFFSET_NORM`` added to every centre: CLIP's "cone" (unrelated
  embeddings still have cosine around 0.4-0.5);
- a row is ``mu_c + SPREAD * z' * sqrt(lambda)``, rotated by one seeded random orthogonal matrix
  (so the spectrum is not axis-aligned), then L2-normalised;
- queries come from the same mixture (same centres, rotation) with an independent stream, so none
  is a base row.

Ground truth: exact inner-product top-k by numpy matmul in blocks (multi-threaded BLAS).

Indexes, each through ``xmodal.index.faiss_index.new_index`` + ``fill`` (IndexIDMap2, inner
product), built with FAISS threads = all cores:

- ``Flat`` (exact);
- the auto choice ``choose_index(n, dim, default_memory_budget())``: its build is first timed on a
  ``--probe-n`` subset and extrapolated to n (HNSW: ``t * (n/p) * ln(n)/ln(p)``; IVF: linear); if
  the extrapolation exceeds ``--max-build-s`` it is not built at n and only the extrapolation is
  reported;
- the IVF-Flat choice ``choose_index(n, dim, budget, kind="ivf-flat")``, always, also probed.

ANN indexes are tuned with ``tune_search`` (target recall@10 0.95, its own perturbed-row sample),
then measured on the held-out queries. Queries/s is single-thread (``faiss.omp_set_num_threads(1)``)
and single-query: a loop of ``index.search(q[i:i+1], k)``; for Flat the loop stops after
``--flat-queries`` queries or ``FLAT_TIME_CAP_S`` seconds. Memory is the size of the serialised
index (``faiss.write_index`` to a temp file).

PCA (``xmodal.index.projection``): fit on a 100k sample, project base and queries, exact search in
the projected space, recall@10 against the full-dimension ground truth.

Run: ``python benchmarks/search.py [--n 1000000] [--dim 512] [--queries 1000] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from _common import machine_info, write_json  # noqa: E402
from _mixture import Mixture, data_stats, recipe  # noqa: E402
from _search_indexes import (  # noqa: E402
    CORES,
    FLAT_TIME_CAP_S,
    TARGET_RECALL,
    K,
    log,
    measure_index,
    measure_pca,
    peak_rss_gb,
    probe_build,
)

from xmodal.index.choice import choose_index, default_memory_budget  # noqa: E402
from xmodal.index.tuning import exact_top_k  # noqa: E402

TARGET_SPEEDUP = 20.0


# ----------------------------------------------------------------------------- report
def verdict(rows: list[dict], flat_qps: float) -> None:
    for row in rows:
        if "single_thread_qps" in row:
            row["speedup_vs_flat"] = round(row["single_thread_qps"] / flat_qps, 2)
            row["meets_target"] = bool(
                row["recall_at_10"] >= TARGET_RECALL
                and row["speedup_vs_flat"] >= TARGET_SPEEDUP
                and row["within_budget"]
            )


def markdown(payload: dict) -> str:
    cfg, m, data = payload["config"], payload["machine"], payload["data_stats"]
    lines = [
        f"# search — {m['cpu_model']}, {m['cpu_cores']} cores, {m['date']}",
        "",
        f"{cfg['n']:,} x {cfg['dim']} float32 CLIP-like mixture (module docstring), "
        f"{cfg['queries']} held-out queries; budget {cfg['budget_bytes'] / 1e9:.1f} GB. "
        f"Top-1 cosine {data['mean_top1_cosine']}, top-10 {data['mean_top10_cosine']}, random "
        f"pair {data['mean_random_pair_cosine']}, participation ratio "
        f"{data['participation_ratio']}.",
        "",
        "Build: train + add, FAISS threads = all cores. QPS: single thread, one query per call.",
        "",
        "| index | factory | build s | memory MB | recall@10 | 1-thread QPS | vs Flat | params |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in payload["indexes"]:
        if "single_thread_qps" not in row:
            lines.append(
                f"| {row['label']} | {row['factory']} | not built (~"
                f"{row['extrapolated_build_s_at_n']:.0f} extrapolated) | – | – | – | – | |"
            )
            continue
        params = row.get("tuning", {}).get("params", {})
        lines.append(
            f"| {row['label']} | {row['factory']} | {row['build_s']:.1f} | "
            f"{row['memory_bytes'] / 1e6:.0f} | {row['recall_at_10']:.4f} | "
            f"{row['single_thread_qps']:.1f} | {row.get('speedup_vs_flat', 1.0):.1f}x | "
            f"{params or ''} |"
        )
    lines += ["", "Build-time probes (same factory strings as at full n):", ""]
    for name, probe in payload["build_probes"].items():
        lines.append(
            f"- {name} {probe['factory']}: {probe['build_s']:.1f} s at {probe['probe_n']:,} rows "
            f"-> ~{probe['extrapolated_build_s_at_n']:.0f} s at {cfg['n']:,} "
            f"({probe['extrapolation']})"
        )
    lines += ["", "| PCA | explained variance | recall@10 (exact, vs full-dim) | vector MB |"]
    lines.append("|---|---:|---:|---:|")
    for row in payload["pca"]:
        if "skipped" in row:
            lines.append(f"| skipped: {row['skipped']} | | | |")
            continue
        lines.append(
            f"| {row['projection']} | {row['explained_variance_ratio']:.3f} | "
            f"{row['recall_at_10']:.4f} | {row['vector_bytes'] / 1e6:.0f} |"
        )
    target = payload["target"]
    lines += [
        "",
        f"Target (auto index: recall@10 >= {TARGET_RECALL} at >= {TARGET_SPEEDUP:.0f}x Flat QPS, "
        f"within budget): **{'met' if target['met'] else 'not met'}** — {target['note']}",
        "",
        f"Total {payload['total_benchmark_s']:.0f} s; peak RSS {payload['peak_rss_gb']:.1f} GB.",
        "",
    ]
    return "\n".join(lines)


def target_summary(rows: list[dict]) -> dict:
    auto = next(r for r in rows if r["label"] == "auto")
    if "meets_target" in auto:
        met = auto["meets_target"]
        note = (
            f"{auto['factory']}: recall {auto['recall_at_10']}, {auto['speedup_vs_flat']}x, "
            f"{auto['memory_bytes'] / 1e9:.2f} GB"
        )
    else:
        met = False
        note = f"auto {auto['factory']} not built at full n (build too slow)"
    for row in rows:
        if row["label"] == "ivf-flat" and "meets_target" in row:
            note += (
                f"; IVF-Flat {row['factory']}: recall {row['recall_at_10']}, "
                f"{row['speedup_vs_flat']}x, meets target: {row['meets_target']}"
            )
    return {"met": met, "note": note}


# ----------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1_000_000, help="base rows (default 1,000,000)")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--queries", type=int, default=1000, help="held-out queries")
    p.add_argument("--flat-queries", type=int, default=200, help="Flat single-thread QPS loop")
    p.add_argument("--probe-n", type=int, default=100_000, help="rows for the build-time probe")
    p.add_argument("--max-build-s", type=float, default=720.0, help="skip slower full builds")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    args.budget = default_memory_budget()
    machine = machine_info()
    machine["faiss_threads_build"] = CORES
    log(f"{machine['cpu_model']}, {CORES} cores; n={args.n} dim={args.dim} q={args.queries}")
    mixture = Mixture(args.dim, seed=0)
    base, queries = mixture.sample(args.n, seed=1), mixture.sample(args.queries, seed=2)
    log(f"data generated ({time.perf_counter() - started:.0f} s); exact ground truth")
    t0 = time.perf_counter()
    truth = exact_top_k(base, np.arange(args.n, dtype=np.int64), queries, K)
    truth_s = time.perf_counter() - t0
    payload = {
        "benchmark": "search",
        "command": " ".join(["python", "benchmarks/search.py", *sys.argv[1:]]),
        "config": {
            "n": args.n,
            "dim": args.dim,
            "queries": args.queries,
            "k": K,
            "probe_n": args.probe_n,
            "max_build_s": args.max_build_s,
            "budget_bytes": args.budget,
            "target_recall": TARGET_RECALL,
            "target_speedup_vs_flat": TARGET_SPEEDUP,
            "data": recipe(),
            "ground_truth": "numpy matmul in blocks of 16384 rows (xmodal.index.tuning."
            f"exact_top_k), multi-threaded BLAS; {truth_s:.1f} s",
            "build_timing": f"new_index + fill (train + add), faiss threads = {CORES}",
            "qps_timing": "faiss threads = 1, one query per index.search call, after one "
            f"warm-up query; Flat stops after --flat-queries or {FLAT_TIME_CAP_S:.0f} s",
            "memory": "bytes of faiss.write_index output (IndexIDMap2 included)",
            "recall": "recall@10 of the held-out queries vs exact ground truth",
        },
        "machine": machine,
        "data_stats": data_stats(base, queries, truth),
        "indexes": [],
        "build_probes": {},
        "pca": [],
    }
    log(f"data stats: {payload['data_stats']}")

    def save() -> None:
        payload["total_benchmark_s"] = round(time.perf_counter() - started, 1)
        payload["peak_rss_gb"] = round(peak_rss_gb(), 2)
        write_json(args.out / "search.json", payload)

    rows = payload["indexes"]
    rows.append(
        measure_index(
            "flat", choose_index(args.n, args.dim, kind="flat"), base, queries, truth, args
        )
    )
    flat_qps = rows[0]["single_thread_qps"]
    save()
    auto = choose_index(args.n, args.dim, args.budget)
    ivf = choose_index(args.n, args.dim, args.budget, kind="ivf-flat")
    probes = payload["build_probes"]
    probes["auto"] = probe_build(auto, base, min(args.probe_n, args.n))
    if ivf.factory != auto.factory:
        probes["ivf-flat"] = probe_build(ivf, base, min(args.probe_n, args.n))
    save()
    payload["pca"] = measure_pca(base, queries, truth)
    save()
    plan = [("auto", auto)] + ([("ivf-flat", ivf)] if ivf.factory != auto.factory else [])
    for label, choice in sorted(plan, key=lambda p: probes[p[0]]["extrapolated_build_s_at_n"]):
        estimate = probes[label]["extrapolated_build_s_at_n"]
        if estimate > args.max_build_s:
            log(f"{label}: {choice.factory} not built at n (~{estimate:.0f} s > max-build-s)")
            rows.append(
                {
                    "label": label,
                    "factory": choice.factory,
                    "kind": choice.kind,
                    "reason": choice.reason,
                    "not_built": "extrapolated build too slow",
                    "extrapolated_build_s_at_n": estimate,
                }
            )
        else:
            rows.append(measure_index(label, choice, base, queries, truth, args))
        verdict(rows[1:], flat_qps)
        save()
    payload["target"] = target_summary(rows)
    save()
    args.out.mkdir(parents=True, exist_ok=True)
    text = markdown(payload)
    (args.out / "search.md").write_text(text)
    log("\n" + text)
    log(f"total {payload['total_benchmark_s']} s; wrote {args.out}/search.{{json,md}}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
