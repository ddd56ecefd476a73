"""What the suite needs from outside the repository, and what its absence means.

Locally, a missing piece (../shared/data, Chromium, an extra) skips the tests that need it, and
``pytest -rs`` prints why. Under CI (``CI=true``) the same absence fails those tests: CI is set up
to have all of it, so a skip there would hide a broken set-up behind a green run.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import pytest

IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
SHARED_DATA = Path(
    os.environ.get("XMODAL_SHARED_DATA")
    or Path(__file__).resolve().parents[1].parent / "shared" / "data"
)
CAPTIONED = SHARED_DATA / "captioned"
ODD_IMAGES = SHARED_DATA / "odd-images"


def unavailable(reason: str) -> NoReturn:
    """Skip with ``reason``; under CI, fail with it instead."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: CI must run this test, so it fails instead of skipping)")
    pytest.skip(reason, allow_module_level=True)


def shared(path: Path) -> Path:
    """``path`` inside the shared data, or unavailable() with where it was looked for."""
    if not path.exists():
        unavailable(f"shared test data not found at {path} (set XMODAL_SHARED_DATA)")
    return path


def import_or_unavailable(module: str, reason: str) -> ModuleType:
    """pytest.importorskip that fails under CI, where the dev extras are installed."""
    try:
        return importlib.import_module(module)
    except ImportError:
        unavailable(reason)
