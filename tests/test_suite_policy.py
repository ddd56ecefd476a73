"""What the suite does without its outside pieces: skip locally with the reason, fail under CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PHOTOS_TEST = "tests/test_eval_datasets.py::test_shared_captioned_set_parses"
BROWSER_TEST = "tests/test_app_browser.py"


def pytest_run(target: str, ci: bool, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "CI"} | env
    if ci:
        environ["CI"] = "true"
    command = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", target]
    return subprocess.run(
        command, cwd=ROOT, env=environ, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("ci", [False, True], ids=["local", "ci"])
def test_missing_shared_data_skips_locally_and_fails_under_ci(tmp_path: Path, ci: bool) -> None:
    missing = tmp_path / "no-data"
    done = pytest_run(PHOTOS_TEST, ci, XMODAL_SHARED_DATA=str(missing))
    reason = f"shared test data not found at {missing}/captioned/captions.jsonl"
    assert reason in done.stdout, done.stdout
    if ci:
        assert done.returncode == 1 and "1 error" in done.stdout  # the fixture fails
        assert "CI must run this test" in done.stdout
    else:
        assert done.returncode == 0 and "1 skipped" in done.stdout


def test_a_missing_browser_fails_under_ci() -> None:
    bin_dir = str(Path(sys.executable).parent)  # the venv's tools, no chromium
    env = {"PATH": bin_dir, "XMODAL_CHROMIUM": "", "XMODAL_CHROMEDRIVER": ""}
    done = pytest_run(BROWSER_TEST, True, **env)
    assert done.returncode == 1, done.stdout
    assert "headless browser test needs chromium and chromedriver on PATH" in done.stdout
    assert "CI must run this test" in done.stdout
