"""Segments: commits write only what changed, merges follow the tiered policy, format 1 upgrades."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from xmodal.errors import CollectionCorruptError
from xmodal.index import Collection, Record, merging
from xmodal.index import manifest as mf

DATA = Path(__file__).parent / "data" / "collection-v1"
SPEC = {"model_id": "seg/test", "dim": 16}


def unit_rows(n: int, d: int = 16, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.mark.parametrize(
    ("sizes", "merges", "why"),
    [
        ([], [], "nothing to merge"),
        ([2048] * 10, [], "ten segments in a tier are allowed"),
        ([2048] * 11, [tuple(range(10))], "the eleventh: merge the ten smallest"),
        ([100, 2048, *[2048] * 9], [tuple(range(10))], "smallest first, older first on ties"),
        ([50_000, *[2048] * 11], [tuple(range(1, 11))], "the big segment is another tier"),
        ([5000] * 11 + [2048] * 11, [tuple(range(11, 21)), tuple(range(10))], "each tier"),
        ([2048, 0, 2048], [(1,)], "an emptied segment is dropped"),
        ([0, *[10] * 11], [(0, *range(1, 11))], "...riding along with a merge"),
    ],
)
def test_plan_merges_table(sizes, merges, why):
    assert sorted(merging.plan_merges(sizes)) == sorted(merges), why


def test_plan_compaction_merges_tiers_or_everything():
    sizes = [50_000, 2048, 2048, 5000]
    assert merging.plan_compaction(sizes, full=False) == [(1, 2)]
    assert merging.plan_compaction(sizes, full=True) == [(0, 1, 2, 3)]
    assert merging.plan_compaction([50_000], full=True) == []


def test_commit_writes_only_new_files_and_tombstones(tmp_path, monkeypatch):
    monkeypatch.setattr(merging, "MAX_PER_TIER", 3)
    monkeypatch.setattr(merging, "MERGE_AT_ONCE", 3)
    directory, rows = tmp_path / "c", unit_rows(200)
    with Collection.create(directory, SPEC, index_key="flat") as col:
        ids = col.add(rows[:50], [Record(f"a/{i}") for i in range(50)])
        col.commit()
        first = {p.name: p.stat().st_mtime_ns for p in directory.glob("seg000001-0.*")}
        col.remove(ids[:5])
        ids2 = col.add(rows[50:100], [Record(f"b/{i}") for i in range(50)])
        col.commit()
        names = sorted(p.name for p in directory.iterdir() if p.name.startswith("seg"))
        assert names == [
            "seg000001-0.deletes.g000002.npy",
            "seg000001-0.embeddings.f16.npy",
            "seg000001-0.ids.npy",
            "seg000001-0.index.faiss",
            "seg000002-0.embeddings.f16.npy",
            "seg000002-0.ids.npy",
            "seg000002-0.index.faiss",
        ]
        assert {p.name: p.stat().st_mtime_ns for p in directory.glob("seg000001-0.*")
                if "deletes" not in p.name} == first  # fmt: skip
        info = col.info()
        assert (info.segments, info.segment_sizes, info.deleted_rows) == (2, (45, 50), 5)
        hits = col.search(rows[:10], k=3)
        assert [row[0].id for row in hits[5:]] == ids[5:10].tolist()
        assert all(h.id not in ids[:5] for row in hits for h in row)
        for batch in range(2):  # the fourth segment crowds tier 0 (3 allowed): one merge
            start = 100 + 50 * batch
            col.add(rows[start : start + 50], [Record(f"c/{start + i}") for i in range(50)])
            col.commit()
        info = col.info()
        assert (info.segments, info.segment_sizes, info.deleted_rows) == (2, (145, 50), 0)
    with Collection.open(directory) as col:
        assert col.count == 195
        top = [row[0].id for row in col.search(rows[50:60], k=1)]
        assert top == ids2[:10].tolist()
        assert len(col.search(rows[:1], k=500)[0]) == 195  # min(k, live count)


def test_compact_full_merges_into_one_and_a_reader_keeps_working(tmp_path):
    directory, rows = tmp_path / "c", unit_rows(120, seed=1)
    with Collection.create(directory, SPEC) as col:
        for part in range(4):
            chunk = slice(30 * part, 30 * part + 30)
            col.add(rows[chunk], [Record(f"p{part}/{i}") for i in range(30)])
            col.commit()
        col.remove([0, 1])
        col.commit()
    reader = Collection.open(directory)
    before = [row[0].id for row in reader.search(rows[2:12], k=1)]
    with Collection.open(directory, writable=True) as col:
        assert col.info().segments == 4
        generation = col.compact(full=True)
        info = col.info()
        assert (info.segments, info.segment_sizes, info.deleted_rows) == (1, (118,), 0)
        assert col.compact(full=True) == generation  # nothing left to do
    assert not list(directory.glob("seg000001-0.*"))  # swept once no manifest named them
    assert [row[0].id for row in reader.search(rows[2:12], k=1)] == before  # old files open
    reader.close()
    with Collection.open(directory) as col:
        assert [row[0].id for row in col.search(rows[2:12], k=1)] == before
        ids, vectors = col.raw_embeddings()
        assert sorted(ids.tolist()) == list(range(2, 120)) and vectors.shape == (118, 16)


def test_a_merge_reads_its_rows_in_blocks_and_trains_on_a_sample(tmp_path, monkeypatch):
    """No step of a merge holds the merged rows at once: bounded memory at any size."""
    from xmodal.index import faiss_index, rowset
    from xmodal.index.rowset import RowSet
    from xmodal.index.vectors import VectorStore

    monkeypatch.setattr(rowset, "BLOCK_ROWS", 64)
    monkeypatch.setattr(faiss_index, "TRAIN_MIN_ROWS", 100)
    monkeypatch.setattr(faiss_index, "TRAIN_PER_LIST", 40)
    directory, rows = tmp_path / "c", unit_rows(600, seed=2)
    with Collection.create(directory, SPEC, index_key="IVF4,Flat") as col:
        for part in range(3):
            chunk = slice(200 * part, 200 * part + 200)
            col.add(rows[chunk], [Record(f"p{part}/{i}") for i in range(200)])
            col.commit()
        col.remove([3, 250])
        streamed, picked, trained = [], [], []
        real_project, real_pick, real_train = (
            VectorStore.project,
            RowSet.__getitem__,
            faiss_index.train,
        )
        picking = []

        def project(self, block):
            if not picking:  # rows read in order (filling the index, writing the float16 file)
                streamed.append(len(block))
            return real_project(self, block)

        def pick(self, key):
            picking.append(True)
            try:
                out = real_pick(self, key)
            finally:
                picking.pop()
            picked.append(len(out))
            return out

        monkeypatch.setattr(VectorStore, "project", project)
        monkeypatch.setattr(RowSet, "__getitem__", pick)
        monkeypatch.setattr(
            faiss_index, "train", lambda i, v, k: trained.append(len(v)) or real_train(i, v, k)
        )
        col.compact(full=True)
        assert col.info().segment_sizes == (598,)
        # Rows stream in blocks of 64. Rows picked at once are only bounded samples: the
        # training sample (160 rows: 4 lists x 40, over the floor of 100), the tuning queries
        # (min(rows, tuning.DEFAULT_SAMPLE = 1000)) and ground-truth blocks (_GT_ROWS).
        assert trained == [160]
        assert streamed and max(streamed) <= 64
        assert 160 in picked and 598 in picked and max(picked) <= 598
        hits = col.search(rows[:20], k=1)
    assert [row[0].id for row in hits[4:]] == list(range(4, 20))


def test_a_failed_merge_leaves_the_writer_searching_the_old_segments(tmp_path, monkeypatch):
    """A merge drops its members' indexes from memory; if it fails they are read again."""
    from xmodal.index import segments

    directory, rows = tmp_path / "c", unit_rows(90, seed=3)
    with Collection.create(directory, SPEC, index_key="flat") as col:
        for part in range(3):
            col.add(rows[30 * part : 30 * part + 30], [Record(f"p{part}/{i}") for i in range(30)])
            col.commit()
        before = [row[0].id for row in col.search(rows, k=1)]

        def full_disk(*args, **kwargs):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(segments, "write_segment", full_disk)
        with pytest.raises(OSError):
            col.compact(full=True)
        assert col.info().segments == 3
        assert [row[0].id for row in col.search(rows, k=1)] == before
    with Collection.open(directory) as col:
        assert [row[0].id for row in col.search(rows, k=1)] == before


def test_a_damaged_segment_file_is_named(tmp_path):
    directory = tmp_path / "c"
    with Collection.create(directory, SPEC) as col:
        for part in range(2):
            col.add(unit_rows(20, seed=part), [Record(f"{part}/{i}") for i in range(20)])
            col.commit()
    path = directory / "seg000002-0.embeddings.f16.npy"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(
        CollectionCorruptError, match=r"seg000002-0\.embeddings\.f16\.npy is damaged"
    ):
        Collection.open(directory)


def test_format_1_collection_opens_and_upgrades_on_commit(tmp_path):
    directory = tmp_path / "old"
    shutil.copytree(DATA, directory)
    rng = np.random.default_rng(7)  # the rows the fixture was written with (8 + 4, id 3 removed)
    rows = rng.standard_normal((12, 8)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    with Collection.open(directory) as col:
        info = col.info()
        assert (info.format_version, info.count, info.generation, info.segments) == (1, 11, 2, 1)
        assert [row[0].id for row in col.search(rows[:3], k=1)] == [0, 1, 2]
        assert col.get_records([5])[5].caption == "item 5"
    with Collection.open(directory, writable=True) as col:
        col.remove([0])
        new = col.add(rows[3:4], [Record("/new/3.jpg")])
        col.commit()
    raw = mf.read_manifest(directory)
    assert (raw.format_version, raw.count, [s.live for s in raw.segments]) == (3, 11, [10, 1])
    assert raw.segments[0].index.name == "index.g000002.faiss"  # format-1 files stay listed
    assert raw.catalog is None and raw.catalog_id  # its catalog was moved into the database
    with Collection.open(directory) as col:
        assert [row[0].id for row in col.search(rows[1:4], k=1)] == [1, 2, int(new[0])]
        assert 0 not in col.raw_embeddings()[0]
        assert col.get_records([5])[5].caption == "item 5" and col.get_records([0]) == {}


def test_cli_compact(tmp_path):
    directory = tmp_path / "c"
    with Collection.create(directory, SPEC) as col:
        for part in range(3):
            col.add(unit_rows(10, seed=part), [Record(f"{part}/{i}") for i in range(10)])
            col.commit()
    command = [sys.executable, "-m", "xmodal.cli", "compact", "-c", str(directory), "--full"]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "compacted: segments 1 (30 rows), generation 4"
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "nothing to compact: segments 1 (30 rows), generation 4"


def test_what_a_killed_on_disk_merge_leaves_is_swept_by_the_next_writer(tmp_path):
    """A Ray build killed mid-merge leaves a scratch folder of parts and a temp lists file."""
    directory, rows = tmp_path / "c", unit_rows(40, seed=4)
    with Collection.create(directory, SPEC) as col:
        col.add(rows[:20], [Record(f"a/{i}") for i in range(20)])
        col.commit()
    scratch = directory / ".tmp.abc123"
    scratch.mkdir()
    (scratch / "part-000000.faiss").write_bytes(b"\0" * 64)
    (directory / ".tmp.lists.ivfdata.xyz").write_bytes(b"\0" * 64)
    with Collection.open(directory) as reader:  # readers never delete anything
        assert reader.count == 20 and scratch.is_dir()
    with Collection.open(directory, writable=True) as col:
        col.add(rows[20:], [Record(f"b/{i}") for i in range(20)])
        col.commit()
    assert not [p.name for p in directory.iterdir() if p.name.startswith(".tmp")]
