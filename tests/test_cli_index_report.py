"""What ``xmodal index`` reports: skips by reason, no rate when nothing was embedded, and
--retry-failed against the failures an earlier run recorded."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from xmodal.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture()
def mixed_folder(tmp_path: Path, captioned_photos: list[Path]) -> Path:
    """2 photos, 3 files that are no images by name, 1 hidden photo."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    for photo in captioned_photos[:2]:
        shutil.copy(photo, folder / photo.name)
    shutil.copy(captioned_photos[2], folder / ".hidden.jpg")
    for name in ("notes.md", "data.json", "list.csv"):
        (folder / name).write_text("not an image\n")
    return folder


def test_skips_are_counted_by_reason_and_an_unchanged_run_shows_no_rate(
    mixed_folder: Path, tmp_path: Path, tiny_clip_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    col = tmp_path / "col"
    common = ["-c", col, "--model", tiny_clip_dir, "--workers", "0"]
    code, out, err = run(capsys, "index", mixed_folder, *common)
    assert code == 0, err
    summary = out.splitlines()[-1]
    assert summary.startswith(
        "seen 6: indexed 2, unchanged 0, failed 0, skipped 4 (not-an-image 3, hidden 1) in "
    )
    assert summary.endswith(" images/s)")

    code, out, err = run(capsys, "index", mixed_folder, *common)
    summary = out.splitlines()[-1]
    assert summary.startswith(
        "seen 6: indexed 0, unchanged 2, failed 0, skipped 4 (not-an-image 3, hidden 1) in "
    )
    assert summary.endswith(" s (nothing new to embed)")
    assert "images/s" not in out

    code, out, err = run(capsys, "index", mixed_folder, *common, "--json")
    report = json.loads(out)
    assert report["skipped_reasons"] == {"not-an-image": 3, "hidden": 1}
    assert (report["skipped"], report["indexed"], report["unchanged"]) == (4, 0, 2)


def test_retry_failed_decodes_a_failure_whose_size_and_mtime_did_not_change(
    tmp_path: Path, tiny_clip_dir: Path, captioned_photos: list[Path], capsys
) -> None:
    """A failure is remembered by size and mtime: the same bytes fail the same way, so a plain
    re-run records it as failed again without decoding; --retry-failed decodes it anew (after a
    decoder fix, or when the bytes changed behind an unchanged size and mtime, as here)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    good = captioned_photos[0].read_bytes()
    photo = folder / "photo.jpg"
    photo.write_bytes(b"\0" * 16 + good[16:])  # same size, not an image
    stamp = (1_700_000_000, 1_700_000_000)
    os.utime(photo, stamp)
    common = ["-c", tmp_path / "col", "--model", tiny_clip_dir, "--workers", "0", "--json"]

    code, out, _ = run(capsys, "index", folder, *common)
    first = json.loads(out)
    assert (code, first["indexed"], first["failed"]) == (0, 0, 1)
    assert first["failures"][0]["reason"] == "not-an-image"

    photo.write_bytes(good)  # repaired, yet its size and mtime are what the ledger recorded
    os.utime(photo, stamp)
    code, out, _ = run(capsys, "index", folder, *common)
    second = json.loads(out)
    assert (code, second["indexed"], second["failed"]) == (0, 0, 1)
    assert second["failures"] == first["failures"]  # the old reason, not decoded again

    code, out, _ = run(capsys, "index", folder, *common, "--retry-failed")
    third = json.loads(out)
    assert (code, third["indexed"], third["failed"], third["failures"]) == (0, 1, 0, [])
