"""Search tuning against numpy brute force, and auto index choice inside a collection."""

from __future__ import annotations

import json
import logging
import re

import faiss
import numpy as np
import pytest

from xmodal import cli
from xmodal.index import Collection, Record, choice, speed, tuning

SPEC = {"model_id": "tiny/clip", "dim": 32}


def mixture(n: int, d: int, seed: int = 0, clusters: int = 40) -> np.ndarray:
    """Unit rows drawn around ``clusters`` random centres: clustered like real embeddings."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d)).astype(np.float32)
    rows = centres[rng.integers(0, clusters, n)] + 0.6 * rng.standard_normal((n, d))
    rows = rows.astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def built(factory: str, vectors: np.ndarray) -> tuple[faiss.IndexIDMap2, np.ndarray]:
    ids = np.arange(1000, 1000 + len(vectors), dtype=np.int64)
    index = faiss.IndexIDMap2(
        faiss.index_factory(vectors.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    )
    index.train(vectors)
    index.add_with_ids(vectors, ids)
    return index, ids


def check_against_brute_force(search, vectors, ids, queries, k: int = 10) -> float:
    """Recall@k of ``search`` versus numpy; every returned score must be the true inner product."""
    exact = queries @ vectors.T
    truth = ids[np.argsort(-exact, axis=1)[:, :k]]
    scores, found = search(queries, k)
    position = {int(i): p for p, i in enumerate(ids)}
    for q in range(len(queries)):
        for score, i in zip(scores[q], found[q], strict=True):
            assert score == pytest.approx(exact[q, position[int(i)]], abs=2e-3)
    return tuning.recall_at_k(found, truth)


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return mixture(20_000, 64)


@pytest.mark.parametrize("kind", ["ivf-flat", "hnsw"])
def test_tuning_reaches_target_recall(data, kind):
    factory = choice.choose_index(len(data), 64, kind=kind).factory
    index, ids = built(factory, data)
    result = tuning.tune_search(index, data, ids, target_recall=0.95, k=10)
    assert result.reached_target and result.recall >= 0.95
    assert result.sample_size == 1000 and result.queries_per_s > 0
    name = "nprobe" if kind == "ivf-flat" else "efSearch"
    assert list(result.params) == [name]
    # fresh queries (another seed), scored by numpy brute force: the recall holds up
    queries = tuning.sample_queries(data, 300, seed=7)
    assert check_against_brute_force(index.search, data, ids, queries) >= 0.93


def test_flat_needs_no_tuning(data):
    index, ids = built("Flat", data[:2000])
    assert tuning.tune_search(index, data[:2000], ids) == tuning.TuningResult()


def test_unreachable_target_reports_the_best(data, caplog):
    vectors = data[:5000]
    index, ids = built("IVF16,PQ4x4", vectors)  # 2-byte codes: recall@10 stays far below 0.95
    with caplog.at_level(logging.WARNING, logger="xmodal.index.tuning"):
        result = tuning.tune_search(index, vectors, ids, sample_size=200)
    assert not result.reached_target and result.recall < 0.95
    assert faiss.extract_index_ivf(index).nprobe == result.params["nprobe"]  # best one applied
    queries = tuning.sample_queries(vectors, 200, seed=0)  # the same queries tuning used
    truth = tuning.exact_top_k(vectors, ids, queries, 10)
    for nprobe in (1, 2, 4, 8, 16):  # no grid value beats the reported best
        tuning.apply_params(index, {"nprobe": nprobe})
        assert tuning.recall_at_k(index.search(queries, 10)[1], truth) <= result.recall + 1e-9
    assert "could not reach" not in caplog.text  # the collection warns if it keeps the index


def test_exact_top_k_matches_argsort(data):
    vectors, ids = data[:3000], np.arange(3000, dtype=np.int64) * 3
    queries = tuning.sample_queries(vectors, 50, seed=1)
    want = ids[np.argsort(-(queries @ vectors.T), axis=1)[:, :10]]
    got = tuning.exact_top_k(vectors, ids, queries, 10)
    assert tuning.recall_at_k(got, want) == 1.0


def records(n: int, start: int = 0) -> list[Record]:
    return [Record(f"img/{start + i:05d}.jpg") for i in range(n)]


def ann_faster(monkeypatch) -> list[int]:
    """Inject the speed check: the ANN index measures faster than exact search."""
    calls = []

    def measure(*args):
        calls.append(1)
        return speed.SpeedCheck(ann_ms=0.1, exact_ms=1.0)

    monkeypatch.setattr(speed, "measure", measure)
    return calls


def test_auto_collection_switches_kind_when_it_grows(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(choice, "FLAT_MAX_VECTORS", 1000)
    ann_faster(monkeypatch)
    vectors = mixture(2500, 32, seed=3)
    with Collection.create(tmp_path / "c", SPEC) as col:
        first = col.add(vectors[:600], records(600))
        col.commit()
        info = col.info()
        assert (info.index_key, info.index_factory, info.recall_at_10) == ("auto", "Flat", 1.0)
        second = col.add(vectors[600:], records(1900, start=600))
        col.commit()
        info = col.info()
    ids = np.concatenate([first, second])
    assert (info.index_factory, info.count) == ("HNSW32", 2500)
    assert info.recall_at_10 >= 0.95 and info.tuning_sample_size == 1000
    assert list(info.search_params) == ["efSearch"]
    assert info.index_bytes == (tmp_path / "c" / "seg000002-0.index.faiss").stat().st_size
    with Collection.open(tmp_path / "c") as col:  # params survive reopening
        assert col.info().search_params == info.search_params
        largest = max(col._store.segments, key=lambda s: s.live)
        inner = faiss.downcast_index(largest.index.index)  # the loaded FAISS index itself
        assert inner.hnsw.efSearch == info.search_params["efSearch"]
        assert sorted(col.get_records(ids)) == ids.tolist()  # every id kept across the rebuild

        def search(queries, k):
            hits = col.search(queries, k)
            return (
                np.array([[h.score for h in row] for row in hits]),
                np.array([[h.id for h in row] for row in hits]),
            )

        queries = tuning.sample_queries(vectors, 200, seed=11)
        assert check_against_brute_force(search, vectors, ids, queries) >= 0.93
    assert cli.main(["info", "-c", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "factory     HNSW32" in out and "search      efSearch=" in out
    assert re.search(r"recall@10   \d\.\d{3} \(measured on 1000 sample queries\)", out)
    assert cli.main(["info", "-c", str(tmp_path / "c"), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["search_params"] == info.search_params and shown["index_bytes"] > 0


def test_budget_pressure_and_set_index_rebuild(tmp_path, monkeypatch):
    monkeypatch.setattr(choice, "FLAT_MAX_VECTORS", 1000)
    ann_faster(monkeypatch)
    vectors = mixture(2000, 32, seed=5)
    # 500 kB: the HNSW graph of 2000 rows (~880 kB) does not fit, IVF-Flat (~380 kB) does
    with Collection.create(tmp_path / "c", SPEC, memory_budget=500_000) as col:
        ids = col.add(vectors, records(2000))
        col.commit()
        info = col.info()
        assert (info.index_factory, list(info.search_params)) == ("IVF32,Flat", ["nprobe"])
        assert info.recall_at_10 >= 0.95 and info.memory_budget == 500_000
        col.set_index("flat")  # no new rows: the commit rebuilds the index alone
        assert col.commit() == 2
        info = col.info()
        assert (info.index_key, info.index_factory, info.search_params) == ("flat", "Flat", {})
        assert sorted(col.get_records(ids)) == ids.tolist()
        hits = col.search(vectors[:20], k=1)
        assert [row[0].id for row in hits] == ids[:20].tolist()


def test_cli_index_key_and_budget(tmp_path, captioned_photos, tiny_clip_dir, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    for photo in captioned_photos[:6]:
        (folder / photo.name).write_bytes(photo.read_bytes())
    col = tmp_path / "c"
    base = ["index", str(folder), "-c", str(col), "--model", str(tiny_clip_dir), "--workers", "0"]
    assert cli.main([*base, "--index", "hnsw", "--memory-budget", "4GB"]) == 0
    with Collection.open(col) as opened:
        info = opened.info()
    assert (info.index_key, info.index_factory, info.memory_budget) == ("hnsw", "HNSW32", 4 * 10**9)
    assert list(info.search_params) == ["efSearch"] and info.recall_at_10 >= 0.95
    assert cli.main([*base, "--index", "Flat"]) == 0  # nothing new: the index alone is rebuilt
    with Collection.open(col) as opened:
        info = opened.info()
    assert (info.index_key, info.index_factory, info.count) == ("Flat", "Flat", 6)
    assert cli.main([*base, "--memory-budget", "lots"]) == 1
    assert "cannot read the size 'lots'; write it like 4GB" in capsys.readouterr().err


FAST = speed.SpeedCheck(ann_ms=0.1, exact_ms=1.0)
SLOW = speed.SpeedCheck(ann_ms=1.0, exact_ms=1.0)  # equal medians: not faster


@pytest.mark.parametrize(
    ("auto", "factory", "fits", "reached", "timing", "exact"),
    [
        (True, "HNSW32", True, True, FAST, False),
        (True, "HNSW32", True, True, SLOW, True),
        (True, "HNSW32", True, False, None, True),  # missed recall: exact is exact
        (True, "HNSW32", False, True, SLOW, False),  # Flat over the budget: not an option
        (True, "HNSW32", False, False, None, False),
        (False, "HNSW32", True, True, SLOW, False),  # asked for by kind or factory: kept
        (True, "Flat", True, True, SLOW, False),
        (True, "IVF64,Flat", True, True, SLOW, True),
    ],
)
def test_exact_wins_unless_the_ann_is_faster(auto, factory, fits, reached, timing, exact):
    reason = speed.exact_reason(
        auto=auto, factory=factory, flat_fits=fits, reached_target=reached, speed=timing
    )
    assert (reason is not None) == exact
    if timing is SLOW and exact:
        assert reason == (
            f"exact search (1.000 ms/query) is as fast as {factory} (1.000 ms/query) at the "
            "recall target"
        )


def test_auto_keeps_exact_when_the_ann_is_not_faster(tmp_path, monkeypatch):
    monkeypatch.setattr(choice, "FLAT_MAX_VECTORS", 1000)
    calls = []
    monkeypatch.setattr(speed, "measure", lambda *args: calls.append(1) or SLOW)
    vectors = mixture(2200, 32, seed=4)
    with Collection.create(tmp_path / "c", SPEC) as col:
        ids = col.add(vectors[:2000], records(2000))
        col.commit()
        info = col.info()
        assert (info.index_factory, info.search_params, info.recall_at_10) == ("Flat", {}, 1.0)
        assert len(calls) == 1
        more = col.add(vectors[2000:2100], records(100, start=2000))  # 5% more: not re-measured
        col.commit()
        assert col.info().index_factory == "Flat" and len(calls) == 1
    ids = np.concatenate([ids, more])
    with Collection.open(tmp_path / "c") as col:
        assert all(s.flat for s in col._store.segments) and len(col._store.segments) == 2
        hits = col.search(vectors[:50], k=5)
        exact = np.argsort(-(vectors[:50] @ vectors[:2100].T), axis=1)[:, :5]
        assert [[h.id for h in row] for row in hits] == ids[exact].tolist()


@pytest.mark.parametrize(("key", "warned"), [("auto", False), ("hnsw", True)])
def test_recall_warning_only_for_an_index_that_is_kept(tmp_path, monkeypatch, caplog, key, warned):
    monkeypatch.setattr(choice, "FLAT_MAX_VECTORS", 1000)
    missed = tuning.TuningResult({"efSearch": 4096}, 0.442, 10, 1000, 50.0, False)
    monkeypatch.setattr(tuning, "tune_search", lambda *args, **kwargs: missed)
    with Collection.create(tmp_path / "c", SPEC, index_key=key) as col:
        col.add(mixture(1500, 32, seed=6), records(1500))
        with caplog.at_level(logging.WARNING, logger="xmodal.index"):
            col.commit()
        assert col.info().index_factory == ("HNSW32" if warned else "Flat")
    message = "HNSW32 could not reach recall@10 0.95; best 0.442 at {'efSearch': 4096}"
    assert (message in caplog.text) == warned
    assert warned or "could not reach" not in caplog.text


def test_an_index_asked_for_is_kept_even_where_exact_is_faster(tmp_path, monkeypatch):
    monkeypatch.setattr(speed, "measure", lambda *args: SLOW)
    with Collection.create(tmp_path / "c", SPEC) as col:  # auto: Flat at this size
        col.add(mixture(600, 32, seed=7), records(600))
        col.commit()
        col.set_index("HNSW16")  # the manifest still says auto until this commit
        col.commit()
        assert col.info().index_factory == "HNSW16"


def spy_exact_scans(monkeypatch) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Record (rows shape, queries shape) of every exact.top_k call."""
    from xmodal.index import exact

    calls = []
    real = exact.top_k

    def counted(*args, **kwargs):
        calls.append((args[0].shape, args[2].shape))
        return real(*args, **kwargs)

    monkeypatch.setattr(exact, "top_k", counted)
    return calls


def test_the_speed_check_times_the_exact_scan_a_flat_collection_runs(monkeypatch):
    """The ANN is compared with xmodal's exact path (exact.top_k), not FAISS's IndexFlatIP."""
    rows = mixture(500, 16)
    calls = spy_exact_scans(monkeypatch)
    monkeypatch.setattr(
        faiss, "IndexFlatIP", lambda *a: pytest.fail("the exact side must not be IndexFlatIP")
    )
    index = faiss.IndexHNSWFlat(16, 8, faiss.METRIC_INNER_PRODUCT)
    index.add(rows)
    check = speed.measure(index, rows, rows[:40], k=10)
    assert len(calls) == speed.TIMING_REPEATS
    assert all(call == ((500, 16), (speed.TIMING_QUERIES, 16)) for call in calls)
    assert check.ann_ms > 0 and check.exact_ms > 0


def test_over_many_rows_the_exact_scan_is_timed_on_a_prefix_and_scaled(monkeypatch):
    """A float32 copy of every row only to time it would cost n * 4d bytes: the first
    EXACT_TIMING_ROWS are scanned and the time scaled by the row count (a linear scan)."""
    from xmodal.index.rowset import Piece, RowSet

    rows = mixture(400, 16)
    calls = spy_exact_scans(monkeypatch)
    monkeypatch.setattr(speed, "EXACT_TIMING_ROWS", 100)
    monkeypatch.setattr(speed, "_median_ms", lambda search, queries: (search(queries), 2.0)[1])
    index = faiss.IndexHNSWFlat(16, 8, faiss.METRIC_INNER_PRODUCT)
    index.add(rows)
    half = RowSet([Piece(rows[:200].astype(np.float16)), Piece(rows[200:])], np.asarray, 16)
    check = speed.measure(index, half, rows[:40], k=10)
    assert [rows_shape for rows_shape, _ in calls] == [(100, 16)]
    assert (check.ann_ms, check.exact_ms, check.exact_rows_timed) == (2.0, 8.0, 100)


def test_tuning_stops_where_recall_stops_growing(data, monkeypatch):
    """PQ codes cap recall: once a doubling gains under PLATEAU_GAIN the grid ends there."""
    vectors = data[:5000]
    index, ids = built("IVF64,PQ4x4", vectors)
    tried: list[float] = []
    real = tuning.recall_at_k
    monkeypatch.setattr(tuning, "recall_at_k", lambda f, t: tried.append(real(f, t)) or tried[-1])
    result = tuning.tune_search(index, vectors, ids, sample_size=200)
    assert not result.reached_target
    gains = np.diff(tried)
    assert len(tried) < 7  # nprobe 1, 2, ... stopped before nlist (64, the 7th value)
    assert gains[-1] < tuning.PLATEAU_GAIN and (gains[:-1] >= tuning.PLATEAU_GAIN).all()
    assert result.recall == max(tried)
