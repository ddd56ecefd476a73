"""Image-encoding throughput: a naive transformers loop vs. the model alone vs. `xmodal index`.

Model: a random-init CLIP with openai/clip-vit-base-patch32's shapes (224 px, patch 32, 768 wide,
12 layers, 512-d projection), built once into a cache folder. Data: the real photos of
``../shared/data/captioned/images``. Every workload is warmed up on the first batch, then all are
timed round-robin, ``--repeats`` rounds, so a load swing on a shared machine hits every row
alike; medians are reported.

  (a) naive   PIL open + convert, ``processor(images=...)``, ``get_image_features``, fp32, batch 32
  (b) model   ``encoder.encode_pixels`` on pixels prepared beforehand (untimed), batch 32,
              in the precision ``auto`` chose, and in fp32 and bf16 explicitly
  (c) index   ``index_paths`` into a fresh collection: wall time of create + index (pool start,
              decode, encode, store, commit) + close, for the default workers and 0, 1, 2;
              plus index_paths' own per-stage seconds (walk, hash, decode wait, encode, write,
              commit), which show where the end-to-end time goes

Run: ``python benchmarks/encode_throughput.py [--images N] [--repeats R] [--precision P]``.
The model costs the same for every photo, so ``--bf16-images`` (emulated bf16 is several times
slower than fp32 on CPUs without AVX-512 BF16/AMX) times fewer images for the bf16 model alone.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _common import (  # noqa: E402
    Measurement,
    build_clip_b32,
    cache_dir,
    captioned_images,
    machine_info,
    write_json,
)
from _encode_workloads import (  # noqa: E402
    BATCH,
    index_workload,
    log,
    model_workload,
    naive_workload,
    pool_startup_s,
    prepare_pixels,
    run_rounds,
)

from xmodal.encoders import load_encoder  # noqa: E402
from xmodal.pipelines.progress import STAGES  # noqa: E402
from xmodal.pipelines.workers import default_workers  # noqa: E402

MODEL_NAME = "clip-vit-b32-random"
TARGET_VS_NAIVE = 3.0
TARGET_VS_MODEL = 0.7


# ----------------------------------------------------------------------------- report
def ratios_and_targets(results: dict[str, Measurement]) -> dict:
    c = results["c_xmodal_index_workers_default"].images_per_s
    a = results["a_naive_transformers_fp32"].images_per_s
    b = results["b_model_auto"].images_per_s
    # Where auto chose fp32 (or bf16), the auto row is that precision's measurement.
    fp32 = results.get("b_model_fp32", results["b_model_auto"]).images_per_s
    bf16 = results.get("b_model_bf16", results["b_model_auto"]).images_per_s
    return {
        "c_over_a": round(c / a, 3),
        "c_over_b": round(c / b, 3),
        "bf16_over_fp32": round(bf16 / fp32, 3),
        "target_c_over_a": TARGET_VS_NAIVE,
        "target_c_over_b": TARGET_VS_MODEL,
        "met_c_over_a": c / a >= TARGET_VS_NAIVE,
        "met_c_over_b": c / b >= TARGET_VS_MODEL,
    }


def diagnosis(results: dict[str, Measurement], decode_s: float, n: int) -> dict:
    """Where (c)'s wall time goes, from measured pieces (model alone, inline decode)."""
    model_s = n / results["b_model_auto"].images_per_s
    out = {
        "images": n,
        "model_alone_s": round(model_s, 3),
        "decode_preprocess_inline_s": round(decode_s, 3),
        "decode_preprocess_inline_images_per_s": round(n / decode_s, 1),
        "naive_preprocess_share": results["a_naive_transformers_fp32"].notes["preprocess_share"],
    }
    for name, m in results.items():
        if name.startswith("c_"):
            label = name.removeprefix("c_xmodal_index_")
            out[f"{label}_wall_s"] = round(m.median_s, 3)
            out[f"{label}_model_share"] = round(model_s / m.median_s, 3)
            # With workers=0 decoding is inline: what is left is store + commit + bookkeeping.
            rest = m.median_s - model_s - (decode_s if m.notes["workers"] == 0 else 0.0)
            out[f"{label}_other_s"] = round(rest, 3)
    return out


def markdown(payload: dict) -> str:
    res, r, cfg = payload["results"], payload["ratios"], payload["config"]
    m = payload["machine"]
    rows = [
        ("(a) naive transformers loop, fp32", "a_naive_transformers_fp32"),
        (
            f"(b) encode_pixels, {cfg['precision_requested']} (= {cfg['auto_precision']})",
            "b_model_auto",
        ),
    ]
    rows += [(f"(b) encode_pixels, {p}", f"b_model_{p}") for p in ("fp32", "bf16")]
    rows = [(label, key) for label, key in rows if key in res]  # auto's precision: one row
    for name in res:
        if name.startswith("c_"):
            label = name.removeprefix("c_xmodal_index_workers_")
            if label == "default":
                label = f"default ({res[name]['notes']['workers']})"
            rows.append((f"(c) xmodal index, workers={label}", name))
    lines = [
        f"# encode throughput — {m['cpu_model']}, {m['cpu_cores']} cores, "
        f"torch threads {m['torch_threads']}, native bf16: {m['native_bf16']}",
        "",
        f"Random-init CLIP ViT-B/32 shapes, batch {BATCH}, real photos; median of "
        f"{cfg['repeats']} runs after a one-batch warm-up. {m['date']}.",
        "",
        "| workload | images | median s | images/s |",
        "|---|---:|---:|---:|",
    ]
    for label, key in rows:
        row = res[key]
        lines.append(
            f"| {label} | {row['images']} | {row['median_s']:.2f} | {row['images_per_s']:.2f} |"
        )
    ok = {True: "met", False: "**missed**"}
    lines += [
        "",
        f"- (c)/(a) = **{r['c_over_a']:.2f}x** (target >= {r['target_c_over_a']}x: "
        f"{ok[r['met_c_over_a']]})",
        f"- (c)/(b) = **{r['c_over_b']:.2f}x** (target >= {r['target_c_over_b']}x: "
        f"{ok[r['met_c_over_b']]})",
        f"- bf16/fp32 model-only = {r['bf16_over_fp32']:.2f}x",
        "",
        *stage_table(res),
        "(c) is wall time of Collection.create + index_paths (pool start-up, decode, encode, "
        "store, commit) + close; model load is excluded from every row. Rows were timed "
        "round-robin; 1-min load average at the start of each round: "
        f"{payload['diagnosis']['loadavg_1min_per_round']}.",
        "",
    ]
    return "\n".join(lines)


def median_stages(runs: list[dict[str, float]]) -> dict[str, float]:
    keys = [*STAGES, "index_paths_s"]
    return {k: round(statistics.median(r.get(k, 0.0) for r in runs), 3) for k in keys}


def stage_table(res: dict) -> list[str]:
    """Where each (c) row's time goes: index_paths' own per-stage seconds (median run)."""
    lines = [
        "Per-stage seconds inside index_paths (median over runs; decode_wait is the time the "
        "model waited for decoded pixels):",
        "",
        "| (c) workers | " + " | ".join(STAGES) + " | index_paths s |",
        "|---|" + "---:|" * (len(STAGES) + 1),
    ]
    for name, row in res.items():
        if name.startswith("c_"):
            med = median_stages(row["notes"]["stages_per_run"])
            cells = " | ".join(f"{med[k]:.2f}" for k in [*STAGES, "index_paths_s"])
            lines.append(f"| {row['notes']['workers']} | {cells} |")
    return [*lines, ""]


# ----------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=128, help="photos to use (default 128)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per workload (median)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--bf16-images", type=int, default=32, help="photos for the bf16 model row")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    started = time.perf_counter()
    paths = captioned_images(args.images)
    machine = machine_info()
    log(
        f"{machine['cpu_model']}: {machine['cpu_cores']} cores, torch threads "
        f"{torch.get_num_threads()}, native bf16 {machine['native_bf16']}; {len(paths)} photos"
    )
    model_dir = build_clip_b32(cache_dir() / MODEL_NAME)

    naive, split = naive_workload(model_dir, paths)
    encoder = load_encoder(str(model_dir), precision=args.precision)
    chosen = encoder.spec.precision
    pixels, decode_s = prepare_pixels(encoder, paths)
    workloads = [naive, model_workload(encoder, pixels, "b_model_auto")]
    for precision in ("fp32", "bf16"):
        n = len(paths) if precision == "fp32" else min(len(paths), args.bf16_images)
        if precision != chosen or n != len(paths):
            other = load_encoder(str(model_dir), precision=precision)
            workloads.append(model_workload(other, pixels[:n], f"b_model_{precision}"))
    with tempfile.TemporaryDirectory(prefix="xmodal-bench-") as tmp:
        for workers in (None, 0, 1, 2):
            if workers != default_workers(encoder.spec.device):  # the default row is that N
                workloads.append(index_workload(encoder, paths, workers, Path(tmp)))
        startups, load = run_rounds(
            workloads, args.repeats, lambda: pool_startup_s(encoder, paths[0])
        )

    results = {w.measurement.name: w.measurement for w in workloads}
    results["a_naive_transformers_fp32"].notes["preprocess_share"] = round(
        split["preprocess_s"] / (split["preprocess_s"] + split["model_s"]), 3
    )
    info = diagnosis(results, decode_s, len(paths))
    info["pool_startup_to_first_image_s"] = [round(s, 3) for s in startups]
    info["loadavg_1min_per_round"] = load
    payload = {
        "benchmark": "encode_throughput",
        "command": " ".join(["python", "benchmarks/encode_throughput.py", *sys.argv[1:]]),
        "config": {
            "images": len(paths),
            "bf16_images": min(len(paths), args.bf16_images),
            "repeats": args.repeats,
            "batch_size": BATCH,
            "precision_requested": args.precision,
            "auto_precision": chosen,
            "default_workers": default_workers(encoder.spec.device),
            "model": "random-init CLIPModel(CLIPConfig()) = ViT-B/32 shapes, 224 px, 512-d",
            "data": "shared/data/captioned/images (first N, sorted)",
            "schedule": "one-batch warm-up each, then rounds: every workload once per round",
            "c_timing": "Collection.create + index_paths + close: pool start, decode, "
            "encode, store, commit; model load excluded",
        },
        "machine": machine,
        "results": {k: v.to_dict() for k, v in results.items()},
        "ratios": ratios_and_targets(results),
        "diagnosis": info,
        "total_benchmark_s": round(time.perf_counter() - started, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "encode_throughput.json", payload)
    text = markdown(payload)
    (args.out / "encode_throughput.md").write_text(text)
    log("\n" + text)
    log(f"diagnosis: {info}")
    log(f"total {payload['total_benchmark_s']} s; wrote {args.out}/encode_throughput.{{json,md}}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
