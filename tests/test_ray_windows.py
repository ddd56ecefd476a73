"""The driver side of a Ray run, without a cluster: windows, replay, resume and driver memory.

The cluster stage is replaced by a function that writes each shard as the embedding stage would,
so these tests exercise exactly what the driver does with a run of any size.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from collection_helpers import unit_rows

from xmodal.index import Collection, durable
from xmodal.pipelines.accounting import RunBook
from xmodal.pipelines.distributed.shards import EMBEDDED, FAILED, ShardRow, ShardStore
from xmodal.pipelines.distributed.windows import cut_windows, run_windows
from xmodal.pipelines.sources import Item, Skipped

DIM = 16
SPEC = {"model_id": "tiny/clip", "revision": "abc123", "dim": DIM, "device": "cpu"}
ROOT = "/mnt/archive/photos/2019/summer-holiday/camera-roll"
SOURCES = [ROOT]


def _inputs(n: int) -> Iterator[Item | Skipped]:
    """n items, lazily, with a skipped input after every tenth (paths of a realistic length)."""
    for i in range(n):
        yield Item(f"{ROOT}/IMG_{i:06d}.jpg", 100 + i, 1.0)
        if i % 10 == 9:
            yield Skipped(f"{ROOT}/IMG_{i:06d}.txt", "not-an-image")


def _number(uri: str) -> int:
    return int(uri[-10:-4])


def _vector(uri: str) -> np.ndarray:
    return unit_rows(1, DIM, seed=_number(uri))[0]


def _fake_cluster(store: ShardStore, seen: list[int]):
    """Writes each shard as the embedding stage would; every 25th input fails to decode."""

    def embed(pending) -> None:
        # What the driver holds, not when the cyclic collector runs (catalog writes leave
        # cycles behind; in a real run seconds of cluster work pass here).
        gc.collect()
        for shard in pending:
            seen.append(shard.plan.index)
            rows, vectors = [], []
            for item, skip in zip(shard.plan.items, shard.no_work, strict=True):
                number = _number(item.uri)
                if skip:
                    rows.append(ShardRow(item.uri, "not-embedded"))
                elif number % 25 == 0:
                    rows.append(ShardRow(item.uri, FAILED, reason="not-an-image", message="bad",
                                         content_hash=f"h{number}"))  # fmt: skip
                else:
                    rows.append(ShardRow(item.uri, EMBEDDED, len(vectors), width=8, height=8,
                                         content_hash=f"h{number}"))  # fmt: skip
                    vectors.append(_vector(item.uri))
            store.write(shard.plan, rows, np.array(vectors, np.float32).reshape(-1, DIM))

    return embed


def _run(directory: Path, inputs, *, window: int, shard: int = 32, every: int = 32, embed=None):
    """One driver run over ``inputs``; returns (totals, shards computed)."""
    with Collection.open(directory, writable=True) as collection:
        store = ShardStore(directory)
        store.prepare()
        seen: list[int] = []
        book = RunBook.start(collection, SOURCES, every)
        windows = cut_windows(inputs, shard, window, salt="model")
        totals = run_windows(None, book, windows, store, embed or _fake_cluster(store, seen))
        book.finish(0)
        store.clear()
    return totals, seen


def _replay_peak(tmp_path: Path, n: int, window: int, shard: int = 32) -> int:
    directory = tmp_path / f"c{n}-{window}"
    Collection.create(directory, SPEC).close()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        _run(directory, _inputs(n), window=window, shard=shard, every=shard * 2)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_driver_memory_of_a_run_does_not_grow_with_its_size(tmp_path: Path, monkeypatch) -> None:
    """The Python heap peak of the driver (tracemalloc) at 200 and 3,000 inputs.

    Checksumming reads files in 4 MiB blocks, a constant that would hide the rest: pinned.
    What still grows in a windowed run is the collection's: an 8-byte id per row, the state of
    its segments and the rows of a merge (bounded by the tiered policy; docs/ray.md sizes it).
    """
    monkeypatch.setattr(durable, "CHUNK", 64 * 1024)
    _replay_peak(tmp_path / "warm-up", 40, 1)  # lazy imports and caches are not the run's

    def per_input(window: int) -> float:
        small = _replay_peak(tmp_path, 200, window, shard=64)
        large = _replay_peak(tmp_path, 3000, window, shard=64)
        return (large - small) / 2800

    # Windowed (128 inputs a window): measured 102 bytes per input, the collection's share.
    windowed = per_input(2)
    assert windowed < 160, windowed
    # The same runs as one window (the driver before: the whole input list at once) grow by
    # every input's Item and shard plan, so the measurement above can tell the difference.
    whole = per_input(10**6)
    assert whole > 400 and whole > 3 * windowed, (whole, windowed)


def _state(directory: Path):
    with Collection.open(directory) as collection:
        ids, vectors = collection.raw_embeddings()
        records = collection.get_records(ids)
        ledger = sorted((e.uri, e.status, e.reason) for e in collection.ledger())
    return ids, vectors, [records[i] for i in ids], ledger


def test_windows_give_the_one_window_result_and_a_kill_resumes_to_it(tmp_path: Path) -> None:
    for name in ("one", "windows", "killed"):
        Collection.create(tmp_path / name, SPEC).close()
    _run(tmp_path / "one", _inputs(150), window=10**6, shard=16)
    totals, seen = _run(tmp_path / "windows", _inputs(150), window=2, shard=16)
    assert (totals.shards, totals.computed, totals.reused) == (10, 10, 0)
    assert seen == list(range(10))  # shards numbered across windows

    def dies_in_third_window(store: ShardStore):
        real = _fake_cluster(store, [])

        def embed(pending) -> None:
            if pending and pending[0].plan.index == 4:
                real(pending[:1])  # one finished shard of the window, then the kill
                raise KeyboardInterrupt
            real(pending)

        return embed

    store = ShardStore(tmp_path / "killed")
    with pytest.raises(KeyboardInterrupt):
        _run(
            tmp_path / "killed", _inputs(150), window=2, shard=16, embed=dies_in_third_window(store)
        )
    assert sorted(p.name for p in store.directory.glob("*.done.json")) == ["shard-000004.done.json"]
    totals, seen = _run(tmp_path / "killed", _inputs(150), window=2, shard=16)
    assert (totals.shards, totals.reused) == (10, 1)
    assert 4 not in seen and {5, 6, 7, 8, 9} <= set(seen)

    want = _state(tmp_path / "one")
    for name in ("windows", "killed"):
        got = _state(tmp_path / name)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
        assert got[2] == want[2] and got[3] == want[3]
    assert len(want[0]) == 150 - 6  # items 0, 25, ..., 125 failed
    assert (f"{ROOT}/IMG_000025.jpg", "failed", "not-an-image") in want[3]
    assert (f"{ROOT}/IMG_000009.txt", "skipped", "not-an-image") in want[3]
