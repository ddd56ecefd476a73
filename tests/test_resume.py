"""An `xmodal index` killed at random points (SIGKILL, Ctrl-C) and re-run ends exactly where an
uninterrupted run ends: same ids, byte-equal raw embeddings, same catalog rows and ledger.

Each interrupted run is held at a chosen point (rows staged, or a chunk committed: ``Hold``) and
signalled once it got there, so the signal always lands mid-run and the exit status is exact.
Every run is fp32: byte equality is asked of vectors computed by different runs."""

from __future__ import annotations

import os
import random
import shutil
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from ledger_helpers import Hold, Zygote, snapshot

from xmodal.index import Collection

PHOTOS = 16
COMMIT_EVERY = 3  # 19 inputs: 7 chunks, each committed, so there is always work left to cut
EXIT_STATUS = {signal.SIGINT: 130, signal.SIGKILL: -signal.SIGKILL}


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
        "--precision", "fp32", "--workers", "0", "--batch-size", "2",
        "--commit-every", str(COMMIT_EVERY),
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


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def interrupt(zygote: Zygote, command: list[str], sig: int, hold: Hold) -> int:
    """Start a run held at ``hold``, send ``sig`` once it is there; returns the exit status."""
    pid = zygote.start(command, hold)
    deadline = time.monotonic() + 120
    while not hold.marker.exists():
        assert alive(pid), f"the run ended before reaching {hold}"
        assert time.monotonic() < deadline, f"the run did not reach {hold} in 120 s"
        time.sleep(0.005)
    os.kill(pid, sig)
    return zygote.wait()


def random_hold(rng: random.Random, folder: Path, n: int) -> Hold:
    """After the 1st or 2nd staged batch or committed chunk: three such cuts leave work over."""
    return Hold(rng.choice(["add", "commit"]), rng.randint(1, 2), folder / f"held-{n}")


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
    zygote: Zygote, command: list[str], directory: Path, holds: list[tuple[int, Hold]]
) -> None:
    """Cut a run at each (signal, hold) in turn, checking what it left; then run to the end."""
    for sig, hold in holds:
        assert interrupt(zygote, command, sig, hold) == EXIT_STATUS[sig]
        assert not finished(directory)
        check_committed_state(directory)
    zygote.start(command)
    assert zygote.wait() == 0


@pytest.mark.parametrize("seed", [1, 2])
def test_sigkill_at_random_points_then_resume_equals_a_clean_run(
    seed: int, corpus: Path, tiny_clip_dir: Path, clean: dict, zygote: Zygote, tmp_path: Path
) -> None:
    directory = tmp_path / "col"
    rng = random.Random(seed)
    holds = [(signal.SIGKILL, random_hold(rng, tmp_path, n)) for n in range(3)]
    run_with_interruptions(zygote, argv(corpus, directory, tiny_clip_dir), directory, holds)
    assert snapshot(directory) == clean


@pytest.mark.parametrize(
    "site, calls", [("commit", 1), ("add", 3)], ids=["after-a-commit", "rows-staged"]
)
def test_ctrl_c_keeps_committed_work_and_the_rerun_resumes(
    site: str,
    calls: int,
    corpus: Path,
    tiny_clip_dir: Path,
    clean: dict,
    zygote: Zygote,
    tmp_path: Path,
) -> None:
    directory = tmp_path / "col"
    command = argv(corpus, directory, tiny_clip_dir)
    assert interrupt(zygote, command, signal.SIGINT, Hold(site, calls, tmp_path / "held")) == 130
    with Collection.open(directory) as col:
        run = col.last_run()
        assert run is not None and not run.finished and col.count > 0
        assert run.counts["seen"] < clean["runs"][0][4]["seen"]
    check_committed_state(directory)
    run_with_interruptions(zygote, command, directory, [])  # run to the end
    state = snapshot(directory)
    assert state == clean
    assert [r[0] for r in state["runs"]] == [1]  # one run, resumed
