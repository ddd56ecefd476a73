"""Keeping a collection in step with the disk: remove, prune, moved files, and the CLI for them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xmodal.cli import main
from xmodal.encoders import load_encoder
from xmodal.index import Collection, Record
from xmodal.pipelines.indexing import IndexConfig, index_paths
from xmodal.pipelines.maintenance import file_hash, prune_missing, remove_paths

SPEC = {"model_id": "tiny/clip", "revision": "abc123", "dim": 16, "device": "cpu"}
CONFIG = IndexConfig(batch_size=4, workers=0, progress=False)


def make_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """Small distinct noise images in two subfolders."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / ("a" if i % 2 else "b") / f"img{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (24 + i, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def encoder(tiny_clip_dir: Path):
    """fp32: stored vectors are compared bit for bit across runs that batch them differently."""
    return load_encoder(tiny_clip_dir, device="cpu", precision="fp32")


class CountingEncoder:
    """Wraps an encoder and counts the images it is asked to encode."""

    def __init__(self, inner) -> None:
        self._inner = inner
        self.encoded = 0

    def encode_pixels(self, batch):
        self.encoded += len(batch)
        return self._inner.encode_pixels(batch)

    def __getattr__(self, name):
        return getattr(self._inner, name)


def by_path(directory: Path) -> dict[str, np.ndarray]:
    with Collection.open(directory) as col:
        ids, rows = col.raw_embeddings()
        records = col.get_records(ids)
        return {records[int(i)].path: np.array(row) for i, row in zip(ids, rows, strict=True)}


def numpy_collection(directory: Path, paths: list[str]) -> np.ndarray:
    rows = np.random.default_rng(0).standard_normal((len(paths), 16)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    with Collection.create(directory, SPEC) as col:
        ids = col.add(rows, [Record(p) for p in paths])
        col.commit()
    return ids


def test_remove_paths_and_folders_never_come_back(tmp_path: Path) -> None:
    paths = [f"/p/{d}/x{i}.jpg" for d in ("trips", "trips2", "home") for i in range(5)]
    ids = numpy_collection(tmp_path / "c", paths + ["/p/trips"])
    with Collection.open(tmp_path / "c", writable=True) as col:
        # a folder takes what is under it (not the look-alike trips2), plus a file named so
        assert remove_paths(col, ["/p/trips", "/p/home/x1.jpg", "/p/nothing"]) == 7
        col.commit()
    with Collection.open(tmp_path / "c") as col:
        assert col.count == 9
        left = {r.path for r in col.get_records(ids).values()}
        assert left == {
            p
            for p in paths
            if "/trips2/" in p or p.startswith("/p/home/x") and p != "/p/home/x1.jpg"
        }
        hits = col.search(np.eye(16, dtype=np.float32), k=16)
        assert {h.record.path for row in hits for h in row} == left


def test_prune_removes_only_missing_files_under_sources(tmp_path: Path) -> None:
    keep = make_images(tmp_path / "photos", 4)
    paths = [str(p.resolve()) for p in keep]
    gone = [str(tmp_path / "photos" / "a" / "old.png"), str(tmp_path / "other" / "old.png")]
    numpy_collection(tmp_path / "c", paths + gone)
    with Collection.open(tmp_path / "c", writable=True) as col:
        assert prune_missing(col, [tmp_path / "photos"]) == 1
        col.commit()
    assert set(by_path(tmp_path / "c")) == set(paths) | {gone[1]}


def test_index_prune_and_rename_reuse_vectors(tmp_path: Path, encoder) -> None:
    photos = tmp_path / "photos"
    images = make_images(photos, 6)
    counting = CountingEncoder(encoder)
    with Collection.create(tmp_path / "c", encoder.spec.to_dict()) as col:
        first = index_paths(counting, col, [str(photos)], CONFIG)
    assert (first.indexed, first.reused, counting.encoded) == (6, 0, 6)
    assert first.summary().endswith("images/s)")  # no ", pruned 0"

    moved = photos / "c" / "renamed.png"
    moved.parent.mkdir()
    images[1].rename(moved)
    images[2].unlink()
    (photos / "b" / "copy.png").write_bytes(images[0].read_bytes())
    counting.encoded = 0
    with Collection.open(tmp_path / "c", writable=True) as col:
        second = index_paths(
            counting, col, [str(photos)], IndexConfig(**{**CONFIG.__dict__, "prune": True})
        )
    assert counting.encoded == 0  # the moved file and the copy took stored vectors
    assert (second.seen, second.indexed, second.unchanged, second.reused, second.pruned) == (
        6,
        2,
        4,
        2,
        1,
    )
    assert second.summary().endswith(", pruned 1")

    scratch = tmp_path / "scratch"
    with Collection.create(scratch, encoder.spec.to_dict()) as col:
        index_paths(encoder, col, [str(photos)], CONFIG)
    incremental, fresh = by_path(tmp_path / "c"), by_path(scratch)
    assert set(incremental) == set(fresh) and str(moved.resolve()) in fresh
    for path, row in fresh.items():  # the same stored float16 vectors, bit for bit
        np.testing.assert_array_equal(incremental[path], row)
    query = encoder.encode_texts(["a photo"])
    with Collection.open(tmp_path / "c") as a, Collection.open(scratch) as b:
        got = [(h.record.path, h.score) for h in a.search(query, k=10)[0]]
        want = [(h.record.path, h.score) for h in b.search(query, k=10)[0]]
        records = a.get_records(a.raw_embeddings()[0])
    assert sorted(p for p, _ in got) == sorted(p for p, _ in want)
    np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=2e-3)
    assert {r.path: r.content_hash for r in records.values()}[str(moved.resolve())] == file_hash(
        moved
    )


def test_touched_file_is_not_encoded_again(tmp_path: Path, encoder) -> None:
    images = make_images(tmp_path / "photos", 3)
    counting = CountingEncoder(encoder)
    with Collection.create(tmp_path / "c", encoder.spec.to_dict()) as col:
        index_paths(counting, col, [str(tmp_path / "photos")], CONFIG)
        before = col.count
        os.utime(images[0], (1_000_000, 1_000_000))
        counting.encoded = 0
        report = index_paths(counting, col, [str(tmp_path / "photos")], CONFIG)
        assert (report.indexed, report.reused, counting.encoded, col.count) == (1, 1, 0, before)
        record = col.get_records(list(col.ids_for_paths([str(images[0].resolve())]).values()))
        assert next(iter(record.values())).mtime == 1_000_000


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_where_remove_and_prune(tmp_path: Path, tiny_clip_dir: Path, capsys) -> None:
    photos = tmp_path / "photos"
    images = make_images(photos, 8)
    col = tmp_path / "col"
    code, out, err = run(
        capsys, "index", photos, "-c", col, "--model", tiny_clip_dir, "--workers", "0"
    )
    assert code == 0, err
    code, out, err = run(
        capsys,
        "search",
        "-c",
        col,
        "a photo",
        "-k",
        "8",
        "--json",
        "--where",
        f"path^={photos / 'a'}",
    )
    assert code == 0, err
    rows = json.loads(out)["results"]
    assert len(rows) == 4 and all("/photos/a/" in r["path"] for r in rows)
    assert set(rows[0]) == {"id", "score", "path", "caption", "tags"}
    code, out, err = run(
        capsys,
        "search",
        "-c",
        col,
        "a photo",
        "--json",
        "--where",
        "ext:png",
        "--where",
        "height<28",
    )
    assert code == 0, err
    assert sorted(Path(r["path"]).name for r in json.loads(out)["results"]) == [
        "img00.png",
        "img01.png",
        "img02.png",
        "img03.png",
    ]
    code, out, err = run(capsys, "search", "-c", col, "a photo", "--where", "colour:red")
    assert code == 1 and "bad filter clause 'colour:red': unknown field 'colour'" in err

    code, out, err = run(capsys, "remove", "-c", col, photos / "a", images[0])
    assert code == 0 and out.strip() == "removed 5 items", err
    images[2].unlink()
    code, out, err = run(capsys, "index", photos, "-c", col, "--prune", "--json", "--workers", "0")
    summary = json.loads(out)
    assert (summary["indexed"], summary["unchanged"], summary["pruned"]) == (5, 2, 1)
    images[4].unlink()
    code, out, err = run(capsys, "index", photos, "-c", col, "--prune")
    assert code == 0 and out.strip().endswith(", pruned 1"), err
    with Collection.open(col) as c:
        assert c.count == 6
