"""benchmarks/run_all.py: the combined results table, built from results files alone."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def run_all():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location("run_all", BENCHMARKS / "run_all.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCHMARKS))


# imports torch for the machine facts: ~15 s on a busy 2-core machine
def test_collect_writes_one_table_with_every_results_file(run_all, tmp_path: Path) -> None:
    machine = {
        "cpu_model": "Test CPU",
        "cpu_cores": 3,
        "cpu_flags": {"avx2": True, "avx512f": True, "avx512_bf16": True, "amx_bf16": False},
        "versions": {"torch": "2.9.0+cpu"},
        "date": "2026-01-02T00:00:00",
    }
    row = {
        "label": "pca:16",
        "bytes_per_vector": 64.0,
        "recall": {
            "text_to_image": {"R@1": 0.5, "R@5": 0.75, "R@10": 1.0},
            "image_to_text": {"R@1": 0.25, "R@5": 0.5, "R@10": 0.625},
        },
        "vs_exact": {"text_to_image": 0.9, "image_to_text": 0.8},
    }
    evaluation = {
        "benchmark": "eval",
        "machine": machine,
        "parts": [{"name": "demo", "report": {"rows": [row]}}],
    }
    (tmp_path / "eval.json").write_text(json.dumps(evaluation))
    other = {"benchmark": "latency", "machine": machine, "p50_ms": 12.5, "stages": {"encode": 3}}
    (tmp_path / "latency.json").write_text(json.dumps(other))
    assert run_all.main(["--collect-only", "--out", str(tmp_path)]) == 0
    page = (tmp_path / "README.md").read_text()
    assert "Collected on: " in page and " cores (" in page and "FAISS " in page
    assert (
        "| eval | demo: pca:16 | T→I R@1/5/10 50.0/75.0/100.0, I→T 25.0/50.0/62.5, "
        "64 B/vector, vs exact@10 0.900 | Test CPU ×3 (AVX-512 BF16), torch 2.9.0+cpu, 2026-01-02 |"
    ) in page
    assert "| latency | p50_ms | 12.5 |" in page and "| latency | stages.encode | 3 |" in page


def test_scripts_found_are_the_benchmarks_not_helpers(run_all) -> None:
    names = [p.name for p in run_all.scripts([], [])]
    assert "eval.py" in names and "search.py" in names
    assert not any(n.startswith("_") or n == "run_all.py" for n in names)
    assert [p.name for p in run_all.scripts([], ["search", "eval.py"])] == [
        n for n in names if n not in ("search.py", "eval.py")
    ]
    assert [p.name for p in run_all.scripts(["eval"], [])] == ["eval.py"]
