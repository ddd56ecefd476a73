"""Collection round trips, exactness against numpy, ids, removal/replacement, staging, readers."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from collection_helpers import SPEC, build_collection, records, unit_rows

from xmodal.index import Collection, CollectionInfo, Hit, Record


def assert_exact(hits: list[list[Hit]], ids, vectors, queries, k: int) -> None:
    """Hits equal numpy brute force: same scores in order, and the same ids up to ties."""
    exact = queries @ vectors.T
    score_of = [dict(zip(ids.tolist(), row.tolist(), strict=True)) for row in exact]
    for q, row in enumerate(hits):
        want = np.sort(exact[q])[::-1][:k]
        got_scores = np.array([h.score for h in row])
        assert len(row) == min(k, len(ids))
        np.testing.assert_allclose(got_scores, want, atol=1e-5)
        for hit in row:  # each id really has the score reported for it
            assert score_of[q][hit.id] == pytest.approx(hit.score, abs=1e-5)
        cutoff = want[-1]
        must = {i for i, s in score_of[q].items() if s > cutoff + 1e-5}
        assert must <= {h.id for h in row}
        assert len({h.id for h in row}) == len(row)


@pytest.fixture
def built(tmp_path: Path):
    """A committed Flat collection of 2000 random unit rows, d=64."""
    return build_collection(tmp_path)


def test_round_trip_matches_brute_force(built):
    directory, ids, vectors = built
    queries = unit_rows(25, 64, seed=1)
    with Collection.open(directory) as col:
        assert (col.count, col.dim, col.generation) == (2000, 64, 1)
        hits = col.search(queries, k=10)
        assert len(hits) == 25
        assert_exact(hits, ids, vectors, queries, 10)
        assert hits[0][0].record.path.startswith("img/")
        assert all(isinstance(h.score, float) and isinstance(h.id, int) for h in hits[0])


def test_search_sees_staged_rows_and_k_larger_than_count(tmp_path):
    vectors = unit_rows(7, 64)
    with Collection.create(tmp_path / "c", SPEC) as col:
        ids = col.add(vectors, records(7))
        hits = col.search(vectors[3], k=50)  # a 1-D query is one row
        assert len(hits) == 1 and len(hits[0]) == 7
        assert hits[0][0].id == ids[3] and hits[0][0].score == pytest.approx(1.0, abs=1e-5)
        assert_exact(hits, ids, vectors, vectors[3:4], 50)


def test_empty_collection_search_and_raw(tmp_path):
    with Collection.create(tmp_path / "c", {"model_id": "m"}) as col:
        assert col.search(unit_rows(2, 8), k=3) == [[], []]
        ids, emb = col.raw_embeddings()
        assert ids.shape == (0,) and emb.dtype == np.float16
        assert col.commit() == 0
    with Collection.open(tmp_path / "c") as col:
        assert (col.count, col.dim, col.info().count) == (0, None, 0)


def test_ids_stable_across_reopen_and_never_reused(built):
    directory, ids, vectors = built
    assert ids.dtype == np.int64 and ids.tolist() == list(range(2000))
    with Collection.open(directory, writable=True) as col:
        assert col.remove(ids[-5:]) == 5
        col.commit()
    with Collection.open(directory, writable=True) as col:
        assert col.get_records([ids[0]])[ids[0]] == records(1)[0]
        new = col.add(unit_rows(3, 64, seed=9), records(3, prefix="new"))
        assert new.tolist() == [2000, 2001, 2002]  # the removed ids 1995..1999 stay retired
        col.commit()
    with Collection.open(directory) as col:
        assert col.ids_for_paths(["new/00001.jpg", "img/00007.jpg", "nope"]) == {
            "new/00001.jpg": 2001,
            "img/00007.jpg": 7,
        }
        hit = col.search(vectors[7], k=1)[0][0]
        assert hit.id == 7 and hit.record == records(8)[7]


def test_remove_then_search_never_returns_removed(built):
    directory, ids, vectors = built
    gone = ids[::3]
    with Collection.open(directory, writable=True) as col:
        assert col.remove(np.concatenate([gone, [999_999]])) == len(gone)
        staged = col.search(vectors[:50], k=20)
        assert col.commit() == 2
    with Collection.open(directory) as col:
        assert col.count == 2000 - len(gone)
        committed = col.search(vectors[:50], k=20)
        assert col.get_records(gone) == {}
    keep = ~np.isin(ids, gone)
    for hits in (staged, committed):
        assert not {h.id for row in hits for h in row} & set(gone.tolist())
        assert_exact(hits, ids[keep], vectors[keep], vectors[:50], 20)


def test_re_adding_a_path_replaces_it(built):
    directory, ids, vectors = built
    fresh = unit_rows(1, 64, seed=5)
    with Collection.open(directory, writable=True) as col:
        (new_id,) = col.add(fresh, [Record("img/00010.jpg", caption="again")])
        assert new_id == 2000 and col.count == 2000
        assert col.ids_for_paths(["img/00010.jpg"]) == {"img/00010.jpg": 2000}
        col.commit()
    with Collection.open(directory) as col:
        assert col.get_records([10]) == {}
        assert col.get_records([2000])[2000].caption == "again"
        assert 10 not in {h.id for h in col.search(vectors[10], k=5)[0]}
        assert col.search(fresh, k=1)[0][0].id == 2000
        raw_ids, _ = col.raw_embeddings()
        assert 10 not in raw_ids and 2000 in raw_ids and len(raw_ids) == 2000


SEGMENT_ROLES = ("index", "embeddings", "ids")


def test_raw_embeddings_round_trip_and_memmap(built):
    directory, ids, vectors = built
    with Collection.open(directory) as col:
        raw_ids, raw = col.raw_embeddings()
        info = col.info()
    assert raw.dtype == np.float16 and isinstance(raw, np.memmap)
    np.testing.assert_array_equal(raw_ids, ids)
    np.testing.assert_allclose(raw.astype(np.float32), vectors, atol=1e-3)
    loaded = np.load(directory / "seg000001-0.embeddings.f16.npy", mmap_mode="r")
    assert isinstance(loaded, np.memmap) and loaded.shape == (2000, 64)
    assert isinstance(info, CollectionInfo) and info.bytes_on_disk > raw.nbytes
    assert (info.generation, info.count, info.dim, info.index_key) == (1, 2000, 64, "auto")
    assert (info.index_factory, info.search_params, info.recall_at_10) == ("Flat", {}, 1.0)
    assert info.encoder_spec == SPEC and info.format_version == 3
    assert info.created <= info.updated


def test_manifest_lists_files_with_checksums(built):
    directory, _, _ = built
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["checksum"] == "sha256" and manifest["next_id"] == 2000
    (segment,) = manifest["segments"]
    names = sorted(segment[r]["name"] for r in SEGMENT_ROLES)
    assert names == [
        "seg000001-0.embeddings.f16.npy",
        "seg000001-0.ids.npy",
        "seg000001-0.index.faiss",
    ]
    assert all(len(segment[r]["sha256"]) == 64 for r in SEGMENT_ROLES)
    assert (segment["count"], segment["deleted"], segment["deletes"]) == (2000, 0, None)
    # The catalog is one versioned database named by its identity, not a checksummed file.
    assert manifest["catalog"] is None and len(manifest["catalog_id"]) == 32
    on_disk = sorted(p.name for p in directory.iterdir())
    assert on_disk == sorted([*names, "catalog.sqlite", "lock", "manifest.json"])


def test_exit_without_commit_discards_staged(built):
    directory, _, _ = built
    with Collection.open(directory, writable=True) as col:
        col.add(unit_rows(5, 64, seed=3), records(5, prefix="staged"))
        col.remove([1, 2])
        assert col.count == 2003
    with Collection.open(directory) as col:
        assert col.count == 2000 and col.generation == 1
        assert col.ids_for_paths(["staged/00000.jpg"]) == {}
    assert not [p for p in directory.iterdir() if p.name.startswith(".tmp")]


def test_open_sweeps_crash_leftovers(built):
    directory, _, _ = built
    (directory / ".tmp.index.g000002.faiss.x1").write_bytes(b"half")
    (directory / "index.g000002.faiss").write_bytes(b"orphan of an uncommitted generation")
    with Collection.open(directory) as col:  # readers never delete anything
        assert col.count == 2000
    assert (directory / "index.g000002.faiss").exists()
    Collection.open(directory, writable=True).close()
    assert not (directory / "index.g000002.faiss").exists()
    assert not (directory / ".tmp.index.g000002.faiss.x1").exists()


def test_readers_see_whole_generations_while_a_writer_commits(tmp_path):
    directory = tmp_path / "c"
    writer = Collection.create(directory, SPEC)
    done = threading.Event()

    def write() -> None:
        for step in range(15):
            writer.add(unit_rows(20, 64, seed=step), records(20, prefix=f"w{step}"))
            writer.commit()
        done.set()

    thread = threading.Thread(target=write)
    thread.start()
    seen = 0
    while not done.is_set() or seen == 0:
        with Collection.open(directory) as reader:
            assert reader.count == 20 * reader.generation
            assert len(reader.raw_embeddings()[0]) == reader.count
            seen += 1
    thread.join()
    writer.close()
