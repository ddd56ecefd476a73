"""Crash safety: a writer killed with SIGKILL at random moments never leaves a broken collection."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

from xmodal.index import Collection

DIM = 16
KILLS = 50

# The child appends "<generation> <count>" (fsynced) *before* each commit: whatever generation the
# parent later finds must be one the child announced, with exactly the announced count.
CHILD = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    from xmodal.index import Collection, Record

    directory, side, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rng = np.random.default_rng(seed)
    col = Collection.open(directory, writable=True)
    print("ready", flush=True)
    step = 0
    while True:
        rows = rng.standard_normal((30, {dim})).astype(np.float32)
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        paths = [f"s{{seed}}/{{step}}/{{i}}" for i in range(30)]
        ids, _ = col.raw_embeddings()
        if len(ids) > 10:
            col.remove(rng.choice(ids, 5, replace=False))
            old = col.get_records(rng.choice(ids, 3, replace=False).tolist())
            paths[:len(old)] = [record.path for record in old.values()]  # replacements
        col.add(rows, [Record(p) for p in paths])
        with open(side, "a") as handle:
            handle.write(f"{{col.generation + 1}} {{col.count}}\\n")
            handle.flush()
            os.fsync(handle.fileno())
        col.commit()
        step += 1
    """
).format(dim=DIM)


def _expected(side: Path) -> dict[int, int]:
    expected = {}
    for line in side.read_text().splitlines():
        generation, count = map(int, line.split())
        expected[generation] = count
    return expected


def _check_consistent(directory: Path, expected: dict[int, int]) -> int:
    with Collection.open(directory) as col:
        assert col.count == expected[col.generation], (col.generation, col.count)
        ids, vectors = col.raw_embeddings()
        assert len(ids) == len(set(ids.tolist())) == vectors.shape[0] == col.count
        assert len(col.get_records(ids)) == col.count
        if col.count:
            probe = vectors[:3].astype(np.float32)
            probe /= np.linalg.norm(probe, axis=1, keepdims=True)
            top = [row[0].id for row in col.search(probe, k=1)]
            assert top == ids[:3].tolist()
        return col.generation


def test_sigkill_at_random_moments_leaves_a_committed_generation(tmp_path):
    directory, side = tmp_path / "c", tmp_path / "expected.txt"
    Collection.create(directory, {"model_id": "crash/test", "dim": DIM}).close()
    side.write_text("0 0\n")
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    chooser = random.Random(1234)
    generations = []
    for round_ in range(KILLS):
        child = subprocess.Popen(
            [sys.executable, str(script), str(directory), str(side), str(round_)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        line = child.stdout.readline()  # opened writable: the lock of the killed one is free
        assert line == b"ready\n", child.stderr.read().decode()
        time.sleep(chooser.uniform(0.0, 0.2))
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        child.stderr.close()
        assert child.returncode == -signal.SIGKILL, "the writer died before it was killed"
        generations.append(_check_consistent(directory, _expected(side)))
    assert generations[-1] > 5, generations  # the writers really committed along the way
