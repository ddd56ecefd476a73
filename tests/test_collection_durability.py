"""A write the OS cuts short (file size limit) fails the commit and keeps the previous generation.

FAISS does not raise when closing a file fails: under ``RLIMIT_FSIZE`` it printed ``close error:
File too large`` while ``commit()`` published the truncated index and swept the good generation.
The limit applies to the whole process, so each scenario runs in a child that lowers its soft
limit before each attempt (SIGXFSZ ignored, so writes fail with EFBIG instead of killing it) and
raises it again afterwards; the parent then opens the collection and checks it.

The limit caps every file the process writes, so which write it cuts follows from the order a
commit writes in (``WRITE_ORDER``): the vector files smallest first, then the catalog's WAL (the
commit's rows, made durable just before the switch), then the manifest. The SQLite catalog must
raise on the cut write (it does: SQLITE_FULL) and keep the previous generation like the rest.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from xmodal.index import Collection, Record
from xmodal.index import manifest as mf

CHILD = textwrap.dedent(
    """
    import json, os, resource, signal, sys
    import numpy as np
    from xmodal.errors import XmodalError
    from xmodal.index import Collection, Record

    directory, phase, dim, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    limits = json.loads(sys.argv[5])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit gets EFBIG
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    rows = np.random.default_rng(7).standard_normal((n, dim)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    records = [Record(f"new/{i}") for i in range(n)]

    def limit(size):
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))

    for size in limits:
        outcome = {"limit": size}
        try:
            with Collection.open(directory, writable=True) as col:
                if phase == "add":
                    limit(size)
                col.add(rows, records)
                limit(size)
                outcome["committed"] = col.commit()
                wal = os.path.join(directory, "catalog.sqlite-wal")
                outcome["wal"] = os.path.getsize(wal) if os.path.exists(wal) else 0
        except XmodalError as exc:
            outcome["error"] = str(exc)
        except BaseException as exc:
            outcome["crash"] = f"{type(exc).__name__}: {exc}"
        finally:
            limit(resource.RLIM_INFINITY if hard == resource.RLIM_INFINITY else hard)
        outcome["files"] = sorted(os.listdir(directory))
        print(json.dumps(outcome), flush=True)
    """
)

# (name, dim, base rows, added rows, projection, phase, files the cut must reach at least)
SCENARIOS = {
    # vector files of a commit that refits the projection (count > 2x its fit), smallest first
    "vectors": (16, 300, 301, "pca:8", "commit", {"projection", "ids", "catalog"}),
    # a tiny collection: the manifest is cut by limits between the WAL's size and its own
    "manifest": (8, 6, 2, "none", "commit", {"catalog"}),
    # the catalog rows staged while adding, under the limit from the first add on
    "catalog": (16, 300, 300, "none", "add", {"catalog"}),
}
WRITE_ORDER = ("projection", "ids", "embeddings", "index", "catalog", "manifest")


def unit_rows(n: int, d: int, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def run_child(directory: Path, phase: str, dim: int, n: int, limits: list[int]) -> list[dict]:
    args = [str(directory), phase, str(dim), str(n), json.dumps(limits)]
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *args], capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def written_sizes(base: Path, probe: Path, phase: str, dim: int, n: int) -> dict[str, int]:
    """Sizes of the files one commit writes, measured on a copy without a limit."""
    shutil.copytree(base, probe)
    [outcome] = run_child(probe, phase, dim, n, [-1])  # -1: RLIM_INFINITY
    assert outcome["committed"] == 2, outcome
    manifest = mf.read_manifest(probe)
    sizes = {
        role_of(entry.name): entry.size
        for entry in manifest.files()
        if mf.generation_of(entry.name) == manifest.generation
    }
    sizes["catalog"] = outcome["wal"]  # what the commit appended to the catalog's WAL
    return sizes | {"manifest": (probe / "manifest.json").stat().st_size}


def first_cut(sizes: dict[str, int], limit: int, phase: str) -> str:
    """The role of the first file in write order that a size limit cuts (under a limit set
    before adding, the catalog's first writes come before any file of the commit)."""
    order = ("catalog", *WRITE_ORDER) if phase == "add" else WRITE_ORDER
    return next(role for role in order if sizes.get(role, 0) > limit)


def victim(message: str) -> str:
    """The role of the file a 'could not write' message names."""
    match = re.search(r"could not write (\S+?): ", message)
    assert match, message
    return role_of(Path(match.group(1)).name.removeprefix(".tmp."))


def role_of(name: str) -> str:
    """catalog, projection, manifest, or a segment file's role (ids, embeddings, index)."""
    parts = name.split(".")
    return parts[1] if parts[0].startswith("seg") else parts[0]


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_a_cut_short_write_keeps_the_previous_generation(tmp_path, scenario):
    dim, base_rows, added, projection, phase, expected_victims = SCENARIOS[scenario]
    base = tmp_path / "c"
    vectors = unit_rows(base_rows, dim)
    with Collection.create(base, {"model_id": "m", "dim": dim}, index_key="Flat",
                           projection=projection) as col:  # fmt: skip
        ids = col.add(vectors, [Record(f"old/{i}") for i in range(base_rows)])
        col.commit()
    before = sorted(p.name for p in base.iterdir())
    sizes = written_sizes(base, tmp_path / "probe", phase, dim, added)
    limits = sorted({s - 1 for s in sizes.values()} | {s - s // 3 for s in sizes.values()})

    outcomes = run_child(base, phase, dim, added, limits)

    assert len(outcomes) == len(limits)
    for outcome in outcomes:
        assert "error" in outcome, outcome  # never "committed", never a raw crash
        assert outcome["error"].startswith("could not write "), outcome
        assert outcome["files"] == before, outcome  # no temp file, no file of generation 2
    victims = {victim(o["error"]) for o in outcomes}
    assert victims == {first_cut(sizes, limit, phase) for limit in limits}
    assert victims >= expected_victims
    with Collection.open(base) as col:
        assert col.generation == 1 and col.count == base_rows
        top = [row[0].id for row in col.search(vectors[:5], k=1)]
        assert top == ids[:5].tolist()
