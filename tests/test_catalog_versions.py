"""The versioned catalog: one database for all generations, each reader sees exactly its own."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from pathlib import Path

import numpy as np

from xmodal.index import Collection, Record, versions
from xmodal.index import manifest as mf
from xmodal.index.ledger import LedgerEntry
from xmodal.index.tagstore import Tag

DIM = 8
SPEC = {"model_id": "versions/test", "dim": DIM}


def unit_rows(n: int, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _raw(directory: Path, query: str) -> int:
    uri = f"{(directory / mf.CATALOG_NAME).resolve().as_uri()}?mode=ro"
    with sqlite3.connect(uri, uri=True) as conn:
        return conn.execute(query).fetchone()[0]


def test_a_reader_keeps_its_generation_while_the_writer_commits(tmp_path):
    directory = tmp_path / "c"
    with Collection.create(directory, SPEC) as col:
        col.add(unit_rows(10), [Record(f"/a/{i}.jpg", caption=f"cat {i}") for i in range(10)])
        col.record([LedgerEntry("/a/0.jpg", "indexed", run=1)])
        col.put_tags({0: [Tag("cat", 0.9)]}, reset="fp1")
        col.commit()
    reader = Collection.open(directory)
    with Collection.open(directory, writable=True) as col:
        col.remove([1])
        col.add(unit_rows(2, 1), [Record("/a/0.jpg", caption="dog"), Record("/b/new.jpg")])
        col.record([LedgerEntry("/a/0.jpg", "failed", reason="x", run=2)])
        col.put_tags({2: [Tag("dog", 0.8)]}, reset="fp2")
        assert col.commit() == 2
    assert (reader.generation, reader.count) == (1, 10)  # what it opened, after the commit
    assert reader.ids_for_paths(["/a/0.jpg", "/a/1.jpg", "/b/new.jpg"]) == {
        "/a/0.jpg": 0,
        "/a/1.jpg": 1,
    }
    assert reader.get_records([0])[0].caption == "cat 0"
    assert [hit.id for hit in reader.keyword_search("dog", k=5)] == []
    assert reader.ledger_for(["/a/0.jpg"])["/a/0.jpg"].status == "indexed"
    assert reader.tag_settings() == "fp1" and reader.tags_for([0, 2]) == {0: (Tag("cat", 0.9),)}
    assert reader.ids_where("tag:cat").tolist() == [0]
    reader.close()
    with Collection.open(directory) as fresh:
        assert (fresh.generation, fresh.count) == (2, 10)
        assert fresh.ids_for_paths(["/a/0.jpg", "/a/1.jpg", "/b/new.jpg"]) == {
            "/a/0.jpg": 10,
            "/b/new.jpg": 11,
        }
        assert [hit.id for hit in fresh.keyword_search("dog", k=5)] == [10]
        assert fresh.ledger_for(["/a/0.jpg"])["/a/0.jpg"].status == "failed"
        assert fresh.tag_settings() == "fp2" and fresh.tags_for([0, 2]) == {2: (Tag("dog", 0.8),)}
        assert fresh.ids_where("tag:cat").tolist() == []


def test_retired_rows_are_purged_after_the_retention(tmp_path, monkeypatch):
    monkeypatch.setattr(versions, "RETAIN", 2)
    directory = tmp_path / "c"
    with Collection.create(directory, SPEC) as col:
        col.add(unit_rows(5), [Record(f"/a/{i}.jpg") for i in range(5)])
        col.commit()  # 1
        col.remove([0, 1])
        col.commit()  # 2: rows 0 and 1 retired
        col.add(unit_rows(1, 3), [Record("/b.jpg")])
        col.commit()  # 3: kept for readers of generation 1
        assert _raw(directory, "SELECT count(*) FROM items") == 6
        col.add(unit_rows(1, 4), [Record("/c.jpg")])
        col.commit()  # 4: retired at 2 <= 4 - 2, purged (and out of the keyword index)
        assert _raw(directory, "SELECT count(*) FROM items") == 5
        assert _raw(directory, "SELECT count(*) FROM keywords") == 5
        assert col.count == 5


def _as_format_2(directory: Path) -> None:
    """Rewrite a collection the way xmodal wrote format 2: a catalog file per generation."""
    manifest = mf.read_manifest(directory)
    legacy = directory / mf.generation_file("catalog", manifest.generation)
    with sqlite3.connect(legacy) as conn:
        conn.execute(
            "CREATE TABLE items (id INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL, size INTEGER,"
            " mtime REAL, caption TEXT, width INTEGER, height INTEGER, content_hash TEXT)"
        )
        conn.execute(
            "CREATE TABLE ledger (uri TEXT PRIMARY KEY, status TEXT NOT NULL, reason TEXT, "
            "message TEXT, size INTEGER, mtime REAL, run INTEGER NOT NULL)"
        )
        conn.execute(f"ATTACH DATABASE '{directory / mf.CATALOG_NAME}' AS new")
        conn.execute(
            "INSERT INTO items SELECT id, path, size, mtime, caption, width, height, content_hash"
            " FROM new.items WHERE removed_gen IS NULL"
        )
        conn.execute(
            "INSERT INTO ledger SELECT uri, status, reason, message, size, mtime, run "
            "FROM new.ledger WHERE removed_gen IS NULL"
        )
    (directory / mf.CATALOG_NAME).unlink()
    raw = mf.to_json(manifest)
    raw |= {"format_version": 2, "catalog": dataclasses.asdict(mf.FileEntry.of(legacy))}
    raw.pop("catalog_id")
    (directory / mf.MANIFEST_NAME).write_text(json.dumps(raw))


def test_format_2_catalog_is_read_then_moved_into_the_database(tmp_path):
    directory = tmp_path / "c"
    with Collection.create(directory, SPEC) as col:
        col.add(unit_rows(6), [Record(f"/a/{i}.jpg", caption="old") for i in range(6)])
        col.record([LedgerEntry("/a/0.jpg", "indexed", run=1)])
        col.commit()
    _as_format_2(directory)
    with Collection.open(directory) as col:
        assert col.info().format_version == 2 and col.count == 6
        assert col.get_records([3])[3].path == "/a/3.jpg"
    with Collection.open(directory, writable=True) as col:
        col.add(unit_rows(1, 2), [Record("/a/0.jpg", caption="new")])
        assert col.commit() == 2
    manifest = mf.read_manifest(directory)
    assert manifest.format_version == 3 and manifest.catalog is None and manifest.catalog_id
    assert not (directory / "catalog.g000001.sqlite").exists()  # swept once unlisted
    with Collection.open(directory) as col:
        assert col.count == 6 and col.ids_for_paths(["/a/0.jpg"]) == {"/a/0.jpg": 6}
        assert len(col.keyword_search("old", k=10)) == 5  # the copied rows are indexed too
        assert col.ledger_for(["/a/0.jpg"])["/a/0.jpg"].run == 1
