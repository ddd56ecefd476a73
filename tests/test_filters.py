"""Search filters: the ``where`` grammar, its errors, and filtered search against brute force."""

from __future__ import annotations

import fnmatch
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from xmodal.errors import FilterError
from xmodal.index import Collection, Record, catalogdb
from xmodal.index import subset as subset_mod
from xmodal.index.filters import Filter, parse_where

SPEC = {"model_id": "tiny/clip", "revision": "abc123", "dim": 32, "device": "cpu"}
N, D = 5000, 32
EXTS = ["jpg", "png", "JPG", "webp"]
T0 = 1_700_000_000.0


def fp16_unit_rows(n: int, d: int, seed: int) -> np.ndarray:
    """Unit rows that float16 stores exactly, so raw-embedding and FAISS scores agree."""
    rows = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows.astype(np.float16).astype(np.float32)


def make_records(n: int) -> list[Record]:
    return [
        Record(
            f"/data/f{i % 100:02d}/img{i:05d}.{EXTS[i % 4]}",
            size=(i * 7919) % 200_000,
            mtime=T0 + 3600.0 * i,
            width=None if i % 97 == 0 else 256 + (i * 13) % 2000,
            height=300 + (i * 31) % 900,
        )
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    """A committed Flat collection of 5000 random rows with varied catalog columns."""
    directory = tmp_path_factory.mktemp("filters") / "c"
    vectors, recs = fp16_unit_rows(N, D, 0), make_records(N)
    with Collection.create(directory, SPEC) as col:
        ids = col.add(vectors, recs)
        col.commit()
    return directory, ids, vectors, recs


CASES = {  # where -> the same predicate written in Python, independent of the SQL
    "path^=/data/f07/": lambda r: r.path.startswith("/data/f07/"),
    "path:/data/f1*/*.png": lambda r: fnmatch.fnmatchcase(r.path, "/data/f1*/*.png"),
    "ext:jpg,webp": lambda r: r.path.lower().endswith((".jpg", ".webp")),
    "size>100000": lambda r: r.size > 100_000,
    "width>=1024 and height<500": lambda r: (
        r.width is not None and r.width >= 1024 and r.height < 500
    ),
    f"mtime>={T0 + 3600 * 4000:.0f}": lambda r: r.mtime >= T0 + 3600 * 4000,
    "mtime<2023-11-16 and ext:png": lambda r: (
        r.mtime < datetime(2023, 11, 16, tzinfo=UTC).timestamp() and r.path.endswith(".png")
    ),
    "width!=1000 and size<=150000": lambda r: (
        r.width is not None and r.width != 1000 and r.size <= 150_000
    ),
}


def brute(vectors, recs, ids, queries, predicate, k):
    keep = np.array([predicate(r) for r in recs])
    scores = queries @ vectors[keep].T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), ids[keep][order], int(keep.sum())


def assert_matches_brute(hits, want_scores, want_ids, allowed) -> None:
    for row, scores, ids in zip(hits, want_scores, want_ids, strict=True):
        assert len(row) == len(scores)
        assert {h.id for h in row} <= allowed
        np.testing.assert_allclose([h.score for h in row], scores, atol=1e-5)
        # ids agree except where neighbouring scores tie within float error
        distinct = np.abs(np.diff(scores, prepend=np.inf, append=-np.inf))
        clear = (distinct[:-1] > 1e-5) & (distinct[1:] > 1e-5)
        assert [h.id for h, c in zip(row, clear, strict=True) if c] == ids[clear].tolist()


@pytest.mark.parametrize("where", sorted(CASES))
@pytest.mark.parametrize("strategy", ["auto", "faiss-selector", "post-filter"])
def test_filtered_search_equals_brute_force(world, where, strategy, monkeypatch) -> None:
    directory, ids, vectors, recs = world
    if strategy != "auto":  # force the FAISS path even for selective filters
        monkeypatch.setattr(subset_mod, "EXACT_MAX", 0)
        monkeypatch.setattr(subset_mod, "EXACT_FRACTION", 0.0)
    if strategy == "post-filter":  # an index type without selector support
        monkeypatch.setattr(subset_mod, "_params_for", lambda index, selector: None)
    queries = fp16_unit_rows(8, D, 1)
    want_scores, want_ids, n_allowed = brute(vectors, recs, ids, queries, CASES[where], 20)
    assert 0 < n_allowed < N
    with Collection.open(directory) as col:
        allowed = set(col.ids_where(where).tolist())
        assert len(allowed) == n_allowed
        hits = col.search(queries, k=20, where=parse_where(where))
    assert_matches_brute(hits, want_scores, want_ids, allowed)


@pytest.mark.parametrize("index_key", ["Flat", "IVF16,Flat", "HNSW16"])
def test_selective_filter_returns_k_hits_when_k_exist(tmp_path, index_key) -> None:
    vectors, recs = fp16_unit_rows(N, D, 2), make_records(N)
    with Collection.create(tmp_path / "c", SPEC, index_key=index_key) as col:
        ids = col.add(vectors, recs)
        col.commit()
        col.remove(ids[:10])  # HNSW cannot drop these from its graph: the filter must
        queries = fp16_unit_rows(5, D, 3)
        hits = col.search(queries, k=50, where="path^=/data/f53/")  # 1% selective: 50 items
        in_f53 = lambda r: r.path.startswith("/data/f53/")  # noqa: E731
        want_scores, want_ids, n = brute(vectors, recs, ids, queries, in_f53, 50)
        assert n == 50
        assert_matches_brute(hits, want_scores, want_ids, set(ids[53::100].tolist()))
        assert all(len(row) == 50 for row in hits)
        with pytest.MonkeyPatch.context() as patch:  # the ANN path, even for 1%
            patch.setattr(subset_mod, "EXACT_MAX", 0)
            patch.setattr(subset_mod, "EXACT_FRACTION", 0.0)
            forced = col.search(queries, k=50, where="path^=/data/f53/")
        assert all(len(row) == 50 for row in forced)  # short ANN rows are answered exactly
        assert {h.id for row in forced for h in row} <= set(ids[53::100].tolist())
        broad = col.search(queries, k=30, where="ext:jpg,png")  # ANN path, ~75% allowed
        removed = set(ids[:10].tolist())
        for row in broad:
            assert len(row) == 30 and not {h.id for h in row} & removed
            assert all(h.record.path.lower().endswith((".jpg", ".png")) for h in row)


def test_filters_see_staged_rows_and_threshold(tmp_path) -> None:
    vectors, recs = fp16_unit_rows(300, D, 4), make_records(300)
    with Collection.create(tmp_path / "c", SPEC) as col:
        col.add(vectors[:200], recs[:200])
        col.commit()
        ids = col.add(vectors[200:], recs[200:])  # staged, not committed
        query = vectors[250]
        top = col.search(query, k=5, where="path^=/data/f50/")[0]
        assert top[0].id == ids[50] and top[0].score == pytest.approx(1.0, abs=1e-3)
        assert {h.record.path for h in top} == {recs[50].path, recs[150].path, recs[250].path}
        strict = col.search(query, k=5, where="path^=/data/f50/", min_score=0.99)[0]
        assert [h.id for h in strict] == [ids[50]]
        unfiltered = col.search(query, k=300, min_score=0.2)[0]
        assert unfiltered and all(h.score >= 0.2 for h in unfiltered)
        assert col.search(query, k=5, where="path^=/nowhere/")[0] == []


def test_empty_filter_means_no_filter(world) -> None:
    directory, *_ = world
    with Collection.open(directory) as col:
        query = fp16_unit_rows(1, D, 5)
        plain = col.search(query, k=7)
        assert col.search(query, k=7, where=Filter()) == plain
        assert col.search(query, k=7, where=[]) == plain
        assert len(col.ids_where(Filter())) == N


@pytest.mark.parametrize(
    ("text", "clauses"),
    [
        ("ext:jpg,PNG", [("ext", ":", ("jpg", "png"))]),
        ("ext:.jpeg", [("ext", ":", ("jpeg",))]),
        ("size>100000 AND width>=1024", [("size", ">", 100000), ("width", ">=", 1024)]),
        ("height < 500", [("height", "<", 500)]),
        ("mtime>=2024-01-01", [("mtime", ">=", 1704067200.0)]),
        ("mtime<2024-01-01T01:00:00+01:00", [("mtime", "<", 1704067200.0)]),
        ("mtime=1700000000.5", [("mtime", "=", 1700000000.5)]),
        ("path^=/photos/trips", [("path", "^=", "/photos/trips")]),
        ("path=/photos/a.jpg", [("path", "=", "/photos/a.jpg")]),
        ("path:*/2023/*", [("path", ":", "*/2023/*")]),
        ("path:2023/*.jpg", [("path", ":", "*/2023/*.jpg")]),
        ('path:"/m/Tom and Jerry/*" and ext:png',
         [("path", ":", "/m/Tom and Jerry/*"), ("ext", ":", ("png",))]),
    ],
)  # fmt: skip
def test_parse_where(text, clauses) -> None:
    parsed = parse_where(text)
    assert [(c.field, c.op, c.value) for c in parsed.clauses] == clauses


def test_parse_where_paths_and_lists() -> None:
    home = str(Path.home())
    assert parse_where("path:~/Pictures/2023/*").clauses[0].value == home + "/Pictures/2023/*"
    assert parse_where("path^=~/x/").clauses[0].value == home + "/x/"
    assert parse_where("path^=rel").clauses[0].value == str(Path("rel").resolve())
    listed = parse_where(["ext:jpg", "size>1 and width<2"])
    assert [c.field for c in listed.clauses] == ["ext", "size", "width"]
    assert str(listed) == "ext:jpg and size>1 and width<2"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sise>1", "bad filter clause 'sise>1': unknown field 'sise'; use one of path, ext"),
        ("size>big", "bad filter clause 'size>big': 'big' is not a number"),
        ("size:5", "bad filter clause 'size:5': size is compared with one of >= <="),
        ("ext=jpg", "bad filter clause 'ext=jpg': ext takes a list after a colon"),
        ("ext:jp g", "bad filter clause 'ext:jp g': extensions are letters and digits"),
        ("ext:jpg;drop table items", "bad filter clause 'ext:jpg;drop table items'"),
        ("mtime>=yesterday", "'yesterday' is neither an ISO date"),
        ("path>/x", "bad filter clause 'path>/x': path takes ':' (glob), '^=' (prefix)"),
        ("width>=", "bad filter clause 'width>=': the value is missing"),
        ("ext:jpg and nonsense", "bad filter clause 'nonsense': expected FIELD OP VALUE"),
        ("", "empty filter ''; write clauses such as"),
    ],
)
def test_parse_where_errors_name_the_clause(text, message) -> None:
    with pytest.raises(FilterError) as caught:
        parse_where(text)
    assert message in str(caught.value)


def test_injection_attempts_are_just_values(world) -> None:
    directory, *_ = world
    with Collection.open(directory) as col:
        assert len(col.ids_where("path:*' OR 1=1 --")) == 0
        assert len(col.ids_where('path="/data/f00/img00000.jpg"; DROP TABLE items')) == 0
        assert col.ids_where("path=/data/f00/img00000.jpg").tolist() == [0]
        assert col.count == N


def test_catalog_without_content_hash_column_still_works(tmp_path) -> None:
    """Catalogs written before content hashes: readable as is, upgraded in a working copy."""
    old = tmp_path / "old.sqlite"
    conn = sqlite3.connect(old)
    conn.execute(
        "CREATE TABLE items (id INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL, size INTEGER,"
        " mtime REAL, caption TEXT, width INTEGER, height INTEGER)"
    )
    conn.execute("INSERT INTO items VALUES (1, '/a.jpg', 10, 1.0, 'cap', 5, 6)")
    conn.commit()
    conn.close()
    committed = catalogdb.open_legacy(old)
    assert committed.get_records([1])[1] == Record("/a.jpg", 10, 1.0, "cap", 5, 6, None)
    assert committed.ids_for_hashes(["ab"]) == {}
    assert committed.ids_where(parse_where("width>=5")).tolist() == [1]
    committed.close()
    (tmp_path / "c").mkdir()
    work, _ = catalogdb.create(tmp_path / "c", 4, old)  # the upgrade into the versioned database
    work.put([2], [Record("/b.jpg", content_hash="ab")])
    assert work.ids_for_hashes(["ab", "cd"]) == {"ab": [2]}
    assert work.get_records([1, 2])[2].content_hash == "ab"
    assert work.get_records([1])[1] == Record("/a.jpg", 10, 1.0, "cap", 5, 6, None)
    work.close()
