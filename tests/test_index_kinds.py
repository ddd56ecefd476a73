"""Index factory strings beyond Flat, and the durable-write helpers underneath the collection."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xmodal.errors import CollectionCorruptError, CollectionError
from xmodal.index import Collection, Record
from xmodal.index import manifest as mf

SPEC = {"model_id": "tiny/clip", "dim": 16}


def unit_rows(n: int, d: int = 16, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def recs(n: int, prefix: str = "p") -> list[Record]:
    return [Record(f"{prefix}{i}") for i in range(n)]


def test_ivf_is_trained_at_commit_and_exact_before(tmp_path):
    vectors = unit_rows(600)
    with Collection.create(tmp_path / "c", SPEC, index_key="IVF8,Flat") as col:
        ids = col.add(vectors, recs(600))
        staged = col.search(vectors[:5], k=600)  # untrained: exact numpy search over staged rows
        exact = np.sort(vectors[:5] @ vectors.T, axis=1)[:, ::-1]
        np.testing.assert_allclose([[h.score for h in row] for row in staged], exact, atol=1e-5)
        col.commit()
        more = col.add(unit_rows(10, seed=1), recs(10, prefix="q"))  # trained: goes to the index
        assert col.search(unit_rows(10, seed=1), k=1)[0][0].id == more[0]
        col.commit()
    with Collection.open(tmp_path / "c") as col:
        assert col.info().index_key == "IVF8,Flat" and col.count == 610
        # a stored vector probes its own inverted list, so it always finds itself
        top = [row[0].id for row in col.search(vectors[:50], k=1)]
        assert top == ids[:50].tolist()


def test_ivf_with_too_few_vectors_refuses_commit_and_keeps_staged(tmp_path):
    with Collection.create(tmp_path / "c", SPEC, index_key="IVF64,Flat") as col:
        col.add(unit_rows(10), recs(10))
        with pytest.raises(CollectionError, match=r"'IVF64,Flat' could not be trained on 10 vec"):
            col.commit()
        assert col.count == 10 and col.generation == 0
        col.add(unit_rows(3000, seed=2), recs(3000, prefix="more"))
        assert col.commit() == 1


def test_hnsw_removal_is_filtered_then_rebuilt(tmp_path):
    vectors = unit_rows(300)
    with Collection.create(tmp_path / "c", SPEC, index_key="HNSW16") as col:
        ids = col.add(vectors, recs(300))
        col.commit()
        gone = ids[:100]
        col.remove(gone)  # HNSW cannot remove: the handle filters these ids until commit
        staged = col.search(vectors[:100], k=5)
        assert all(len(row) == 5 for row in staged)
        assert not {h.id for row in staged for h in row} & set(gone.tolist())
        col.commit()
    with Collection.open(tmp_path / "c") as col:
        assert col.count == 200
        hits = col.search(vectors[100:120], k=3)
        assert [row[0].id for row in hits] == ids[100:120].tolist()
        assert not {h.id for row in col.search(vectors[:100], k=5) for h in row} & set(
            gone.tolist()
        )


def test_ivf_removal_keeps_every_other_id_right(tmp_path):
    # IVF keeps its internal ids on removal while IndexIDMap2 compacts its map: removing through
    # the map would hand later rows their neighbours' ids.
    vectors = unit_rows(1200)
    with Collection.create(tmp_path / "c", SPEC, index_key="IVF8,Flat") as col:
        ids = col.add(vectors, recs(1200))
        col.commit()
        col.remove(ids[:10])
        col.commit()
    with Collection.open(tmp_path / "c") as col:
        assert col.count == 1190
        top = [row[0].id for row in col.search(vectors[10:60], k=1)]
        assert top == ids[10:60].tolist()
        assert not {h.id for row in col.search(vectors[:10], k=3) for h in row} & set(
            ids[:10].tolist()
        )


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("Bogus", r"unknown index key 'Bogus'; use auto, flat, hnsw, ivf-flat, ivf-pq, or a"),
        ("PQ7", "FAISS cannot build index_key 'PQ7' for dim 16"),
        ("IDMap,Flat", "must not contain IDMap"),
    ],
)
def test_bad_index_key(tmp_path, key, message):
    with pytest.raises(CollectionError, match=message):
        Collection.create(tmp_path / "c", SPEC, index_key=key)
    # nothing half-made is left that would block a correct retry
    Collection.create(tmp_path / "c", SPEC).close()


def test_durable_write_leaves_no_temp_on_failure(tmp_path):
    def fail(sink) -> None:
        sink.write(b"partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(CollectionError, match=r"could not write .*x.bin: No space left on dev"):
        mf.durable_write(tmp_path, "x.bin", fail)
    assert list(tmp_path.iterdir()) == []
    mf.durable_write(tmp_path, "x.bin", lambda sink: sink.write(b"whole"))
    assert (tmp_path / "x.bin").read_bytes() == b"whole"
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]


def test_verify_files_reports_size_and_checksum(tmp_path):
    path = tmp_path / "ids.g000001.npy"
    path.write_bytes(b"0123456789")
    entry = mf.FileEntry.of(path)
    assert entry.size == 10 and len(entry.sha256) == 64
    mf.verify_files(tmp_path, [entry])
    path.write_bytes(b"0123456780")
    with pytest.raises(CollectionCorruptError, match=r"ids\.g000001\.npy is damaged: its sha256"):
        mf.verify_files(tmp_path, [entry])


def test_manifest_lacking_fields_is_corrupt(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"format_version": 1, "generation": 0}))
    with pytest.raises(CollectionCorruptError, match=r"manifest\.json lacks \['count', 'dim'"):
        Collection.open(tmp_path)


def test_generation_names():
    assert mf.generation_file("embeddings", 3) == "embeddings.g000003.f16.npy"
    assert mf.generation_of("catalog.g000012.sqlite") == 12
    assert mf.generation_of("manifest.json") is None
    assert mf.generation_of("lock") is None
