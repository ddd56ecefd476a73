"""xmodal.images against the shared odd-images corpus (../shared/data/odd-images)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from image_helpers import UPRIGHT, mean_diff, raise_reason, rgb_array
from PIL import Image
from shared_helpers import ODD_IMAGES, shared

from xmodal.images import load_image

MANIFEST = ODD_IMAGES / "manifest.jsonl"

# What PIL's own error says -> (our reason, words our message must contain).
EXPECTED_FAILURES = {
    "OSError: image file is truncated": ("truncated", "truncated or corrupt"),
    "UnidentifiedImageError": ("not-an-image", "not a recognised image format"),
    "DecompressionBombError": ("decompression-bomb", "pixels"),
}


def _manifest() -> list[Any]:
    if not MANIFEST.is_file():
        return [pytest.param(None, id="manifest-missing")]  # the test says what is missing
    entries = [json.loads(line) for line in MANIFEST.read_text().splitlines() if line.strip()]
    return [pytest.param(entry, id=entry["file"]) for entry in entries]


def _odd(name: str) -> Path:
    return shared(ODD_IMAGES / name)


# --- the shared corpus ---------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")  # hopper_bad_exif.jpg
@pytest.mark.parametrize("entry", _manifest())
def test_manifest_entry(entry: dict[str, Any] | None) -> None:
    if entry is None:
        shared(MANIFEST)
    path = _odd(entry["file"])
    if entry["expected_decode"]:
        _check_decodes(path, entry)
    else:
        _check_rejected(path, entry)


def _check_decodes(path: Path, entry: dict[str, Any]) -> None:
    result = load_image(path)
    pixels = rgb_array(result)
    orientation = entry.get("exif_orientation", 1)
    size = (entry["width"], entry["height"])
    assert result.size == (size[::-1] if orientation in (5, 6, 7, 8) else size)
    # All-white (clipped 16-bit) or near-black (unscaled float) output would be flat.
    assert pixels.std() > 3, "decoded image is flat: a mode was converted naively"
    with Image.open(path) as raw:
        raw.load()
        if entry.get("has_alpha_or_transparency"):
            transparent = _fully_transparent(raw)
            assert (pixels[transparent] == 255).all(), "transparent pixels must become white"
        if orientation != 1 and raw.mode == "RGB":
            expected = raw.transpose(UPRIGHT[orientation])
            assert np.array_equal(pixels, rgb_array(expected))
        if raw.mode.startswith("I") and not raw.info.get("transparency"):
            expected_grey = np.round(np.asarray(raw).astype(np.float64) / 257)
            assert np.abs(pixels[..., 0] - expected_grey).max() <= 1
        if entry.get("n_frames", 1) > 1 and raw.mode in ("RGB", "RGBA", "P"):
            assert mean_diff(result, _flat_reference(raw)) < 1, "must be the first frame"


def _check_rejected(path: Path, entry: dict[str, Any]) -> None:
    matches = [v for k, v in EXPECTED_FAILURES.items() if entry["pillow_decode"].startswith(k)]
    assert matches, f"no expectation for {entry['pillow_decode']!r}; extend EXPECTED_FAILURES"
    reason, text = matches[0]
    error = raise_reason(path, reason, text)
    assert error.source == str(path)
    assert str(path) in str(error)


def _fully_transparent(raw: Image.Image) -> np.ndarray:
    value = raw.info.get("transparency")
    if raw.mode.startswith("I") and isinstance(value, int):
        return np.asarray(raw) == value
    return np.asarray(raw.convert("RGBA"))[..., 3] == 0


def _flat_reference(raw: Image.Image) -> Image.Image:
    rgba = raw.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


@pytest.mark.parametrize(
    "name",
    [
        "hopper_orientation_3.jpg",
        "hopper_orientation_6.jpg",
        "hopper_orientation_8.jpg",
        "hopper_orientation_6.webp",
        "hopper.Lab.tif",
        "hopper.psd",
        "hopper.gif",
    ],
)
def test_hopper_variants_match_the_upright_rgb_jpeg(name: str) -> None:
    reference = load_image(_odd("hopper.jpg"))
    assert mean_diff(load_image(_odd(name)), reference) < 8


def test_adobe_inverted_cmyk_jpeg_matches_plain_cmyk_tiff() -> None:
    jpeg = load_image(_odd("pil_sample_cmyk.jpg"))
    tiff = load_image(_odd("tiff_strip_cmyk_jpeg.tif"))
    assert mean_diff(jpeg, tiff) < 2
    text = rgb_array(jpeg)[rgb_array(jpeg).max(axis=2) > 128]  # the bright pixels are red letters
    assert text[:, 0].mean() > 200 and text[:, 1:].mean() < 80


def test_float_tiff_is_stretched_not_black() -> None:
    pixels = rgb_array(load_image(_odd("10ct_32bit_128.tiff")))
    assert pixels.min() == 0 and pixels.max() == 255
