"""A running ``xmodal serve`` follows its collection: new commits show up, removals disappear.

The server is a real child process with ``--refresh-seconds 0.5``; ``xmodal index`` and
``xmodal remove`` write to the same collection while it runs. Every wait polls the API with a
bounded deadline.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from app_helpers import ServeProcess, index_folder, photo_folder

from xmodal.index import Collection


def xmodal(*args: str) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "xmodal.cli", *args], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30) -> float:
    """Poll ``condition`` until it holds; the seconds it took. Fails after ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if condition():
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {timeout} s")


def found_names(http: httpx.Client) -> set[str]:
    """File names of every item a search returns (k is above the collection's size)."""
    body = {"text": "a photo", "k": 20}
    response = http.post("/api/search", json=body)
    assert response.status_code == 200, response.text
    return {Path(row["path"]).name for row in response.json()["results"]}


def test_serve_sees_new_and_removed_items_without_a_restart(
    tiny_clip_dir, captioned_photos, tmp_path
):
    collection = index_folder(
        tiny_clip_dir, photo_folder(captioned_photos[:2], tmp_path / "a"), tmp_path / "c.xmodal"
    )
    server = ServeProcess(collection, tmp_path / "cache", "--refresh-seconds", "0.5")
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            before = http.get("/api/info").json()
            assert before["count"] == 3
            later = photo_folder(captioned_photos[2:4], tmp_path / "b")
            new = captioned_photos[2]
            assert new.name not in found_names(http)
            xmodal(
                "index",
                "-c",
                str(collection),
                str(later),
                "--precision",
                "fp32",
                "--model",
                str(tiny_clip_dir),
                "--follow-links",
                "--workers",
                "0",
            )

            committed = Collection.open(collection)
            assert committed.generation > before["generation"]

            def caught_up() -> bool:
                return http.get("/api/info").json()["generation"] == committed.generation

            took = wait_for(caught_up, "the new generation in /api/info")
            assert took < 10
            grown_to = http.get("/api/info").json()["count"]
            assert grown_to == committed.count > before["count"]
            committed.close()
            assert new.name in found_names(http)

            xmodal("remove", "-c", str(collection), str(later))
            wait_for(lambda: new.name not in found_names(http), "the removal")
            assert http.get("/api/info").json()["count"] == grown_to - 3
    finally:
        server.close()
