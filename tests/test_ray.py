"""Distributed indexing on a local Ray cluster gives the same collection as the plain path."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from shared_helpers import import_or_unavailable

ray = import_or_unavailable("ray", "Ray is not installed (pip install 'xmodal[ray]')")

from xmodal.cli import main  # noqa: E402
from xmodal.encoders import load_encoder  # noqa: E402
from xmodal.index import Collection, Record  # noqa: E402
from xmodal.pipelines.distributed import RayIndexConfig, index_with_ray  # noqa: E402
from xmodal.pipelines.distributed.shards import SHARDS_DIR  # noqa: E402
from xmodal.pipelines.indexing import IndexConfig, index_paths  # noqa: E402

N_PHOTOS = 14
# Ray and the plain path are compared row by row, so both run in fp32 whatever $XMODAL_PRECISION
# or the CPU would choose.
EXACT = {"device": "cpu", "precision": "fp32"}


@pytest.fixture(scope="module")
def ray_cluster():
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=200 * 2**20,
        log_to_driver=False,
        configure_logging=False,
    )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory: pytest.TempPathFactory, captioned_photos: list[Path]) -> Path:
    """A few real photos with caption sidecars, plus one file that is not an image."""
    folder = tmp_path_factory.mktemp("photos")
    for i, photo in enumerate(captioned_photos[:N_PHOTOS]):
        shutil.copy(photo, folder / photo.name)
        if i % 3 == 0:
            (folder / photo.name).with_suffix(".txt").write_text(f"caption {i}")
    (folder / "broken.jpg").write_bytes(b"this is not a JPEG")
    return folder


@pytest.fixture(scope="module")
def encoder(tiny_clip_dir: Path):
    return load_encoder(str(tiny_clip_dir), **EXACT)


def _plain(encoder, directory: Path, sources: list[str]) -> Collection:
    with Collection.create(directory, encoder.spec.to_dict()) as collection:
        index_paths(encoder, collection, sources, IndexConfig(workers=0, batch_size=4))
    return Collection.open(directory)


def _assert_same(got: Collection, want: Collection, encoder) -> None:
    ids_got, vectors_got = got.raw_embeddings()
    ids_want, vectors_want = want.raw_embeddings()
    np.testing.assert_array_equal(ids_got, ids_want)
    np.testing.assert_allclose(vectors_got.astype(np.float32), vectors_want, atol=2e-3)
    records_got, records_want = got.get_records(ids_got), want.get_records(ids_want)
    assert records_got == records_want
    queries = encoder.encode_texts(["a dog on the grass", "a city street at night"])
    hits_got = [[h.id for h in row] for row in got.search(queries, k=5)]
    hits_want = [[h.id for h in row] for row in want.search(queries, k=5)]
    assert hits_got == hits_want
    statuses = lambda c: {(e.uri, e.status, e.reason) for e in c.ledger()}  # noqa: E731
    assert statuses(got) == statuses(want)


class _Killed(Exception):
    pass


def test_folder_on_ray_resumes_from_finished_shards_and_matches_plain_path(
    ray_cluster, encoder, photo_dir: Path, tmp_path: Path, tiny_clip_dir: Path, capsys
) -> None:
    finished: list[int] = []

    def die_after_two(plan) -> None:
        finished.append(plan.index)
        if len(finished) == 2:
            raise _Killed

    config = RayIndexConfig(shard_size=4, batch_size=4, on_shard=die_after_two, **EXACT)
    collection = Collection.create(tmp_path / "ray", encoder.spec.to_dict())
    with collection, pytest.raises(_Killed):
        index_with_ray(encoder, collection, [str(photo_dir)], config)
    markers = sorted(p.name for p in (tmp_path / "ray" / SHARDS_DIR).glob("*.done.json"))
    assert markers == ["shard-000000.done.json", "shard-000001.done.json"]
    assert Collection.open(tmp_path / "ray").count == 0  # nothing reached the collection

    args = ["index", str(photo_dir), "-c", str(tmp_path / "ray"), "--model", str(tiny_clip_dir)]
    args += ["--device", "cpu", "--precision", "fp32", "--ray", "--ray-batch-size", "4"]
    assert main([*args, "--ray-shard-size", "4"]) == 0
    out, err = capsys.readouterr()
    assert "shards: 4 (2 computed, 2 from before)" in out  # finished shards were not redone
    assert f"indexed {N_PHOTOS}, unchanged 0, failed 1" in out
    assert "broken.jpg" in err and "not-an-image" in err
    got = Collection.open(tmp_path / "ray")
    assert not (tmp_path / "ray" / SHARDS_DIR).exists()  # consumed and removed
    _assert_same(got, _plain(encoder, tmp_path / "plain", [str(photo_dir)]), encoder)
    failed = got.ledger(status="failed")
    assert [(Path(e.uri).name, e.reason) for e in failed] == [("broken.jpg", "not-an-image")]

    # Everything is unchanged now: nothing is embedded, the bad file is not decoded again.
    assert main([*args, "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert (again["unchanged"], again["indexed"], again["failed"]) == (N_PHOTOS, 0, 1)


def test_parquet_source_on_ray_matches_plain_path(
    ray_cluster, encoder, photo_dir: Path, tmp_path: Path
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = sorted(p.name for p in photo_dir.iterdir() if p.suffix == ".jpg")[::-1]
    table = pa.table({"path": [str(photo_dir / n) for n in names], "caption": names})
    pq.write_table(table, tmp_path / "list.parquet")
    sources = [str(tmp_path / "list.parquet")]
    want = _plain(encoder, tmp_path / "plain", sources)
    with Collection.create(tmp_path / "ray", encoder.spec.to_dict()) as collection:
        # Two windows: the driver walks, embeds and replays 2 shards, then the last one.
        config = RayIndexConfig(
            shard_size=5, batch_size=4, commit_every=7, window_shards=2, **EXACT
        )
        report, stats = index_with_ray(encoder, collection, sources, config)
    assert (report.indexed, report.failed, stats.shards, stats.computed) == (N_PHOTOS, 1, 3, 3)
    got = Collection.open(tmp_path / "ray")
    _assert_same(got, want, encoder)
    assert {r.caption for r in got.get_records(got.raw_embeddings()[0]).values()} <= set(names)


def test_ivf_index_filled_in_parts_matches_in_process_build(ray_cluster) -> None:
    import faiss

    from xmodal.index import faiss_index
    from xmodal.index.rowset import RowSet
    from xmodal.pipelines.distributed.build import ray_index_builder

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(2400, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(2400, dtype=np.int64) * 3 + 5
    built = ray_index_builder(ray_cluster, parts=3, min_part_rows=500)(
        16, "IVF8,Flat", ids, RowSet.of(vectors)
    )
    local = faiss_index.new_index(16, "IVF8,Flat")
    faiss_index.fill(local, ids, vectors, "IVF8,Flat")
    assert built.ntotal == local.ntotal == 2400
    for index in (built, local):
        faiss.extract_index_ivf(index).nprobe = 3
    scores_built, ids_built = built.search(vectors[:40], 10)
    scores_local, ids_local = local.search(vectors[:40], 10)
    np.testing.assert_array_equal(ids_built, ids_local)
    np.testing.assert_allclose(scores_built, scores_local, rtol=1e-6)
    assert ids_built[0, 0] == ids[0]  # each row finds itself under its collection id


def test_collection_uses_the_builder_for_ivf_and_keeps_flat_in_process(
    ray_cluster, tmp_path: Path
) -> None:
    from xmodal.pipelines.distributed.build import ray_index_builder

    calls: list[str] = []
    inner = ray_index_builder(ray_cluster, parts=2, min_part_rows=300)

    def spy(dim, factory, ids, vectors):
        calls.append(factory)
        return inner(dim, factory, ids, vectors)

    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(1200, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    records = [Record(f"/x/{i}.jpg") for i in range(1200)]
    spec = {"model_id": "m", "revision": "r", "dim": 8}
    results = []
    for name, key, builder in (
        ("a", "IVF4,Flat", spy),
        ("b", "IVF4,Flat", None),
        ("c", "flat", spy),
    ):
        with Collection.create(tmp_path / name, spec, index_key=key) as collection:
            collection.use_index_builder(builder)
            collection.add(vectors, records)
            collection.commit()
        results.append(Collection.open(tmp_path / name).search(vectors[:20], k=5))
    # Every new segment's index goes through the builder; it fills Flat in-process itself.
    assert calls == ["IVF4,Flat", "Flat"]
    ids = [[[h.id for h in row] for row in hits] for hits in results]
    assert ids[0] == ids[1]


def test_an_ivf_segment_built_on_ray_is_merged_on_disk_and_checked_like_any_file(
    ray_cluster, tmp_path: Path, capfd: pytest.CaptureFixture
) -> None:
    """Parts become scratch files, merged into the segment's own lists file; readers map it."""
    from xmodal.errors import CollectionCorruptError
    from xmodal.index import manifest as mf
    from xmodal.pipelines.distributed.build import ray_index_builder

    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(1500, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    spec = {"model_id": "m", "revision": "r", "dim": 8}
    directory = tmp_path / "disk"
    results = []
    for name in ("disk", "memory"):
        with Collection.create(tmp_path / name, spec, index_key="IVF4,Flat") as collection:
            if name == "disk":
                collection.use_index_builder(
                    ray_index_builder(ray_cluster, parts=2, min_part_rows=300, lists_dir=directory)
                )
            collection.add(vectors, [Record(f"/x/{i}.jpg") for i in range(1500)])
            collection.commit()
        with Collection.open(tmp_path / name) as reader:
            results.append([[h.id for h in row] for row in reader.search(vectors[:30], k=5)])
    assert results[0] == results[1]
    assert capfd.readouterr().out == ""  # FAISS's own messages never reach stdout

    manifest = mf.read_manifest(directory)
    (segment,) = manifest.segments
    assert segment.lists is not None and manifest.format_version == 4
    assert (directory / segment.lists.name).stat().st_size == segment.lists.size
    assert not [p.name for p in directory.iterdir() if p.name.startswith(".tmp")]
    assert mf.read_manifest(tmp_path / "memory").format_version == 3  # no lists: still 3

    lists = directory / segment.lists.name
    data = bytearray(lists.read_bytes())
    data[len(data) // 2] ^= 0xFF
    lists.write_bytes(bytes(data))
    with pytest.raises(CollectionCorruptError, match=segment.lists.name):
        Collection.open(directory)
    data[len(data) // 2] ^= 0xFF
    lists.write_bytes(bytes(data))

    with Collection.open(directory, writable=True) as collection:  # in-process merge: no lists
        collection.add(vectors[:10] * -1, [Record(f"/y/{i}.jpg") for i in range(10)])
        collection.compact(full=True)
    assert mf.read_manifest(directory).segments[0].lists is None
    assert not lists.exists()  # swept once no manifest names it


def test_a_failing_cluster_stage_keeps_finished_shards_and_says_what_to_check(
    encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xmodal.errors import XmodalError
    from xmodal.pipelines.distributed import embed_job
    from xmodal.pipelines.distributed.shards import ShardStore, plan_shards
    from xmodal.pipelines.sources import Item

    class Failing:
        def iter_batches(self, **_):
            raise ray.exceptions.RayError("line one\nModelLoadError: no such model")

    monkeypatch.setattr(embed_job, "_dataset", lambda *args: Failing())
    items = [Item(f"/p/{i}.jpg", 1, 1.0) for i in range(4)]
    plans = list(plan_shards(items, 2, salt="s"))
    store = ShardStore(tmp_path)
    store.prepare()
    shards = [
        embed_job.PendingShard(plans[0], (True, True)),
        embed_job.PendingShard(plans[1], (False, False)),
    ]
    job = embed_job.EmbedJob(model="/models/clip")
    with pytest.raises(XmodalError, match="1 shards not finished.*no such model.*'/models/clip'"):
        embed_job.run_embedding(ray, shards, job, encoder.preparer, store)
    assert store.is_done(plans[0]) and not store.is_done(plans[1])
