"""Each evaluation dataset format is parsed into the same CaptionSet."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xmodal.pipelines.evaluation.datasets import DatasetError, load_dataset


def _image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (200, 30, 30)).save(path)
    return path


def test_captions_jsonl_keeps_every_caption_with_its_image(tmp_path: Path) -> None:
    _image(tmp_path / "images" / "a.png")
    _image(tmp_path / "images" / "b.png")
    rows = [
        {"file": "images/a.png", "captions": ["a red square", "red"], "width": 8},
        {"file": "images/b.png", "captions": ["another", "", "  "]},
    ]
    (tmp_path / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    data = load_dataset(tmp_path)  # a folder is read as its captions.jsonl
    assert data.images == (tmp_path / "images/a.png", tmp_path / "images/b.png")
    assert data.captions == ("a red square", "red", "another")  # blank captions dropped
    assert data.caption_image.tolist() == [0, 0, 1]
    assert data.captions_per_image == 1.5
    small = data.limited(1)
    assert small.images == data.images[:1] and small.captions == ("a red square", "red")
    with pytest.raises(DatasetError, match="--limit 0 keeps no image"):
        data.limited(0)


def test_shared_captioned_set_parses(captions: dict[str, list[str]]) -> None:
    from shared_helpers import CAPTIONED

    data = load_dataset(CAPTIONED / "captions.jsonl")
    assert len(data.images) == len(captions) == 298
    assert len(data.captions) == sum(len(c) for c in captions.values())
    first = data.images[0].relative_to(CAPTIONED).as_posix()
    assert data.captions[0] == captions[first][0]


def test_karpathy_split_keeps_one_split_and_resolves_filepath(tmp_path: Path) -> None:
    _image(tmp_path / "coco" / "val2014" / "x.jpg")
    _image(tmp_path / "coco" / "y.jpg")  # no filepath folder on disk: found by filename alone
    _image(tmp_path / "coco" / "val2014" / "z.jpg")
    split = {
        "dataset": "coco",
        "images": [
            {"filepath": "val2014", "filename": "x.jpg", "split": "test",
             "sentences": [{"raw": "one"}, {"raw": "two"}]},
            {"filepath": "val2014", "filename": "y.jpg", "split": "test",
             "sentences": [{"raw": "three"}]},
            {"filepath": "val2014", "filename": "z.jpg", "split": "train",
             "sentences": [{"raw": "four"}]},
        ],
    }  # fmt: skip
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps(split))
    data = load_dataset(path, images_dir=tmp_path / "coco")
    assert data.name == "dataset_coco:test"
    assert data.images == (tmp_path / "coco/val2014/x.jpg", tmp_path / "coco/y.jpg")
    assert data.captions == ("one", "two", "three")
    assert data.caption_image.tolist() == [0, 0, 1]
    everything = load_dataset(path, images_dir=tmp_path / "coco", split="all")
    assert len(everything.images) == 3
    with pytest.raises(DatasetError, match=r"no images in split 'val'; its splits are test, train"):
        load_dataset(path, images_dir=tmp_path / "coco", split="val")


def test_csv_groups_rows_of_one_image(tmp_path: Path) -> None:
    _image(tmp_path / "p" / "a.png")
    _image(tmp_path / "p" / "b.png")
    (tmp_path / "set.csv").write_text(
        'Image,Caption\np/a.png,first\np/b.png,"second, with a comma"\np/a.png,third\n'
    )
    data = load_dataset(tmp_path / "set.csv")
    assert [p.name for p in data.images] == ["a.png", "b.png"]
    assert data.captions == ("first", "third", "second, with a comma")
    assert np.array_equal(data.caption_image, [0, 0, 1])


def test_csv_without_the_columns_is_refused(tmp_path: Path) -> None:
    (tmp_path / "set.csv").write_text("path,text\na.png,x\n")
    with pytest.raises(DatasetError, match="needs a header with 'image' and 'caption' columns"):
        load_dataset(tmp_path / "set.csv")


def test_missing_images_name_one_and_suggest_images_dir(tmp_path: Path) -> None:
    (tmp_path / "captions.jsonl").write_text(json.dumps({"file": "nope.jpg", "captions": ["x"]}))
    with pytest.raises(
        DatasetError, match=r"1 of 1 images .* not found, e\.g\. .*nope\.jpg.*--images"
    ):
        load_dataset(tmp_path / "captions.jsonl")


def test_bad_inputs_say_what_was_expected(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found; pass a captions.jsonl"):
        load_dataset(tmp_path / "missing.jsonl")
    (tmp_path / "set.txt").write_text("x")
    with pytest.raises(DatasetError, match="cannot tell the format of set.txt.*--format"):
        load_dataset(tmp_path / "set.txt")
    (tmp_path / "bad.jsonl").write_text('{"file": "a.png"}\n')
    with pytest.raises(DatasetError, match=r"bad.jsonl:1: expected a JSON object with 'file'"):
        load_dataset(tmp_path / "bad.jsonl")
    (tmp_path / "d.json").write_text("[1, 2]")
    with pytest.raises(DatasetError, match="is not a Karpathy split file"):
        load_dataset(tmp_path / "d.json")
