"""Duplicates and outliers on a collection of hand-made vectors: groups, keepers, outputs, CLI."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from curation_helpers import COS_CHAIN, build_planted, planted
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from xmodal.cli import main
from xmodal.errors import XmodalError
from xmodal.index import Collection, Record
from xmodal.index.components import UnionFind
from xmodal.index.neighbours import NeighbourPlan, gather, nearest_neighbours
from xmodal.pipelines.curation import (
    DuplicateConfig,
    OutlierConfig,
    choose_keeper,
    find_duplicates,
    find_outliers,
)


@pytest.fixture(scope="module")
def col_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_planted(tmp_path_factory.mktemp("curation"))


@pytest.fixture
def col(col_dir: Path):
    with Collection.open(col_dir) as collection:
        yield collection


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _ids(report) -> list[list[int]]:
    """Per group: the keeper, then the other members by id."""
    return [[g.keeper.id, *sorted(m.id for m in g.members[1:])] for g in report.groups]


def test_groups_exact_near_and_chained(col) -> None:
    report = find_duplicates(col, DuplicateConfig(threshold=0.95, keep="first"))
    assert _ids(report) == [[2, 3, 4, 5], [8, 9, 10], [0, 1]]
    assert [g.kind for g in report.groups] == ["near", "near", "exact"]
    assert report.considered == 40 and report.dropped_ids == {1, 3, 4, 5, 9, 10}
    chain = report.groups[1]
    # 8~9 and 9~10 are links; 8 and 10 are not, yet share the group and say how far they are.
    assert [m.score for m in chain.members] == pytest.approx(
        [1.0, COS_CHAIN, 2 * COS_CHAIN**2 - 1], abs=2e-3
    )
    assert chain.members[2].score < 0.95
    assert report.groups[2].members[1].score == 1.0
    # At 1.0 only byte-identical copies remain (their vectors are equal too).
    assert _ids(find_duplicates(col, DuplicateConfig(threshold=1.0))) == [[0, 1]]


@pytest.mark.parametrize(
    ("rule", "keeper"), [("largest", 3), ("oldest", 5), ("newest", 4), ("first", 2)]
)
def test_each_keep_rule_picks_its_member(col, rule: str, keeper: int) -> None:
    group = find_duplicates(col, DuplicateConfig(keep=rule)).groups[0]
    assert group.keeper.id == keeper and group.keeper.score == 1.0
    scores = [m.score for m in group.members[1:]]
    assert scores == sorted(scores, reverse=True) and min(scores) >= 0.95


def test_keeper_policy_unknowns_rank_last_and_ties_go_to_the_lowest_id() -> None:
    known = Record("a", size=10, width=2, height=2, mtime=5.0)
    unknown = Record("b", size=None, width=None, height=None, mtime=None)
    assert choose_keeper({9: unknown, 4: known}, "largest") == 4
    assert choose_keeper({9: unknown, 4: known}, "oldest") == 4
    assert choose_keeper({9: unknown, 4: known}, "newest") == 4
    bytes_only = Record("c", size=99)
    assert choose_keeper({1: Record("d", size=5), 2: bytes_only}, "largest") == 2
    assert choose_keeper({7: known, 3: known}, "largest") == 3
    with pytest.raises(XmodalError, match="unknown keep rule 'biggest'; use one of largest"):
        choose_keeper({1: known}, "biggest")


def test_clustered_search_finds_the_same_groups(col) -> None:
    clustered = find_duplicates(col, DuplicateConfig(exact_max=10, keep="first"))
    assert not clustered.plan.exact and clustered.plan.clusters == 6
    assert _ids(clustered) == [[2, 3, 4, 5], [8, 9, 10], [0, 1]]


def test_where_narrows_the_items_considered(col) -> None:
    report = find_duplicates(col, DuplicateConfig(where="path:/p/b/*"))
    assert report.considered == 4 and _ids(report) == [[3, 2, 4, 5]]
    with pytest.raises(XmodalError) as caught:
        find_duplicates(col, DuplicateConfig(where="path:/nowhere/*"))
    assert str(caught.value) == "no item of the collection matches the filter 'path:/nowhere/*'"


def _brute_outliers(col, k: int):
    ids, rows = col.raw_embeddings()
    order = np.argsort(ids)
    vectors = gather(rows, order)
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    top = -np.sort(-sims, axis=1)[:, :k]
    return ids[order], 1.0 - top.mean(axis=1), top


def test_outliers_match_numpy_brute_force(col) -> None:
    report = find_outliers(col, OutlierConfig(top=40, k=3))
    ids, scores, top = _brute_outliers(col, 3)
    expected = np.lexsort((ids, -scores))
    assert [o.id for o in report.outliers] == ids[expected].tolist()
    np.testing.assert_allclose([o.score for o in report.outliers], scores[expected], atol=1e-5)
    first = report.outliers[0]
    assert len(first.neighbours) == 3 and first.score == pytest.approx(
        1 - np.mean([n.score for n in first.neighbours]), abs=1e-5
    )
    np.testing.assert_allclose([n.score for n in first.neighbours], top[expected[0]], atol=1e-5)
    # The byte-identical pair is each other's nearest neighbour at cosine 1.
    pair = next(o for o in report.outliers if o.id == 1)
    assert pair.neighbours[0].id == 0 and pair.neighbours[0].score == pytest.approx(1.0)


def test_clustered_neighbours_probing_every_list_equal_brute_force(col) -> None:
    ids, rows = col.raw_embeddings()
    positions = np.argsort(ids)
    exact = nearest_neighbours(rows, positions, 4, NeighbourPlan())
    every = nearest_neighbours(rows, positions, 4, NeighbourPlan(clusters=6, probes=6))
    np.testing.assert_allclose(every[0], exact[0], atol=1e-6)
    one = nearest_neighbours(rows, positions, 4, NeighbourPlan(clusters=6, probes=1))
    assert (one[1] >= 0).all() and np.isfinite(one[0]).all()  # short lists searched again
    assert (one[0] <= exact[0] + 1e-6).all()  # never better than the truth


def test_union_find_matches_scipy_components() -> None:
    rng = np.random.default_rng(3)
    n = 500
    a, b = rng.integers(0, n, 400), rng.integers(0, n, 400)
    links = UnionFind(n)
    for start in range(0, 400, 37):  # edges arrive in batches
        links.union(a[start : start + 37], b[start : start + 37])
    graph = coo_matrix((np.ones(400), (a, b)), shape=(n, n))
    count, labels = connected_components(graph, directed=False)
    ours = links.labels()
    assert len(np.unique(ours)) == count
    # Same partition: the label maps are bijections.
    assert len({(x, y) for x, y in zip(ours, labels, strict=True)}) == count
    groups = links.components()
    assert sum(len(g) for g in groups) == sum(np.bincount(labels)[np.bincount(labels) > 1])


def test_cli_json_csv_and_keep_list(col_dir: Path, tmp_path: Path, capsys) -> None:
    before = sorted(p.name for p in col_dir.iterdir())
    manifest = (col_dir / "manifest.json").read_bytes()
    code, out, err = run(capsys, "duplicates", "-c", col_dir, "--json", "--keep", "largest")
    assert code == 0, err
    data = json.loads(out.encode("utf-8").decode("utf-8"))  # strict UTF-8 on the way out
    assert [g["kind"] for g in data["groups"]] == ["near", "near", "exact"]
    first = data["groups"][0]
    assert first["keep"] == "/p/b/caf\\xe9.jpg"
    assert set(first) == {"kind", "keep", "members"}
    assert set(first["members"][0]) == {"id", "path", "score"}
    assert [m["id"] for m in first["members"]][0] == 3 and first["members"][0]["score"] == 1.0

    keep = tmp_path / "keep.txt"
    report_csv = tmp_path / "groups.csv"
    code, out, err = run(
        capsys, "duplicates", "-c", col_dir, "--csv", report_csv, "--write-keep", keep
    )
    assert code == 0, err
    assert "3 groups, 6 duplicates among 40 items (threshold 0.95, keep largest" in out
    rows = list(csv.DictReader(io.StringIO(report_csv.read_text("utf-8"))))
    assert len(rows) == 9 and rows[0] == {
        "group": "1",
        "kind": "near",
        "keep": "1",
        "id": "3",
        "path": "/p/b/caf\\xe9.jpg",
        "score": "1.0",
    }
    vectors, recs = planted()
    dropped = {2, 4, 5, 8, 9, 1}  # largest: 3 (pixels) in B, 10 (bytes) in the chain, 0 (id)
    expected = [os.fsencode(r.path) for i, r in enumerate(recs) if i not in dropped]
    assert keep.read_bytes().split(b"\n")[:-1] == expected
    assert b"/p/b/caf\xe9.jpg" in expected  # the file name's own bytes
    assert sorted(p.name for p in col_dir.iterdir()) == before
    assert (col_dir / "manifest.json").read_bytes() == manifest

    code, out, err = run(
        capsys, "duplicates", "-c", col_dir, "--where", "path:/p/b/*", "--write-keep", keep
    )
    assert code == 0 and "1 group, 3 duplicates among 4 items" in out
    assert keep.read_bytes() == b"/p/b/caf\xe9.jpg\n"


def test_cli_outliers_text_and_json(col_dir: Path, capsys) -> None:
    code, out, err = run(capsys, "outliers", "-c", col_dir, "--top", "2", "--k", "3", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["k"] == 3 and data["considered"] == 40 and len(data["outliers"]) == 2
    row = data["outliers"][0]
    assert set(row) == {"id", "path", "score", "neighbours"} and len(row["neighbours"]) == 3
    assert set(row["neighbours"][0]) == {"id", "path", "score"}
    code, out, _ = run(capsys, "outliers", "-c", col_dir, "--top", "1")
    assert code == 0 and "nearest:" in out and "1 most isolated of 40 items" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["duplicates", "--threshold", "1.5"], "threshold must be in (-1, 1], got 1.5"),
        (["duplicates", "--threshold", "-1"], "threshold must be in (-1, 1], got -1"),
        (["duplicates", "--threshold", "nan"], "threshold must be in (-1, 1], got nan"),
        (["outliers", "--top", "0"], "top must be at least 1, got 0"),
        (["outliers", "--k", "0"], "k must be at least 1, got 0"),
    ],
)
def test_bad_arguments_are_one_line(col_dir: Path, capsys, argv, message) -> None:
    code, out, err = run(capsys, *argv, "-c", col_dir)
    assert (code, out, err) == (1, "", f"xmodal: error: {message}\n")


def test_empty_collection_is_one_line(tmp_path: Path, capsys) -> None:
    from collection_helpers import SPEC

    Collection.create(tmp_path / "empty", SPEC).close()
    for command in ("duplicates", "outliers"):
        code, out, err = run(capsys, command, "-c", tmp_path / "empty")
        expected = f"xmodal: error: collection {tmp_path / 'empty'} is empty: there is nothing "
        assert (code, out, err) == (1, "", expected + "to compare\n")
