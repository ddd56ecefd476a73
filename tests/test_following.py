"""Following a collection: readers swap at new generations, queries keep the one they started on."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from collection_helpers import SPEC, records, unit_rows

from xmodal.errors import CollectionError, XmodalError
from xmodal.index import Collection
from xmodal.pipelines.following import CollectionFollower
from xmodal.pipelines.search import Retriever


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make(root: Path, n: int = 20) -> Path:
    with Collection.create(root / "c", SPEC, index_key="flat") as col:
        col.add(unit_rows(n, 64), records(n, "old"))
        col.commit()
    return root / "c"


def commit_more(directory: Path, n: int = 5, remove_first: bool = False) -> None:
    with Collection.open(directory, writable=True) as col:
        col.add(unit_rows(n, 64, seed=7), records(n, "new"))
        if remove_first:
            col.remove(list(col.ids_for_paths(["old/00000.jpg"]).values()))
        col.commit()


def test_new_generation_is_picked_up_after_the_interval_and_old_reader_closed(tmp_path):
    directory = make(tmp_path)
    clock = Clock()
    follower = CollectionFollower(Collection.open(directory), refresh=2, clock=clock)
    first = follower.current()
    commit_more(directory, remove_first=True)
    assert follower.current() is first  # not due yet: not even a stat
    clock.now = 2.0
    second = follower.current()
    assert second is not first and second.generation == first.generation + 1
    assert second.count == 24 and not second.writable
    with pytest.raises(CollectionError, match="is closed"):
        first.search(unit_rows(1, 64), k=1)  # nobody held it: closed


def test_a_query_in_flight_across_a_swap_sees_one_generation(tmp_path):
    directory = make(tmp_path)
    follower = CollectionFollower(Collection.open(directory), refresh=1, clock=Clock())
    query = unit_rows(1, 64, seed=7)  # the first new row: found once the new rows are seen
    with follower.reading() as reader:
        before = reader.generation
        commit_more(directory, remove_first=True)  # the writer commits mid-query
        assert follower.check()  # ...and the follower swaps
        hits = reader.search(query, k=30)[0]
        records_ = reader.get_records([h.id for h in hits])
        assert reader.generation == before and reader.count == 20
        assert {r.path.split("/")[0] for r in records_.values()} == {"old"}
        assert "old/00000.jpg" in {r.path for r in records_.values()}
    with pytest.raises(CollectionError, match="is closed"):
        reader.search(query, k=1)  # closed when the query let go of it
    with follower.reading() as newer:
        assert newer.generation == before + 1
        assert newer.search(query, k=1)[0][0].record.path == "new/00000.jpg"


class Spec:
    model_id = SPEC["model_id"]

    def to_dict(self) -> dict:
        return dict(SPEC)


class CommittingEncoder:
    """Encodes a query as the first new row; the writer commits while it does (the hook)."""

    spec = Spec()

    def __init__(self, during=None) -> None:
        self.during = during

    def encode_texts(self, texts):
        if self.during is not None:
            self.during()
        return unit_rows(1, 64, seed=7)


def test_retriever_query_started_before_a_swap_finishes_on_its_generation(tmp_path):
    directory = make(tmp_path)
    follower = CollectionFollower(Collection.open(directory), refresh=1, clock=Clock())
    encoder = CommittingEncoder()
    retriever = Retriever(encoder, follower)

    def commit_and_swap() -> None:
        commit_more(directory, remove_first=True)
        assert follower.check()

    encoder.during = commit_and_swap
    result = retriever.search_result("anything", k=30)
    assert (result.generation, result.count) == (1, 20)
    assert {h.record.path.split("/")[0] for h in result.hits} == {"old"}
    encoder.during = None
    result = retriever.search_result("anything", k=1)
    assert (result.generation, result.count) == (2, 24)
    assert result.hits[0].record.path == "new/00000.jpg"
    assert retriever.describe()["count"] == 24


def test_a_damaged_new_generation_is_logged_and_the_old_one_kept(tmp_path, caplog):
    directory = make(tmp_path)
    follower = CollectionFollower(Collection.open(directory), refresh=1, clock=Clock())
    path = directory / "manifest.json"
    raw = json.loads(path.read_text())
    raw["generation"] += 1
    text = json.dumps(raw)
    names = [entry["name"] for entry in _entries(raw)]
    assert names, "the manifest lists files"
    path.write_text(text.replace(names[0], "missing-" + names[0]))
    with caplog.at_level(logging.ERROR, logger="xmodal.pipelines.following"):
        assert not follower.check()
    assert "still serving generation 1 of" in caplog.text and "the new one failed" in caplog.text
    with follower.reading() as reader:
        assert reader.generation == 1
        assert len(reader.search(unit_rows(1, 64), k=3)[0]) == 3


def test_a_new_generation_refused_by_accept_keeps_the_old(tmp_path, caplog):
    directory = make(tmp_path)
    follower = CollectionFollower(Collection.open(directory), refresh=1, clock=Clock())

    def refuse(reader):
        raise XmodalError("built with another encoder")

    follower.accept(refuse)
    commit_more(directory)
    with caplog.at_level(logging.ERROR):
        assert not follower.check()
    assert "built with another encoder" in caplog.text
    assert follower.generation == 1


def test_refresh_zero_never_checks_and_negative_is_refused(tmp_path):
    directory = make(tmp_path)
    clock = Clock()
    follower = CollectionFollower(Collection.open(directory), refresh=0, clock=clock)
    commit_more(directory)
    clock.now = 1e9
    assert follower.current().generation == 1
    with pytest.raises(XmodalError, match="must be 0 \\(never\\) or a number of seconds, got -1"):
        CollectionFollower(Collection.open(directory), refresh=-1)


def _entries(raw: dict) -> list[dict]:
    """Every file entry (a dict with a name and a checksum) anywhere in a manifest."""
    found: list[dict] = []
    stack: list = [raw]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "name" in item and ("sha256" in item or "size" in item):
                found.append(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found
