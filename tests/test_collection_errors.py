"""Collection failure paths: missing or damaged files, locking, read-only and closed handles,
encoder mismatch, input validation, and a failed commit."""

from __future__ import annotations

import json
import os
import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from collection_helpers import SPEC, build_collection, records, unit_rows

from xmodal.errors import (
    CollectionCorruptError,
    CollectionError,
    CollectionLockedError,
    EncoderMismatchError,
)
from xmodal.index import Collection, Record
from xmodal.index import manifest as mf


@pytest.fixture
def built(tmp_path: Path):
    """A committed Flat collection of 2000 random unit rows, d=64."""
    return build_collection(tmp_path)


def test_missing_directory_or_manifest(tmp_path):
    message = f"not an xmodal collection: {tmp_path / 'absent'} (create one with `xmodal index"
    with pytest.raises(CollectionError, match=re.escape(message)):
        Collection.open(tmp_path / "absent")
    (tmp_path / "plain").mkdir()
    with pytest.raises(CollectionError, match="not an xmodal collection: .*plain"):
        Collection.open(tmp_path / "plain", writable=True)
    assert not (tmp_path / "plain" / "lock").exists()


def test_manifest_removed_from_built_collection(built):
    directory, _, _ = built
    (directory / "manifest.json").unlink()
    with pytest.raises(CollectionError, match=r"not an xmodal collection: .*SOURCE -c DIR"):
        Collection.open(directory)


def test_truncated_index_is_corrupt(built):
    directory, _, _ = built
    path = directory / "seg000001-0.index.faiss"
    os.truncate(path, path.stat().st_size // 2)
    with pytest.raises(
        CollectionCorruptError, match=r"seg000001-0\.index\.faiss is damaged: .*bytes"
    ):
        Collection.open(directory)


def _two_collections(tmp_path):
    for name, n in (("big", 60), ("small", 20)):
        with Collection.create(tmp_path / name, SPEC) as col:
            col.add(unit_rows(n, 64, seed=n), records(n, prefix=name))
            col.commit()
    catalog = tmp_path / "big" / "catalog.sqlite"
    catalog.write_bytes((tmp_path / "small" / "catalog.sqlite").read_bytes())
    return catalog


def test_catalog_of_another_collection_is_corrupt(tmp_path):
    # The catalog database changes with every commit, so no checksum can guard it: the manifest
    # names it by the identity stored inside it at creation.
    catalog = _two_collections(tmp_path)
    ours = mf.read_manifest(tmp_path / "big").catalog_id
    theirs = mf.read_manifest(tmp_path / "small").catalog_id
    message = (
        f"collection file {catalog} is damaged: it is catalog {theirs}, the manifest names "
        f"catalog {ours} (a catalog of another collection); restore the directory from a backup "
        "or rebuild the collection"
    )
    for writable in (False, True):
        with pytest.raises(CollectionCorruptError, match=re.escape(message)):
            Collection.open(tmp_path / "big", writable=writable)


def test_catalog_of_another_collection_with_a_fixed_identity_is_corrupt(tmp_path):
    # The identity is "fixed" too, yet 40 of the 60 indexed items have no catalog row: search
    # would silently drop their hits. Opening must refuse the mix, naming the numbers and file.
    catalog = _two_collections(tmp_path)
    manifest = mf.read_manifest(tmp_path / "big")
    theirs = mf.read_manifest(tmp_path / "small").catalog_id
    mf.write_manifest(tmp_path / "big", manifest.replace(catalog_id=theirs))
    message = (
        f"collection {tmp_path / 'big'} is damaged: the manifest counts 60 items and the index "
        f"holds 60, but the catalog {catalog} has 20 rows; restore the directory from a backup "
        "or rebuild the collection"
    )
    for writable in (False, True):
        with pytest.raises(CollectionCorruptError, match=re.escape(message)):
            Collection.open(tmp_path / "big", writable=writable)


def test_missing_data_file_is_corrupt(built):
    directory, _, _ = built
    (directory / "seg000001-0.ids.npy").unlink()
    with pytest.raises(CollectionCorruptError, match=r"seg000001-0\.ids\.npy .*missing"):
        Collection.open(directory)


def test_garbled_manifest_and_future_format(built):
    directory, _, _ = built
    manifest = directory / "manifest.json"
    good = json.loads(manifest.read_text())
    manifest.write_text(json.dumps(good | {"format_version": 99}))
    with pytest.raises(CollectionError, match="format version 99.*upgrade xmodal"):
        Collection.open(directory)
    manifest.write_text('{"format_version": 1, "gener')
    with pytest.raises(CollectionCorruptError, match=r"manifest\.json is unreadable"):
        Collection.open(directory)


def test_second_writer_is_refused_naming_the_pid(built):
    directory, _, _ = built
    first = Collection.open(directory, writable=True)
    pattern = rf"collection {re.escape(str(directory))} is being written by pid {os.getpid()}; wait"
    with pytest.raises(CollectionLockedError, match=pattern):
        Collection.open(directory, writable=True)
    with pytest.raises(CollectionLockedError, match=f"pid {os.getpid()}"):
        Collection.create(directory, SPEC, overwrite=True)
    with Collection.open(directory) as reader:  # readers are never blocked
        assert reader.count == 2000
    first.close()
    Collection.open(directory, writable=True).close()


def test_read_only_handle_refuses_changes(built):
    directory, _, _ = built
    with Collection.open(directory) as col:
        hint = r"open it with Collection.open\(directory, writable=True\)"
        with pytest.raises(CollectionError, match="cannot add items: .*read-only; " + hint):
            col.add(unit_rows(1, 64), records(1))
        with pytest.raises(CollectionError, match="cannot remove items: .*read-only"):
            col.remove([1])
        with pytest.raises(CollectionError, match="cannot commit: .*read-only"):
            col.commit()


def test_closed_handle_refuses_use(built):
    directory, _, vectors = built
    col = Collection.open(directory)
    col.close()
    col.close()
    with pytest.raises(CollectionError, match="is closed; open it again"):
        col.search(vectors[:1])


def test_check_encoder(built):
    directory, _, _ = built
    with Collection.open(directory) as col:
        col.check_encoder(SPEC | {"device": "cuda", "precision": "fp16"})
        col.check_encoder(SPEC | {"model_id": "copy-of-clip"})  # same weights, another name
        message = (
            r"built with model 'tiny/clip' \(revision abc123, dim 64\), but the query encoder "
            r"is model 'tiny/clip' \(revision def456, dim 64\) \(different revision\)"
        )
        with pytest.raises(EncoderMismatchError, match=message):
            col.check_encoder(SPEC | {"revision": "def456"})
        with pytest.raises(EncoderMismatchError, match=r"\(different model_id\)"):
            col.check_encoder(SPEC | {"model_id": "other/clip", "revision": None})
        with pytest.raises(EncoderMismatchError, match="different dim"):
            col.check_encoder(SPEC | {"dim": 32})


@pytest.mark.parametrize(
    ("vectors", "recs", "message"),
    [
        (np.ones(64, np.float32), 1, "vectors must be a 2-D array (rows, dim), got shape (64,)"),
        (unit_rows(2, 32), 2, "vectors have dim 32, but the collection holds dim 64"),
        (np.full((1, 64), np.nan, np.float32), 1, "vectors contain NaN or infinite values"),
        (unit_rows(2, 64) * 3, 2, "vectors must be L2-normalised rows; row 0 has norm 3.0000"),
        (unit_rows(3, 64), 2, "got 3 vectors but 2 records; pass one per row"),
        (np.array([["a"] * 64]), 1, "vectors must be real numbers"),
    ],
)
def test_add_validation(tmp_path, vectors, recs, message):
    with Collection.create(tmp_path / "c", SPEC) as col:
        with pytest.raises(CollectionError, match=re.escape(message)):
            col.add(vectors, records(recs))
        assert col.count == 0


def test_add_record_validation(tmp_path):
    with Collection.create(tmp_path / "c", {"model_id": "m"}) as col:
        with pytest.raises(CollectionError, match="path 'a' appears twice in one add"):
            col.add(unit_rows(2, 8), [Record("a"), Record("a")])
        with pytest.raises(CollectionError, match="non-empty str path"):
            col.add(unit_rows(1, 8), [Record("")])
        with pytest.raises(CollectionError, match="must be xmodal Record objects"):
            col.add(unit_rows(1, 8), [{"path": "a"}])
        col.add(unit_rows(1, 8), [Record("a")])  # the first add fixes dim 8
        with pytest.raises(
            CollectionError, match="vectors have dim 16, but the collection holds dim 8"
        ):
            col.add(unit_rows(1, 16), [Record("b")])


def test_search_validation(built):
    directory, _, _ = built
    with Collection.open(directory) as col:
        with pytest.raises(CollectionError, match="query vectors have dim 3, but the collection"):
            col.search(np.ones((1, 3), np.float32))
        with pytest.raises(CollectionError, match="k must be a positive integer, got 0"):
            col.search(unit_rows(1, 64), k=0)
        with pytest.raises(CollectionError, match="ids must be integers"):
            col.get_records(["x"])


def test_create_refuses_existing_or_foreign_directories(built, tmp_path):
    directory, _, _ = built
    with pytest.raises(CollectionError, match="already an xmodal collection; open it with"):
        Collection.create(directory, SPEC)
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"x")
    with pytest.raises(CollectionError, match="not empty and not an xmodal collection .*'cat.jpg'"):
        Collection.create(foreign, SPEC, overwrite=True)
    with pytest.raises(CollectionError, match=r"encoder_spec\['dim'\] must be a positive integer"):
        Collection.create(tmp_path / "new", {"model_id": "m", "dim": 0})


def test_overwrite_replaces_and_keeps_ids_fresh(built):
    directory, _, _ = built
    with Collection.create(directory, {"model_id": "m2", "dim": 64}, overwrite=True) as col:
        assert col.count == 0 and col.generation == 2
        assert col.add(unit_rows(1, 64), records(1)).tolist() == [2000]
        col.commit()
    assert sorted(p.name for p in directory.iterdir() if "00000" in p.name) == [
        "seg000003-0.embeddings.f16.npy",
        "seg000003-0.ids.npy",
        "seg000003-0.index.faiss",
    ]
    with Collection.open(directory) as col:
        assert col.encoder_spec["model_id"] == "m2" and col.count == 1


def test_failed_manifest_switch_keeps_previous_generation(built, monkeypatch):
    directory, _, vectors = built
    col = Collection.open(directory, writable=True)
    col.remove([0, 1, 2])

    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(mf, "write_manifest", no_space)
    with pytest.raises(OSError, match="No space left"):
        col.commit()
    monkeypatch.undo()
    with pytest.raises(CollectionError, match="is closed; open it again"):
        col.search(vectors[:1])
    with Collection.open(directory, writable=True) as again:  # the lock was released
        assert (again.generation, again.count) == (1, 2000)
        assert again.ids_for_paths("img/00000.jpg") == {"img/00000.jpg": 0}
    # The catalog rows the failed commit had made durable were undone right away.
    with sqlite3.connect(f"{(directory / 'catalog.sqlite').as_uri()}?mode=ro", uri=True) as conn:
        query = "SELECT count(*) FROM items WHERE added_gen > 1 OR removed_gen > 1"
        assert conn.execute(query).fetchone()[0] == 0
