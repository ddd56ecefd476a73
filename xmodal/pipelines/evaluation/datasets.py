"""Captioned image sets for evaluation: captions.jsonl, Karpathy split JSON, or a plain CSV.

- ``captions.jsonl``: one ``{"file": "images/x.jpg", "captions": ["...", ...]}`` per line (the
  format of xmodal's shared data and of ``xmodal.demo.world.make_world``);
- Karpathy split JSON (``dataset_coco.json``, ``dataset_flickr30k.json``): ``images[]`` with
  ``filename``, optional ``filepath``, ``split`` and ``sentences[].raw``; one split is kept
  (``test`` by default: COCO 5k, Flickr30k 1k);
- CSV with a header naming an ``image`` and a ``caption`` column; an image may have many rows.

Image paths are relative to the dataset file's folder, or to ``images_dir`` when given. A folder
is read as its ``captions.jsonl``.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xmodal.errors import XmodalError

FORMATS = ("jsonl", "karpathy", "csv")


class DatasetError(XmodalError):
    """An evaluation dataset could not be read; the message says what was expected."""


@dataclass(frozen=True)
class CaptionSet:
    """Images and their captions: ``caption_image[i]`` is the image of ``captions[i]``."""

    name: str
    images: tuple[Path, ...]
    captions: tuple[str, ...]
    caption_image: np.ndarray

    @property
    def captions_per_image(self) -> float:
        return len(self.captions) / max(len(self.images), 1)

    def caption_repeats(self) -> tuple[int, int] | None:
        """(distinct caption texts, captions) when one text is written under different images.

        Such captions embed identically, so they tie: an image query meets its caption's twins
        at the same score, and ties count against the query (see ``recall``).
        """
        owners: dict[str, int] = {}
        repeated = False
        for caption, image in zip(self.captions, self.caption_image.tolist(), strict=True):
            repeated = repeated or owners.setdefault(caption, image) != image
        return (len(owners), len(self.captions)) if repeated else None

    def limited(self, n_images: int | None) -> CaptionSet:
        """The first ``n_images`` images and their captions (all when None)."""
        if n_images is not None and n_images < 1:
            raise DatasetError(f"--limit {n_images} keeps no image; pass a number >= 1")
        if n_images is None or n_images >= len(self.images):
            return self
        keep = self.caption_image < n_images
        captions = tuple(c for c, k in zip(self.captions, keep, strict=True) if k)
        return CaptionSet(self.name, self.images[:n_images], captions, self.caption_image[keep])


def load_dataset(
    path: str | Path,
    *,
    images_dir: str | Path | None = None,
    split: str = "test",
    fmt: str | None = None,
) -> CaptionSet:
    """Read a captioned image set; ``fmt`` (jsonl, karpathy, csv) defaults to the file suffix."""
    source = Path(path).expanduser()
    if source.is_dir():
        source = source / "captions.jsonl"
    if not source.is_file():
        raise DatasetError(
            f"dataset {path} not found; pass a captions.jsonl, a Karpathy split JSON "
            "(dataset_coco.json) or a CSV with image,caption columns"
        )
    kind = fmt or _format_of(source)
    root = Path(images_dir).expanduser() if images_dir else source.parent
    if kind == "jsonl":
        pairs = _read_jsonl(source)
    elif kind == "karpathy":
        pairs = _read_karpathy(source, split, root)
    elif kind == "csv":
        pairs = _read_csv(source)
    else:
        raise DatasetError(f"unknown dataset format {kind!r}; use one of {', '.join(FORMATS)}")
    name = source.stem if kind != "karpathy" else f"{source.stem}:{split}"
    return _assemble(name, pairs, root)


def _format_of(source: Path) -> str:
    suffix = source.suffix.lower()
    formats = {".jsonl": "jsonl", ".json": "karpathy", ".csv": "csv"}
    if suffix not in formats:
        raise DatasetError(
            f"cannot tell the format of {source.name} from its suffix; use --format "
            f"{'|'.join(FORMATS)}"
        )
    return formats[suffix]


def _read_jsonl(source: Path) -> list[tuple[str, list[str]]]:
    pairs = []
    with source.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                pairs.append((str(row["file"]), [str(c) for c in row["captions"]]))
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise DatasetError(
                    f"{source}:{number}: expected a JSON object with 'file' and 'captions' "
                    f"({type(exc).__name__}: {exc})"
                ) from exc
    return pairs


def _read_karpathy(source: Path, split: str, root: Path) -> list[tuple[str, list[str]]]:
    try:
        images = json.loads(source.read_text(encoding="utf-8"))["images"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DatasetError(
            f"{source} is not a Karpathy split file (a JSON object with an 'images' list)"
        ) from exc
    pairs = []
    for image in images:
        if split != "all" and image.get("split") != split:
            continue
        name = str(image["filename"])
        nested = Path(str(image.get("filepath") or "")) / name
        relative = str(nested) if (root / nested).exists() or not (root / name).exists() else name
        pairs.append((relative, [str(s["raw"]) for s in image.get("sentences", [])]))
    if not pairs:
        present = sorted({str(image.get("split")) for image in images})
        raise DatasetError(
            f"{source} has no images in split {split!r}; its splits are {', '.join(present)} "
            "(or use --split all)"
        )
    return pairs


def _read_csv(source: Path) -> list[tuple[str, list[str]]]:
    with source.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        fields = [f.strip().lower() for f in reader.fieldnames or []]
        if "image" not in fields or "caption" not in fields:
            raise DatasetError(
                f"{source}: the CSV needs a header with 'image' and 'caption' columns, "
                f"found {fields or 'no header'}"
            )
        grouped: dict[str, list[str]] = {}
        for row in reader:
            clean = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
            if clean["image"]:
                grouped.setdefault(clean["image"], []).append(clean["caption"])
    return list(grouped.items())


def _assemble(name: str, pairs: list[tuple[str, list[str]]], root: Path) -> CaptionSet:
    """Merge repeated images, drop empty captions and caption-less images, resolve paths."""
    merged: dict[str, list[str]] = {}
    for file, captions in pairs:
        merged.setdefault(file, []).extend(c for c in captions if c.strip())
    kept = [(file, caps) for file, caps in merged.items() if caps]
    if not kept:
        raise DatasetError(f"dataset {name} has no image with a caption")
    images = tuple(root / file for file in (f for f, _ in kept))
    missing = [str(p) for p in images if not p.is_file()]
    if missing:
        raise DatasetError(
            f"{len(missing)} of {len(images)} images of {name} not found, e.g. {missing[0]}; "
            "pass the folder they are relative to with --images DIR"
        )
    captions = tuple(c for _, caps in kept for c in caps)
    owner = np.repeat(np.arange(len(kept)), [len(caps) for _, caps in kept])
    return CaptionSet(name, images, captions, owner.astype(np.int64))
