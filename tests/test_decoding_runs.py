"""Batch runs against hostile or unlucky files: Ghostscript bait, files rewritten while a run
reads them, files that kill the process, reads that never return, and copies within one run."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from ledger_helpers import CountingEncoder, StallingPreparer, WithPreparer
from test_images_policy import EPS, fake_ghostscript

from xmodal.encoders import load_encoder
from xmodal.index import Collection
from xmodal.pipelines import indexing
from xmodal.pipelines.indexing import IndexConfig, index_paths
from xmodal.pipelines.inflight import NOW, SUSPECTS

ROOT = Path(__file__).resolve().parents[1]
CONFIG = IndexConfig(batch_size=2, workers=0, progress=False, commit_every=100)


@pytest.fixture(scope="module")
def encoder(tiny_clip_dir: Path):
    return load_encoder(tiny_clip_dir, device="cpu", precision="fp32")


def blake(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def photos_folder(root: Path, photos: list[Path], n: int) -> Path:
    folder = root / "in"
    folder.mkdir()
    for i, photo in enumerate(photos[:n]):
        shutil.copyfile(photo, folder / f"p{i}.jpg")
    return folder


def run_xmodal(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "xmodal.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env=(env or os.environ) | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
    )


def index_args(folder: Path, collection: Path, model: Path) -> list[object]:
    return [
        "index", folder, "-c", collection, "--model", model, "--device", "cpu",
        "--precision", "fp32", "--workers", "0", "--json",
    ]  # fmt: skip


def stored(collection: Path) -> dict[str, tuple[np.ndarray, str | None]]:
    """File name -> (raw vector as float32, catalogued content hash)."""
    with Collection.open(collection) as col:
        ids, rows = col.raw_embeddings()
        records = col.get_records(ids)
        out = {}
        for i, row in zip(ids, rows, strict=True):
            record = records[int(i)]
            out[Path(record.path).name] = (np.asarray(row, np.float32), record.content_hash)
        return out


def ledger(collection: Path) -> dict[str, tuple[str, str | None]]:
    with Collection.open(collection) as col:
        return {Path(e.uri).name: (e.status, e.reason) for e in col.ledger()}


# --- Ghostscript ---------------------------------------------------------------------------------


def test_xmodal_index_never_runs_ghostscript(
    tmp_path: Path, tiny_clip_dir: Path, captioned_photos: list[Path]
) -> None:
    folder = photos_folder(tmp_path, captioned_photos, 1)
    (folder / "drawing.png").write_bytes(EPS)
    env = os.environ | {"PATH": f"{fake_ghostscript(tmp_path)}{os.pathsep}{os.environ['PATH']}"}
    done = run_xmodal(index_args(folder, tmp_path / "c", tiny_clip_dir), env)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["indexed"], summary["failed"]) == (1, 1)
    [failure] = summary["failures"]
    assert failure["reason"] == "unsupported"
    assert failure["message"] == (
        f"{folder / 'drawing.png'}: PostScript/EPS is not decoded (it would run an interpreter "
        "on the file); convert it to PNG or JPEG [unsupported]"
    )
    assert not (tmp_path / "gs-called").exists()


# --- torn reads ----------------------------------------------------------------------------------


def test_a_file_rewritten_after_hashing_is_stored_with_the_hash_of_what_was_decoded(
    tmp_path: Path, encoder, captioned_photos: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = photos_folder(tmp_path, captioned_photos, 2)
    old, new = (folder / "p0.jpg").read_bytes(), captioned_photos[5].read_bytes()
    hash_then = indexing.with_hashes

    def hash_then_rewrite(items):
        hashed = hash_then(items)  # the run hashed the old bytes ...
        (folder / "p0.jpg").write_bytes(new)  # ... then a writer replaced them
        return hashed

    monkeypatch.setattr(indexing, "with_hashes", hash_then_rewrite)
    with Collection.create(tmp_path / "c", encoder.spec.to_dict()) as col:
        index_paths(encoder, col, [folder], CONFIG)
        col.commit()
    monkeypatch.undo()
    vector, content_hash = stored(tmp_path / "c")["p0.jpg"]
    assert content_hash == blake(new)
    np.testing.assert_allclose(vector, encoder.encode_images([new])[0], atol=2e-3)
    # A later untouched copy of the old bytes must not take the new bytes' vector.
    (folder / "old-copy.jpg").write_bytes(old)
    with Collection.open(tmp_path / "c", writable=True) as col:
        index_paths(encoder, col, [folder], CONFIG)
    vector, content_hash = stored(tmp_path / "c")["old-copy.jpg"]
    assert content_hash == blake(old)
    np.testing.assert_allclose(vector, encoder.encode_images([old])[0], atol=2e-3)


# --- a file that kills the process ---------------------------------------------------------------

POISON = textwrap.dedent(
    """
    # Every Python process of the test (the run and its decoding workers) dies on poison.jpg.
    import os
    from pathlib import Path

    import xmodal.encoders.preprocess as preprocess

    _load = preprocess.load_image


    def load_image(source, **kwargs):
        if isinstance(source, str | os.PathLike) and Path(source).name == "poison.jpg":
            os.kill(os.getpid(), int(os.environ["XMODAL_TEST_POISON"]))
        return _load(source, **kwargs)


    preprocess.load_image = load_image
    """
)


@pytest.mark.parametrize("sig", [signal.SIGSEGV, signal.SIGKILL], ids=["segfault", "oom-kill"])
def test_an_inline_run_killed_by_a_file_is_finished_by_the_next_run(
    tmp_path: Path, tiny_clip_dir: Path, captioned_photos: list[Path], sig: int
) -> None:
    folder = photos_folder(tmp_path, captioned_photos, 4)
    shutil.copyfile(captioned_photos[6], folder / "poison.jpg")
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(POISON)
    env = os.environ | {"XMODAL_TEST_POISON": str(int(sig))}
    args = index_args(folder, tmp_path / "c", tiny_clip_dir)
    env["PYTHONPATH"] = f"{site}{os.pathsep}{ROOT}"
    first = subprocess.run(
        [sys.executable, "-m", "xmodal.cli", *map(str, args)], env=env, capture_output=True
    )
    assert first.returncode == -sig
    assert (tmp_path / "c" / NOW).read_bytes() == str(folder / "poison.jpg").encode() + b"\0"
    second = subprocess.run(
        [sys.executable, "-m", "xmodal.cli", *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert second.returncode == 0, second.stderr
    summary = json.loads(second.stdout)
    assert (summary["seen"], summary["indexed"], summary["failed"]) == (5, 4, 1)
    entries = ledger(tmp_path / "c")
    assert entries.pop("poison.jpg") == ("failed", "worker-crash")
    assert set(entries.values()) == {("indexed", None)}
    assert not (tmp_path / "c" / SUSPECTS).exists() and not (tmp_path / "c" / NOW).exists()


def test_a_suspect_that_decodes_in_isolation_is_indexed(
    tmp_path: Path, encoder, captioned_photos: list[Path]
) -> None:
    # A run killed by the user while it decoded an innocent file must not convict that file.
    folder = photos_folder(tmp_path, captioned_photos, 3)
    with Collection.create(tmp_path / "c", encoder.spec.to_dict()) as col:
        (tmp_path / "c" / NOW).write_bytes(str(folder / "p1.jpg").encode() + b"\0")
        report = index_paths(encoder, col, [folder], CONFIG)
    assert (report.indexed, report.failed) == (3, 0)
    assert not (tmp_path / "c" / SUSPECTS).exists()


# --- stalled reads -------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 1], ids=["inline", "worker"])
def test_a_read_that_never_returns_costs_that_file_only(
    tmp_path: Path, encoder, captioned_photos: list[Path], workers: int
) -> None:
    folder = photos_folder(tmp_path, captioned_photos, 4)
    fifo = tmp_path / "mount"
    os.mkfifo(fifo)
    stalling = StallingPreparer(encoder.preparer, str(fifo), frozenset({"p1.jpg"}))
    config = IndexConfig(
        batch_size=2, workers=workers, progress=False, commit_every=100, decode_timeout=1.5
    )
    try:
        with Collection.create(tmp_path / "c", encoder.spec.to_dict()) as col:
            report = index_paths(WithPreparer(encoder, stalling), col, [folder], config)
    finally:
        if workers == 0:  # let the abandoned reader thread finish: open the other end, close it
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    assert (report.seen, report.indexed, report.failed) == (4, 3, 1)
    [failure] = report.failures
    assert (Path(failure.uri).name, failure.reason) == ("p1.jpg", "timeout")
    assert failure.message == (
        f"{folder / 'p1.jpg'}: not read and decoded within 1.5 s (a stalled network mount?); "
        "the next run tries it again (see --decode-timeout)"
    )


# --- copies within one run -----------------------------------------------------------------------


def test_copies_first_seen_in_one_run_are_encoded_once(
    tmp_path: Path, encoder, captioned_photos: list[Path]
) -> None:
    folder = photos_folder(tmp_path, captioned_photos, 2)
    shutil.copyfile(folder / "p0.jpg", folder / "p0-copy.jpg")
    counting = CountingEncoder(encoder)
    with Collection.create(tmp_path / "c", encoder.spec.to_dict()) as col:
        report = index_paths(counting, col, [folder], CONFIG)
    assert (report.seen, report.indexed, report.reused) == (3, 3, 1)
    assert counting.encoded == 2
    rows = stored(tmp_path / "c")
    assert np.array_equal(rows["p0.jpg"][0], rows["p0-copy.jpg"][0])
    assert rows["p0.jpg"][1] == rows["p0-copy.jpg"][1] == blake((folder / "p0.jpg").read_bytes())
