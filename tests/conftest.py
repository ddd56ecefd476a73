"""Shared fixtures: tiny models built in code, the shared photo data, the demo model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from shared_helpers import CAPTIONED, shared

# Tests never touch the network: no hub calls, no telemetry.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture(scope="session")
def captioned_photos() -> list[Path]:
    """The real photos of ../shared/data/captioned, in a stable order."""
    images = shared(CAPTIONED / "images")
    return sorted(p for p in images.iterdir() if p.is_file())


@pytest.fixture(scope="session")
def captions() -> dict[str, list[str]]:
    path = shared(CAPTIONED / "captions.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {row["file"]: row["captions"] for row in rows}


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from xmodal.demo.tiny import save_tiny_clip

    return save_tiny_clip(tmp_path_factory.mktemp("tiny-clip"), seed=0)


@pytest.fixture(scope="session")
def tiny_siglip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from xmodal.demo.tiny import save_tiny_siglip

    return save_tiny_siglip(tmp_path_factory.mktemp("tiny-siglip"), seed=0)


@pytest.fixture(scope="session")
def demo_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's trained model; reuses the user's demo cache when it is already built."""
    from xmodal.demo.train import ensure_demo_model

    return ensure_demo_model(os.environ.get("XMODAL_TEST_DEMO_MODEL") or None)


@pytest.fixture(scope="module")
def one_faiss_thread():
    """FAISS's OpenMP threads stall each other on small jobs when the cores are shared."""
    import faiss

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(threads)
