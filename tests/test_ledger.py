"""The ledger: every input of a run ends indexed, unchanged, failed (with a reason) or skipped;
seen = indexed + unchanged + failed + skipped; failures on re-runs; worker crashes contained."""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from ledger_helpers import CountingPreparer, CrashingPreparer, WithPreparer
from shared_helpers import ODD_IMAGES as ODD
from shared_helpers import shared

from xmodal.cli import main
from xmodal.encoders import load_encoder
from xmodal.index import Collection
from xmodal.pipelines.indexing import IndexConfig, index_paths
from xmodal.pipelines.workers import make_pool, prepare_stream

CONFIG = IndexConfig(batch_size=4, workers=0, progress=False, commit_every=8)


@pytest.fixture(scope="module")
def encoder(tiny_clip_dir: Path):
    """fp32: stored rows are compared with a plain encode of the same photos."""
    return load_encoder(tiny_clip_dir, device="cpu", precision="fp32")


def odd_manifest() -> dict[str, dict]:
    manifest = shared(ODD / "manifest.jsonl")
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    return {row["file"]: row for row in rows}


def build_folder(root: Path, photos: list[Path]) -> dict[str, Path]:
    """Odd images, an empty file, duplicate files and (where permissions bite) an unreadable one."""
    shutil.copytree(ODD, root / "odd", ignore=shutil.ignore_patterns("*.jsonl"))
    (root / "empty.jpg").write_bytes(b"")
    shutil.copyfile(photos[0], root / "photo.jpg")
    (root / "zz").mkdir()  # walked after the odd images: a later chunk than photo.jpg
    shutil.copyfile(photos[0], root / "zz" / "same-bytes.jpg")
    locked = root / "locked.jpg"
    shutil.copyfile(photos[1], locked)
    locked.chmod(0)
    return {
        "empty": root / "empty.jpg",
        "photo": root / "photo.jpg",
        "copy": root / "zz" / "same-bytes.jpg",
        "locked": locked,
    }


def test_every_input_is_accounted_for_and_rerun_decodes_nothing(
    tmp_path: Path, encoder, captioned_photos: list[Path]
) -> None:
    manifest = odd_manifest()
    files = build_folder(tmp_path / "in", captioned_photos)
    counting = CountingPreparer(encoder.preparer)
    wrapped = WithPreparer(encoder, counting)
    with Collection.create(tmp_path / "c", encoder.spec.to_dict()) as col:
        report = index_paths(wrapped, col, [tmp_path / "in"], CONFIG)
        ledger = {e.uri: e for e in col.ledger(run=report.run)}
        ids, rows = col.raw_embeddings()
        by_path = {r.path: i for i, r in col.get_records(ids).items()}
        vectors = dict(zip(ids.tolist(), np.asarray(rows), strict=True))

    parts = (report.indexed, report.unchanged, report.failed, report.skipped)
    assert report.seen == sum(parts) == len(ledger) >= len(manifest) - 2 + 4  # .mpo, .psd?
    statuses = Counter(e.status for e in ledger.values())
    assert statuses == {
        k: v for k, v in zip(("indexed", "unchanged", "failed", "skipped"), parts, strict=True) if v
    }
    assert {u for u, e in ledger.items() if e.status == "indexed"} == set(by_path)
    for name, row in manifest.items():
        entry = ledger.get(str((tmp_path / "in" / "odd" / name).resolve()))
        if entry is None:
            assert Path(name).suffix in {".mpo", ".psd"}  # not image extensions: not walked
            continue
        assert (entry.status == "indexed") == row["expected_decode"], (name, entry)
        assert entry.status == "indexed" or entry.reason and name in entry.message
    empty = ledger[str(files["empty"].resolve())]
    assert (empty.status, empty.reason) == ("failed", "empty")
    locked = ledger[str(files["locked"].resolve())]
    readable = os.access(files["locked"], os.R_OK)  # root reads anything
    assert (locked.status, locked.reason) == (
        ("indexed", None) if readable else ("failed", "unreadable")
    )
    assert report.reused >= 1  # the duplicate took the stored vector
    photo, copy = (by_path[str(files[k].resolve())] for k in ("photo", "copy"))
    assert photo != copy and vectors[photo].tobytes() == vectors[copy].tobytes()
    assert len(report.failures) == report.failed
    assert {f.uri for f in report.failures} == {
        u for u, e in ledger.items() if e.status == "failed"
    }

    counting.loads = 0
    with Collection.open(tmp_path / "c", writable=True) as col:
        again = index_paths(wrapped, col, [tmp_path / "in"], CONFIG)
        second = {e.uri: e for e in col.ledger(run=again.run)}
        runs = col.runs()
    retried = 0 if readable else 1  # an unreadable file is always tried again
    assert counting.loads == retried
    assert (again.run, again.seen, again.indexed, again.unchanged) == (
        2,
        report.seen,
        0,
        report.indexed,
    )
    assert again.failed == report.failed
    for uri, entry in second.items():  # failures keep their reasons without being decoded
        if entry.status == "failed":
            assert (entry.reason, entry.message) == (ledger[uri].reason, ledger[uri].message)
    assert [(r.id, r.finished, r.counts["seen"]) for r in runs] == [
        (1, True, report.seen),
        (2, True, report.seen),
    ]


def test_failed_inputs_are_retried_when_changed_unreadable_or_asked(
    tmp_path: Path, encoder, captioned_photos: list[Path]
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name, photo in zip(("bad.jpg", "locked.jpg", "fine.jpg"), captioned_photos, strict=False):
        shutil.copyfile(photo, folder / name)
    counting = CountingPreparer(
        encoder.preparer, {"bad.jpg": "not-an-image", "locked.jpg": "unreadable"}
    )
    wrapped = WithPreparer(encoder, counting)
    with Collection.create(tmp_path / "c", encoder.spec.to_dict()) as col:
        first = index_paths(wrapped, col, [folder], CONFIG)
        assert (first.indexed, first.failed) == (1, 2)

        counting.failing.clear()  # from now on every file decodes
        counting.loads = 0
        second = index_paths(wrapped, col, [folder], CONFIG)
        assert counting.loads == 1  # only the unreadable one is tried again
        assert (second.indexed, second.unchanged, second.failed) == (1, 1, 1)
        assert [f.uri for f in second.failures] == [str((folder / "bad.jpg").resolve())]

        os.utime(folder / "bad.jpg", (1_000_000, 1_000_000))  # the file changed: tried again
        third = index_paths(wrapped, col, [folder], CONFIG)
        assert (third.indexed, third.unchanged, third.failed, counting.loads) == (1, 2, 0, 2)
        assert {e.status for e in col.ledger(run=third.run)} == {"indexed", "unchanged"}


def test_a_run_where_everything_fails_still_commits_its_ledger(
    tmp_path: Path, tiny_clip_dir: Path, capsys
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"")
    (folder / "b.png").write_text("not an image")
    col = tmp_path / "c"
    assert (
        main(
            [
                "index",
                str(folder),
                "-c",
                str(col),
                "--model",
                str(tiny_clip_dir),
                "--workers",
                "0",
                "--json",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert (summary["seen"], summary["failed"], summary["indexed"]) == (2, 2, 0)
    assert set(summary["stages"]) == {"walk", "hash", "decode_wait", "encode", "write", "commit"}
    with Collection.open(col) as c:
        assert c.count == 0
        assert {e.reason for e in c.ledger(status="failed")} == {"empty", "not-an-image"}
    assert main(["info", "-c", str(col)]) == 0
    out = capsys.readouterr().out
    assert "last run    1, finished" in out
    assert "seen 2 = indexed 0 + unchanged 0 + failed 2 + skipped 0" in out


def test_a_worker_crash_costs_only_the_file_that_caused_it(
    tmp_path: Path, encoder, captioned_photos: list[Path]
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for i, photo in enumerate(captioned_photos[:8]):
        shutil.copyfile(photo, folder / f"p{i}.jpg")
    crashing = CrashingPreparer(
        encoder.preparer, exits=frozenset({"p2.jpg"}), segfaults=frozenset({"p5.jpg"})
    )
    config = IndexConfig(batch_size=2, workers=2, progress=False, commit_every=100)
    with Collection.create(tmp_path / "c", encoder.spec.to_dict()) as col:
        report = index_paths(WithPreparer(encoder, crashing), col, [folder], config)
        ledger = {Path(e.uri).name: e for e in col.ledger(run=report.run)}
        ids, rows = col.raw_embeddings()
        records = col.get_records(ids)
    assert (report.seen, report.indexed, report.failed) == (8, 6, 2)
    assert {n for n, e in ledger.items() if e.status == "failed"} == {"p2.jpg", "p5.jpg"}
    assert {e.reason for e in ledger.values() if e.status == "failed"} == {"worker-crash"}
    assert "the decoding process died" in ledger["p2.jpg"].message
    # the survivors' vectors are those of a plain encode
    expected = encoder.encode_images([folder / Path(records[int(i)].path).name for i in ids])
    np.testing.assert_allclose(np.asarray(rows, np.float32), expected, atol=2e-3)


def test_prepare_stream_keeps_order_and_isolates_the_crash(
    tmp_path: Path, encoder, captioned_photos: list[Path]
) -> None:
    paths = []
    for i, photo in enumerate(captioned_photos[:5]):
        shutil.copyfile(photo, tmp_path / f"q{i}.jpg")
        paths.append(str(tmp_path / f"q{i}.jpg"))
    crashing = CrashingPreparer(encoder.preparer, exits=frozenset({"q1.jpg"}))
    pool = make_pool(crashing, 2)
    try:
        out = list(prepare_stream(paths, crashing, pool, window=4))
        assert pool.restarts == 2  # once for the crash, once more to convict q1.jpg alone
    finally:
        pool.shutdown()
    assert [Path(p.uri).name for p in out] == [Path(p).name for p in paths]
    assert [p.reason for p in out] == [None, "worker-crash", None, None, None]
    assert all(p.pixels is not None for i, p in enumerate(out) if i != 1)
