"""An `xmodal index` killed at random points (SIGKILL, Ctrl-C) and re-run ends exactly where an
uninterrupted run ends: same ids, byte-equal raw embeddings, same catalog rows and ledger."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from ledger_helpers import Zygote, snapshot

from xmodal.index import Collection

PHOTOS = 16
COMMIT_EVERY = 3
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, captioned_photos: list[Path]) -> Path:
    """Photos in two folders, an empty file, a non-image, and a copy of the first photo."""
    folder = tmp_path_factory.mktemp("resume") / "photos"
    for i, photo in enumerate(captioned_photos[:PHOTOS]):
        target = folder / ("a" if i % 2 else "b") / photo.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(photo, target)
    (folder / "a" / "empty.jpg").write_bytes(b"")
    (folder / "b" / "notes.jpg").write_text("not an image")
    (folder / "c").mkdir()
    shutil.copyfile(captioned_photos[0], folder / "c" / "copy.jpg")
    return folder


def argv(corpus: Path, collection: Path, model: Path) -> list[str]:
    return [
        "index", str(corpus), "-c", str(collection), "--model", str(model), "--device", "cpu",
        "--workers", "0", "--batch-size", "2", "--commit-every", str(COMMIT_EVERY),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def zygote(tmp_path_factory: pytest.TempPathFactory, tiny_clip_dir: Path):
    forker = Zygote(tmp_path_factory.mktemp("zygote"), tiny_clip_dir)
    yield forker
    forker.close()


@pytest.fixture(scope="module")
def clean(
    corpus: Path, tiny_clip_dir: Path, zygote: Zygote, tmp_path_factory: pytest.TempPathFactory
) -> dict:
    """An uninterrupted run (forked like the interrupted ones: same threads, same model)."""
    directory = tmp_path_factory.mktemp("clean") / "col"
    zygote.start(argv(corpus, directory, tiny_clip_dir))
    assert zygote.wait() == 0
    state = snapshot(directory)
    statuses = Counter(entry.status for entry in state["ledger"])
    assert statuses == {"indexed": PHOTOS + 1, "failed": 2}  # the copy reused a stored vector
    assert state["runs"][0][4]["reused"] == 1
    return state


def generation(directory: Path) -> int:
    try:
        return json.loads((directory / "manifest.json").read_text())["generation"]
    except (FileNotFoundError, json.JSONDecodeError):
        return -1


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def interrupt(zygote: Zygote, command: list[str], directory: Path, sig: int, rng: random.Random):
    """Start a run, let it commit 1-3 more generations, wait a random moment, send ``sig``."""
    target = generation(directory) + rng.randint(1, 3)
    pid = zygote.start(command)
    deadline = time.monotonic() + 120
    while generation(directory) < target and alive(pid) and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(rng.uniform(0.0, 0.15))
    if alive(pid):
        os.kill(pid, sig)
    return zygote.wait()


def check_committed_state(directory: Path) -> None:
    """After any kill: the run's ledger counts are the ones committed with its row."""
    with Collection.open(directory) as col:
        run = col.last_run()
        if run is None:
            return
        counts = col.ledger_counts(run.id)
        assert counts == {k: run.counts[k] for k in counts}
        assert sum(counts.values()) == run.counts["seen"]
        indexed = {e.uri for e in col.ledger(status="indexed")}
        assert indexed == {r.path for r in col.get_records(col.raw_embeddings()[0]).values()}


def finished(directory: Path) -> bool:
    with Collection.open(directory) as col:
        run = col.last_run()
        return run is not None and run.finished


def run_with_interruptions(
    zygote: Zygote, command: list[str], directory: Path, signals: list[int], seed: int
) -> int:
    """Interrupt runs with ``signals`` in turn, then let one finish; returns how many were cut."""
    rng, interrupted = random.Random(seed), 0
    for sig in signals:
        code = interrupt(zygote, command, directory, sig, rng)
        assert code in (0, 130 if sig == signal.SIGINT else -signal.SIGKILL), code
        if finished(directory):
            break  # the signal came after the run's last commit: a re-run would be a new run
        interrupted += 1
        check_committed_state(directory)
    if not finished(directory):
        zygote.start(command)
        assert zygote.wait() == 0
    return interrupted


@pytest.mark.parametrize("seed", [1, 2])
def test_sigkill_at_random_points_then_resume_equals_a_clean_run(
    seed: int, corpus: Path, tiny_clip_dir: Path, clean: dict, zygote: Zygote, tmp_path: Path
) -> None:
    directory = tmp_path / "col"
    command = argv(corpus, directory, tiny_clip_dir)
    kills = run_with_interruptions(zygote, command, directory, [signal.SIGKILL] * 3, seed)
    assert kills >= 1
    assert snapshot(directory) == clean


def test_ctrl_c_keeps_committed_work_and_the_rerun_resumes(
    corpus: Path, tiny_clip_dir: Path, clean: dict, zygote: Zygote, tmp_path: Path
) -> None:
    directory = tmp_path / "col"
    command = argv(corpus, directory, tiny_clip_dir)
    rng = random.Random(7)
    assert interrupt(zygote, command, directory, signal.SIGINT, rng) == 130
    with Collection.open(directory) as col:
        run = col.last_run()
        assert run is not None and not run.finished and col.count > 0
        assert run.counts["seen"] < clean["runs"][0][4]["seen"]
    check_committed_state(directory)
    assert run_with_interruptions(zygote, command, directory, [], 8) == 0  # run to the end
    state = snapshot(directory)
    assert state == clean
    assert [r[0] for r in state["runs"]] == [1]  # one run, resumed
