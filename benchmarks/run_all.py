"""Run every benchmark script, then write one markdown table of all results and the machine.

Each ``benchmarks/*.py`` script (not ``_*.py``, not this one) runs as its own subprocess, in name
order. With ``--quick`` a script gets ``--quick`` when its ``--help`` offers it, otherwise the
reduced arguments listed in ``QUICK_ARGS``; quick results go to a scratch folder by default so
they never overwrite the full-size results in ``benchmarks/results``. Scripts that take
``--out`` write there. Afterwards every ``*.json`` in the results folder is summarised into
``README.md`` beside it: one table (benchmark, case, result, machine it ran on) plus the machine
this suite ran on (CPU model, cores, RAM, GPU, torch / FAISS / transformers versions).

Run: ``python benchmarks/run_all.py [--quick] [--only NAME ...] [--skip NAME ...]
[--collect-only] [--out DIR] [--timeout S]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import cache_dir, machine_info, write_json  # noqa: E402

QUICK_ARGS = {
    "encode_throughput.py": ["--images", "32", "--repeats", "1", "--bf16-images", "8"],
    "search.py": [
        "--n",
        "100000",
        "--queries",
        "200",
        "--probe-n",
        "20000",
        "--flat-queries",
        "50",
    ],
    "ray_vs_local.py": ["--images", "32", "--repeats", "1"],
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def scripts(only: list[str], skip: list[str]) -> list[Path]:
    found = sorted(p for p in HERE.glob("*.py") if not p.name.startswith("_"))
    found = [p for p in found if p.name != Path(__file__).name]
    if only:
        found = [p for p in found if p.stem in only or p.name in only]
    return [p for p in found if p.stem not in skip and p.name not in skip]


def arguments(script: Path, quick: bool, out: Path) -> list[str] | None:
    """The script's arguments: --quick (or QUICK_ARGS) when asked, --out when it takes one.

    None when the script cannot write to ``out``: it would overwrite the committed results.
    """
    helped = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=300
    )
    offered = helped.stdout
    args: list[str] = []
    if quick:
        args += ["--quick"] if "--quick" in offered else QUICK_ARGS.get(script.name, [])
    if "--out" in offered:
        args += ["--out", str(out)]
    elif out != (HERE / "results").resolve():
        log(f"skipping {script.name}: it has no --out, so it can only write benchmarks/results")
        return None
    return args


def run(script: Path, args: list[str], timeout: float, logs: Path) -> dict:
    log(f"running {script.name} {' '.join(args)}")
    started = time.perf_counter()
    with open(logs / f"{script.stem}.log", "w") as handle:
        try:
            code = subprocess.run(
                [sys.executable, str(script), *args],
                stdout=handle,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                env=os.environ | {"HF_HUB_OFFLINE": "1"},
            ).returncode
        except subprocess.TimeoutExpired:
            code = None
    seconds = round(time.perf_counter() - started, 1)
    state = "timed out" if code is None else f"exit {code}"
    log(f"{script.name}: {state} after {seconds} s (log: {logs / (script.stem + '.log')})")
    return {"script": script.name, "args": args, "returncode": code, "seconds": seconds}


def memory_gb() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1)
    except (ValueError, OSError, AttributeError):
        return None


def suite_machine() -> dict:
    import faiss

    info = machine_info()
    return info | {"ram_gb": memory_gb(), "faiss_version": faiss.__version__}


def collect(out: Path, machine: dict, runs: list[dict]) -> str:
    """The markdown page: machine, then one table over every results JSON in ``out``."""
    versions = machine["versions"]
    lines = [
        "# Benchmark results",
        "",
        "Written by `python benchmarks/run_all.py`; each row's own JSON (in this folder) holds "
        "the full detail, the exact command and the machine it ran on.",
        "",
        f"{'Suite machine' if runs else 'Collected on'}: {machine['cpu_model']}, "
        f"{machine['cpu_cores']} cores ({cpu_features(machine)}), "
        f"{machine['ram_gb']} GB RAM, GPU: {machine['gpu'] or 'none'}; torch "
        f"{versions.get('torch')}, FAISS {machine['faiss_version']}, transformers "
        f"{versions.get('transformers')}, Python {machine['python']} ({machine['date']}).",
    ]
    if runs:
        lines += ["", "| script | arguments | exit | seconds |", "|---|---|---:|---:|"]
        for r in runs:
            code = "timeout" if r["returncode"] is None else str(r["returncode"])
            lines.append(f"| {r['script']} | `{' '.join(r['args'])}` | {code} | {r['seconds']} |")
    lines += ["", "| benchmark | case | result | ran on |", "|---|---|---|---|"]
    for path in sorted(out.glob("*.json")):
        if path.name == "run_all.json":
            continue
        payload = json.loads(path.read_text())
        where = _where(payload.get("machine") or {})
        for case, result in summarise(path.stem, payload):
            lines.append(f"| {path.stem} | {case} | {result} | {where} |")
    return "\n".join(lines) + "\n"


def _where(machine: dict) -> str:
    """CPU, cores, the CPU features bf16 speed depends on, GPU, torch and date of one run."""
    cpu = machine.get("cpu_model", "?")
    gpu = f", {machine['gpu']}" if machine.get("gpu") else ""
    torch = (machine.get("versions") or {}).get("torch", "?")
    return (
        f"{cpu} ×{machine.get('cpu_cores', '?')} ({cpu_features(machine)}){gpu}, torch {torch}, "
        f"{str(machine.get('date', '?'))[:10]}"
    )


def cpu_features(machine: dict) -> str:
    """``AMX``, ``AVX-512 BF16`` or ``AVX2, no native bf16``: what decides ``auto`` precision."""
    flags = machine.get("cpu_flags") or {}
    if flags.get("amx_bf16"):
        return "AMX"
    if flags.get("avx512_bf16"):
        return "AVX-512 BF16"
    widest = "AVX-512" if flags.get("avx512f") else "AVX2" if flags.get("avx2") else "no AVX2"
    return f"{widest}, no native bf16"


# ----------------------------------------------------------------------------- summaries
def summarise(name: str, payload: dict) -> list[tuple[str, str]]:
    """(case, result) rows of one results file; unknown files get their headline numbers."""
    known = {"encode_throughput": _encode, "search": _search, "eval": _eval, "latency": _latency}
    try:
        rows = known[payload.get("benchmark", name)](payload)
    except (KeyError, TypeError, ValueError):
        rows = []
    return rows or _generic(payload)


def _encode(payload: dict) -> list[tuple[str, str]]:
    results = payload["results"]
    return [(case, f"{m['images_per_s']:.1f} images/s") for case, m in results.items()]


def _search(payload: dict) -> list[tuple[str, str]]:
    n = payload["config"]["n"]
    rows = []
    for ix in payload["indexes"]:
        if ix.get("recall_at_10") is None:
            continue
        rows.append(
            (
                f"{ix['label']} ({n:,} × {payload['config']['dim']})",
                f"recall@10 {ix['recall_at_10']:.3f}, {ix['single_thread_qps']:.0f} queries/s "
                f"(1 thread), {ix['memory_bytes'] / 1e9:.2f} GB",
            )
        )
    for pca in payload.get("pca", []):
        rows.append((f"exact after {pca['projection']}", f"recall@10 {pca['recall_at_10']:.3f}"))
    return rows


def _eval(payload: dict) -> list[tuple[str, str]]:
    rows = []
    for part in payload["parts"]:
        report = part["report"]
        for row in report["rows"]:
            t2i, i2t = row["recall"]["text_to_image"], row["recall"]["image_to_text"]
            vs = row.get("vs_exact")
            text = (
                f"T→I R@1/5/10 {_pct(t2i)}, I→T {_pct(i2t)}, {row['bytes_per_vector']:.4g} B/vector"
                + (f", vs exact@10 {vs['text_to_image']:.3f}" if vs else "")
            )
            rows.append((f"{part['name']}: {row['label']}", text))
    return rows


def _latency(payload: dict) -> list[tuple[str, str]]:
    parts, wall, busy = payload["parts"], payload["sequential"]["wall"], payload["concurrent"]
    size = f"{parts['count']:,} items, {parts['index_factory']}"
    return [
        (f"text query, one client ({size})",
         f"p50 {wall['p50_ms']:.0f} ms, p95 {wall['p95_ms']:.0f} ms"),
        (
            f"text queries, {busy['clients']} clients",
            f"{busy['queries_per_s']:.1f} queries/s, p50 {busy['p50_ms']:.0f} ms, "
            f"p95 {busy['p95_ms']:.0f} ms",
        ),
        ("parts: text encoding / collection search", f"p50 {parts['encode_text_p50_ms']:.0f} ms / "
         f"{parts['collection_search_p50_ms']:.1f} ms"),
    ]  # fmt: skip


def _pct(recall: dict) -> str:
    return "/".join(f"{100 * value:.1f}" for value in recall.values())


def _generic(payload: dict, limit: int = 16) -> list[tuple[str, str]]:
    """Numbers up to three levels down, and named rows of a "rows" list; no machine/config."""
    rows: list[tuple[str, str]] = []
    for item in payload.get("rows") or []:
        if isinstance(item, dict) and (item.get("name") or item.get("label")):
            numbers = [(k, v) for k, v in item.items() if _number(v) and k in _HEADLINES]
            if numbers:
                text = ", ".join(f"{k} {v:g}" for k, v in numbers)
                rows.append((str(item.get("name") or item.get("label")), text))
    rows += _leaves(payload, "", 3)
    return rows[:limit]


_HEADLINES = {
    "images_per_s",
    "queries_per_s",
    "recall_at_10",
    "p50_ms",
    "p95_ms",
    "median_s",
    "accuracy",
    "chance",
    "bytes_per_file",
}
_SKIPPED = {"machine", "config", "command", "benchmark", "rows"}


def _leaves(value: object, prefix: str, depth: int) -> list[tuple[str, str]]:
    if _number(value):
        return [(prefix, f"{value:g}")]
    if not isinstance(value, dict) or depth == 0:
        return []
    found = []
    for key, inner in value.items():
        if not prefix and key in _SKIPPED:
            continue
        found += _leaves(inner, f"{prefix}.{key}" if prefix else str(key), depth - 1)
    return found


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small settings (minutes, not hours)")
    p.add_argument("--only", nargs="*", default=[], metavar="NAME", help="run just these")
    p.add_argument("--skip", nargs="*", default=[], metavar="NAME", help="do not run these")
    p.add_argument("--collect-only", action="store_true", help="only rebuild README.md")
    p.add_argument("--out", type=Path, help="results folder (default benchmarks/results; "
                   "with --quick a scratch folder)")  # fmt: skip
    p.add_argument("--timeout", type=float, default=4 * 3600, help="per script, seconds")
    args = p.parse_args(argv)
    default = cache_dir() / "quick-results" if args.quick else HERE / "results"
    out = (args.out or default).resolve()
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    runs = []
    if not args.collect_only:
        logs.mkdir(exist_ok=True)
        for script in scripts(args.only, args.skip):
            script_args = arguments(script, args.quick, out)
            if script_args is not None:
                runs.append(run(script, script_args, args.timeout, logs))
    machine = suite_machine()
    if runs:
        write_json(out / "run_all.json", {"machine": machine, "runs": runs})
    (out / "README.md").write_text(collect(out, machine, runs))
    log(f"wrote {out / 'README.md'}")
    failed = [r["script"] for r in runs if r["returncode"] != 0]
    if failed:
        log(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
