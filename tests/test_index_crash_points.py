"""Kill -9 at chosen points of a commit: inside the catalog transaction, after it but before the
manifest switch, and while merging segments. Each time the previous generation must open whole,
rows of the generation that never became current must stay invisible (and be undone by the next
writer), and the next commit must succeed.

The child replaces one step with a hook that writes a marker file and blocks; the parent waits
for the marker (an observable event, bounded by a timeout), then kills the child.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from xmodal.index import Collection, Record

DIM, BASE_COMMITS, PER_COMMIT = 16, 3, 30
CHILD = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from xmodal.index import Collection, Record, committing, versions
    from xmodal.index import manifest as mf
    from xmodal.index.ledger import LedgerEntry

    directory, point, marker = sys.argv[1:4]

    def block(*args, **kwargs):
        open(marker, "w").close()
        time.sleep(600)

    if point == "transaction":  # the commit's catalog transaction is open, not committed
        versions.purge = block
    elif point == "switch":  # the catalog rows are committed, the manifest not yet written
        mf.write_manifest = block
    else:  # a merge of segments is under way
        committing._merge = block
    col = Collection.open(directory, writable=True)
    rows = np.random.default_rng(5).standard_normal((20, {dim})).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    col.add(rows, [Record(f"/ghost/{{i}}.jpg", caption="ghost") for i in range(20)])
    col.remove([0, 1, 2])
    col.record([LedgerEntry("/ghost/0.jpg", "indexed", run=1)])
    if point == "merge":
        col.compact(full=True)
    else:
        col.commit()
    """
).format(dim=DIM)


def unit_rows(n: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("crash-points") / "c"
    with Collection.create(directory, {"model_id": "crash/points", "dim": DIM}) as col:
        for commit in range(BASE_COMMITS):
            paths = [f"/base/{commit}/{i}.jpg" for i in range(PER_COMMIT)]
            col.add(unit_rows(PER_COMMIT, commit), [Record(p, caption="base") for p in paths])
            col.commit()
    return directory


def _kill_at(directory: Path, point: str, tmp_path: Path) -> None:
    marker = tmp_path / "reached"
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(directory), point, str(marker)],
        stderr=subprocess.PIPE,
        env=env,
    )
    deadline = time.monotonic() + 120
    while not marker.exists():
        if child.poll() is not None or time.monotonic() > deadline:
            child.kill()
            raise AssertionError(f"the child never reached {point}: {child.stderr.read()}")
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stderr.close()
    assert child.returncode == -signal.SIGKILL


def _rows_after(directory: Path, generation: int) -> int:
    uri = f"{(directory / 'catalog.sqlite').resolve().as_uri()}?mode=ro"
    with sqlite3.connect(uri, uri=True) as conn:
        query = "SELECT count(*) FROM {t} WHERE added_gen > ? OR removed_gen > ?"
        return sum(
            conn.execute(query.format(t=t), (generation, generation)).fetchone()[0]
            for t in ("items", "ledger")
        )


def _check_previous(directory: Path, generation: int, count: int) -> None:
    with Collection.open(directory) as col:
        assert (col.generation, col.count) == (generation, count)
        assert col.ids_where("path^=/ghost/").tolist() == []
        assert col.keyword_search("ghost", k=5) == []
        assert col.ledger_for(["/ghost/0.jpg"]) == {}
        assert sorted(col.get_records([0, 1, 2])) == [0, 1, 2]
        ids, vectors = col.raw_embeddings()
        assert len(ids) == count and len(col.get_records(ids)) == count
        probe = vectors[:5].astype(np.float32)
        probe /= np.linalg.norm(probe, axis=1, keepdims=True)
        assert [row[0].id for row in col.search(probe, k=1)] == ids[:5].tolist()


@pytest.mark.parametrize("point", ["transaction", "switch", "merge"])
def test_kill_at_a_commit_step_keeps_the_previous_generation(base, tmp_path, point):
    directory = tmp_path / "c"
    shutil.copytree(base, directory)
    generation, count = BASE_COMMITS, BASE_COMMITS * PER_COMMIT
    _kill_at(directory, point, tmp_path)
    if point == "switch":  # the rows of the generation that never came are on disk...
        assert _rows_after(directory, generation) > 0
    _check_previous(directory, generation, count)  # ...and invisible to readers
    with Collection.open(directory, writable=True) as col:
        assert _rows_after(directory, generation) == 0  # the writer undid them
        paths = [f"/ghost/{i}.jpg" for i in range(20)]
        col.add(unit_rows(20, 9), [Record(p, caption="ghost") for p in paths])
        col.remove([0])
        assert col.compact(full=True) == generation + 1
    with Collection.open(directory) as col:
        assert col.count == count + 20 - 1 and col.info().segments == 1
        assert len(col.ids_where("path^=/ghost/")) == 20
        assert len(col.keyword_search("ghost", k=50)) == 20
        assert col.get_records([0]) == {}
