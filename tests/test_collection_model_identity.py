"""Model identity is the weights (revision + dim), never the folder name or where it lies.

A byte-identical copy of the model directory under another name was refused ("different
model_id"), and a moved model directory broke `search` for good: the collection reloads the model
from the path it recorded, which no longer existed.
"""

from __future__ import annotations

import shutil

import pytest

from xmodal.cli import main
from xmodal.demo.tiny import save_tiny_clip


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_copied_or_moved_model_is_the_same_model(tmp_path, tiny_clip_dir, captioned_photos, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for photo in captioned_photos[:3]:
        shutil.copy(photo, photos / photo.name)
    model = shutil.copytree(tiny_clip_dir, tmp_path / "model")
    col = tmp_path / "col"
    common = ("--workers", "1", "--precision", "fp32")
    code, _, err = run(capsys, "index", photos, "-c", col, "--model", model, *common)
    assert code == 0, err

    copy = shutil.copytree(model, tmp_path / "another-name")  # same bytes, another folder name
    shutil.copy(captioned_photos[3], photos / captioned_photos[3].name)
    code, out, err = run(capsys, "index", photos, "-c", col, "--model", copy, *common)
    assert code == 0 and "indexed 1" in out, err
    code, _, err = run(
        capsys, "search", "-c", col, "a photo", "--model", copy, "--precision", "fp32"
    )
    assert code == 0, err

    moved = model.rename(tmp_path / "moved")
    code, _, err = run(capsys, "search", "-c", col, "a photo")
    assert code == 1
    assert err == (
        f"xmodal: error: the model this collection was built with is no longer at {model} "
        "(moved or deleted); pass its new location with --model NEW_PATH\n"
    )
    code, out, err = run(capsys, "search", "-c", col, "a photo", "--model", moved, "-k", "4")
    assert code == 0 and len(out.strip().splitlines()) == 4, err

    other = save_tiny_clip(tmp_path / "other", seed=1)  # same architecture, other weights
    code, _, err = run(capsys, "search", "-c", col, "a photo", "--model", other)
    assert code == 1 and "(different revision)" in err
    code, _, err = run(capsys, "index", photos, "-c", col, "--model", other, *common)
    assert code == 1 and "(different revision)" in err
