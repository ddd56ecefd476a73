"""Embedding shards and the Ray import, without starting a cluster."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from xmodal.errors import XmodalError
from xmodal.pipelines.distributed.ray_runtime import import_ray
from xmodal.pipelines.distributed.shards import (
    EMBEDDED,
    FAILED,
    ShardRow,
    ShardStore,
    plan_shards,
)
from xmodal.pipelines.sources import Item


def _items(n: int, mtime: float = 1.0) -> list[Item]:
    return [Item(f"/photos/{i:03d}.jpg", 100 + i, mtime) for i in range(n)]


def test_shards_cut_inputs_in_order_and_fingerprint_what_they_hold() -> None:
    plans = list(plan_shards(_items(10), 4, salt="model-a"))
    assert [len(p.items) for p in plans] == [4, 4, 2]
    assert [p.items[0].uri for p in plans] == [
        "/photos/000.jpg",
        "/photos/004.jpg",
        "/photos/008.jpg",
    ]
    again = list(plan_shards(_items(10), 4, salt="model-a"))
    assert [p.fingerprint for p in plans] == [p.fingerprint for p in again]
    touched = list(plan_shards(_items(10, mtime=2.0), 4, salt="model-a"))
    other_model = list(plan_shards(_items(10), 4, salt="model-b"))
    for changed in (touched, other_model):
        assert not {p.fingerprint for p in plans} & {p.fingerprint for p in changed}
    with pytest.raises(ValueError, match="at least 1"):
        list(plan_shards(_items(3), 0, salt=""))


def test_a_committed_shard_reads_back_and_is_skipped_only_while_it_matches(tmp_path: Path) -> None:
    store = ShardStore(tmp_path)
    store.prepare()
    (store.directory / ".tmp.shard-000000.npy.x").write_bytes(b"left by a killed run")
    store.prepare()
    assert list(store.directory.iterdir()) == []
    plan = next(plan_shards(_items(3), 3, salt="s"))
    assert not store.is_done(plan)
    rows = [
        ShardRow(plan.items[0].uri, EMBEDDED, 0, width=4, height=3, content_hash="ab"),
        ShardRow(plan.items[1].uri, FAILED, reason="truncated", message="cut short"),
        ShardRow(plan.items[2].uri, EMBEDDED, 1),
    ]
    vectors = np.arange(8, dtype=np.float32).reshape(2, 4)
    store.write(plan, rows, vectors)
    assert store.is_done(plan)
    got_rows, got_vectors = store.read(plan)
    assert got_rows == rows
    np.testing.assert_array_equal(got_vectors, vectors)
    moved = next(plan_shards(_items(3, mtime=5.0), 3, salt="s"))
    assert not store.is_done(moved)  # same name, other inputs: computed again
    with pytest.raises(ValueError, match="2 rows for 3 inputs"):
        store.write(plan, rows[:2], vectors)
    store.clear()
    assert not store.directory.exists()


def test_missing_ray_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(XmodalError, match=r"pip install 'xmodal\[ray\]'"):
        import_ray()


def test_shards_embedded_at_another_precision_are_not_reused() -> None:
    from types import SimpleNamespace

    from xmodal.pipelines.distributed.run import RayIndexConfig, shard_salt

    spec = SimpleNamespace(identity=lambda: {"model_id": "m", "revision": "r", "dim": 8})
    encoder = SimpleNamespace(spec=spec)
    salts = {shard_salt(encoder, RayIndexConfig(precision=p)) for p in ("fp32", "bf16", "auto")}
    plans = [next(plan_shards(_items(3), 3, salt=salt)) for salt in salts]
    assert len({plan.fingerprint for plan in plans}) == 3
