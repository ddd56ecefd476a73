"""Tests for xmodal.images: the shared odd-images corpus plus generated edge cases."""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageFile

from xmodal import images
from xmodal.errors import ImageDecodeError
from xmodal.images import MAX_IMAGE_PIXELS, ORIGINAL_SIZE, load_image

SHARED_DATA = Path(
    os.environ.get("XMODAL_SHARED_DATA")
    or Path(__file__).resolve().parents[1].parent / "shared" / "data"
)
ODD_IMAGES = SHARED_DATA / "odd-images"
MANIFEST = ODD_IMAGES / "manifest.jsonl"
MISSING_DATA = f"shared test data not found at {ODD_IMAGES} (set XMODAL_SHARED_DATA to its parent)"

# EXIF orientation -> the transpose that shows the stored pixels upright (EXIF 2.3, tag 0x0112).
UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Inverse transposes: how to store an upright image so that orientation N shows it upright.
STORE = {**UPRIGHT, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}

# What PIL's own error says -> (our reason, words our message must contain).
EXPECTED_FAILURES = {
    "OSError: image file is truncated": ("truncated", "truncated or corrupt"),
    "UnidentifiedImageError": ("not-an-image", "not a recognised image format"),
    "DecompressionBombError": ("decompression-bomb", "pixels"),
}


def _manifest() -> list[Any]:
    if not MANIFEST.is_file():
        return [pytest.param(None, id="manifest-missing", marks=pytest.mark.skip(MISSING_DATA))]
    entries = [json.loads(line) for line in MANIFEST.read_text().splitlines() if line.strip()]
    return [pytest.param(entry, id=entry["file"]) for entry in entries]


def _odd(name: str) -> Path:
    path = ODD_IMAGES / name
    if not path.is_file():
        pytest.skip(MISSING_DATA)
    return path


def _pixels(image: Image.Image) -> np.ndarray:
    assert image.mode == "RGB"
    return np.asarray(image).astype(np.int16)


def _mean_diff(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(_pixels(a) - _pixels(b)).mean())


def _raise_reason(source: Any, reason: str, text: str, **kwargs: Any) -> ImageDecodeError:
    with pytest.raises(ImageDecodeError) as info:
        load_image(source, **kwargs)
    assert info.value.reason == reason
    assert text in str(info.value)
    return info.value


# --- the shared corpus ---------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")  # hopper_bad_exif.jpg
@pytest.mark.parametrize("entry", _manifest())
def test_manifest_entry(entry: dict[str, Any]) -> None:
    path = _odd(entry["file"])
    if entry["expected_decode"]:
        _check_decodes(path, entry)
    else:
        _check_rejected(path, entry)


def _check_decodes(path: Path, entry: dict[str, Any]) -> None:
    result = load_image(path)
    pixels = _pixels(result)
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
            assert np.array_equal(pixels, _pixels(expected))
        if raw.mode.startswith("I") and not raw.info.get("transparency"):
            expected_grey = np.round(np.asarray(raw).astype(np.float64) / 257)
            assert np.abs(pixels[..., 0] - expected_grey).max() <= 1
        if entry.get("n_frames", 1) > 1 and raw.mode in ("RGB", "RGBA", "P"):
            assert _mean_diff(result, _flat_reference(raw)) < 1, "must be the first frame"


def _check_rejected(path: Path, entry: dict[str, Any]) -> None:
    matches = [v for k, v in EXPECTED_FAILURES.items() if entry["pillow_decode"].startswith(k)]
    assert matches, f"no expectation for {entry['pillow_decode']!r}; extend EXPECTED_FAILURES"
    reason, text = matches[0]
    error = _raise_reason(path, reason, text)
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
    assert _mean_diff(load_image(_odd(name)), reference) < 8


def test_adobe_inverted_cmyk_jpeg_matches_plain_cmyk_tiff() -> None:
    jpeg = load_image(_odd("pil_sample_cmyk.jpg"))
    tiff = load_image(_odd("tiff_strip_cmyk_jpeg.tif"))
    assert _mean_diff(jpeg, tiff) < 2
    text = _pixels(jpeg)[_pixels(jpeg).max(axis=2) > 128]  # the bright pixels are red letters
    assert text[:, 0].mean() > 200 and text[:, 1:].mean() < 80


def test_float_tiff_is_stretched_not_black() -> None:
    pixels = _pixels(load_image(_odd("10ct_32bit_128.tiff")))
    assert pixels.min() == 0 and pixels.max() == 255


# --- generated: orientation ----------------------------------------------------------------------

RED, GREEN, BLUE, YELLOW = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)


def _quadrants(width: int = 40, height: int = 20) -> Image.Image:
    image = Image.new("RGB", (width, height), RED)
    image.paste(GREEN, (width // 2, 0, width, height // 2))
    image.paste(BLUE, (0, height // 2, width // 2, height))
    image.paste(YELLOW, (width // 2, height // 2, width, height))
    return image


def _save_oriented(upright: Image.Image, orientation: int, path: Path, **kwargs: Any) -> Path:
    stored = upright.transpose(STORE[orientation]) if orientation != 1 else upright
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(path, exif=exif, **kwargs)
    return path


def _corners(image: Image.Image) -> list[tuple[int, ...]]:
    w, h = image.size
    return [image.getpixel(xy) for xy in ((2, 2), (w - 3, 2), (2, h - 3), (w - 3, h - 3))]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(tmp_path: Path, orientation: int) -> None:
    path = _save_oriented(_quadrants(), orientation, tmp_path / f"o{orientation}.png")
    result = load_image(path)
    assert result.size == (40, 20)
    assert _corners(result) == [RED, GREEN, BLUE, YELLOW]


# --- generated: modes ----------------------------------------------------------------------------


def test_16bit_greyscale_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[65535, 32768], [257, 0]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    grey = _pixels(load_image(tmp_path / "g16.png"))[..., 0]
    assert grey.tolist() == [[255, 128], [1, 0]]


def test_16bit_rgb_png_is_scaled(tmp_path: Path) -> None:
    row = struct.pack(">6H", 65535, 32768, 0, 0, 257, 65535)
    path = tmp_path / "rgb16.png"
    path.write_bytes(_png(2, 1, bit_depth=16, colour_type=2, rows=[row]))
    assert _pixels(load_image(path)).tolist() == [[[255, 128, 0], [0, 1, 255]]]


@pytest.mark.parametrize(
    ("array", "mode", "expected"),
    [
        (np.array([[0, 32768, 65535]], np.int32), "I", [0, 128, 255]),
        (np.array([[-1000, 0, 1000]], np.int32), "I", [0, 128, 255]),
        (np.array([[0.0, 0.5, 1.0]], np.float32), "F", [0, 128, 255]),
        (np.array([[-2.0, 3.0, np.nan]], np.float32), "F", [0, 255, 0]),
    ],
    ids=["I-16bit-range", "I-signed", "F-unit", "F-stretch-nan"],
)
def test_wide_greyscale_modes(array: np.ndarray, mode: str, expected: list[int]) -> None:
    grey = _pixels(load_image(Image.fromarray(array, mode)))[0, :, 0]
    assert grey.tolist() == expected


def test_transparent_rgba_becomes_white_and_half_alpha_blends(tmp_path: Path) -> None:
    image = Image.new("RGBA", (4, 2), (0, 0, 0, 0))
    image.paste((255, 0, 0, 128), (0, 1, 4, 2))
    image.save(tmp_path / "a.png")
    pixels = _pixels(load_image(tmp_path / "a.png"))
    assert (pixels[0] == 255).all()
    assert np.abs(pixels[1] - [255, 127, 127]).max() <= 1


def test_palette_transparency_becomes_white(tmp_path: Path) -> None:
    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.paste(1, (0, 0, 2, 4))
    image.save(tmp_path / "p.png", transparency=0)
    pixels = _pixels(load_image(tmp_path / "p.png"))
    assert (pixels[:, :2] == RED).all() and (pixels[:, 2:] == 255).all()


@pytest.mark.parametrize(
    ("mode", "value", "expected"),
    [
        ("LA", (10, 0), (255, 255, 255)),
        ("La", (0, 0), (255, 255, 255)),
        ("RGBa", (0, 0, 0, 0), (255, 255, 255)),
        ("PA", (0, 0), (255, 255, 255)),
        ("1", 1, (255, 255, 255)),
        ("HSV", (0, 255, 255), RED),
        ("YCbCr", (76, 85, 255), RED),
        ("CMYK", (0, 255, 255, 0), RED),
    ],
)
def test_in_memory_modes_convert(mode: str, value: Any, expected: tuple[int, ...]) -> None:
    pixels = _pixels(load_image(Image.new(mode, (2, 2), value)))
    assert np.abs(pixels - expected).max() <= 2


CMYK_PATCHES = [
    ((255, 0, 0, 0), (0, 255, 255)),
    ((0, 255, 0, 0), (255, 0, 255)),
    ((0, 0, 255, 0), (255, 255, 0)),
    ((0, 0, 0, 255), (0, 0, 0)),
    ((0, 0, 0, 0), (255, 255, 255)),
]


@pytest.mark.parametrize(("suffix", "tolerance"), [(".tif", 0), (".jpg", 12)])
def test_cmyk_files_give_pure_rgb(tmp_path: Path, suffix: str, tolerance: int) -> None:
    image = Image.new("CMYK", (16 * len(CMYK_PATCHES), 16))
    for i, (cmyk, _) in enumerate(CMYK_PATCHES):
        image.paste(cmyk, (16 * i, 0, 16 * i + 16, 16))
    image.save(tmp_path / f"cmyk{suffix}", quality=100)
    result = load_image(tmp_path / f"cmyk{suffix}")
    for i, (_, rgb) in enumerate(CMYK_PATCHES):
        pixel = result.getpixel((16 * i + 8, 8))
        assert np.abs(np.subtract(pixel, rgb)).max() <= tolerance, (i, pixel)


@pytest.mark.parametrize("suffix", [".gif", ".png", ".webp", ".tif"])
def test_animation_uses_first_frame(tmp_path: Path, suffix: str) -> None:
    frames = [Image.new("RGB", (8, 8), colour) for colour in (RED, GREEN, BLUE)]
    path = tmp_path / f"anim{suffix}"
    frames[0].save(path, save_all=True, append_images=frames[1:], lossless=True)
    with Image.open(path) as raw:
        assert getattr(raw, "n_frames", 1) == 3
    assert np.abs(_pixels(load_image(path)) - RED).max() <= 2


# --- generated: inputs and options ---------------------------------------------------------------


def _jpeg_bytes(size: tuple[int, int] = (64, 48), **kwargs: Any) -> bytes:
    buffer = io.BytesIO()
    _quadrants(*size).save(buffer, "JPEG", quality=95, **kwargs)
    return buffer.getvalue()


def test_bytes_bytearray_path_and_str_inputs_agree(tmp_path: Path) -> None:
    data = _jpeg_bytes()
    (tmp_path / "q.jpg").write_bytes(data)
    results = [load_image(s) for s in (data, bytearray(data), tmp_path / "q.jpg")]
    results.append(load_image(str(tmp_path / "q.jpg")))
    assert all(np.array_equal(_pixels(r), _pixels(results[0])) for r in results)
    assert results[0].size == (64, 48)


def test_pil_input_is_converted_without_being_modified() -> None:
    source = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    result = load_image(source)
    assert result is not source and source.mode == "RGBA"
    assert (_pixels(result) == 255).all()
    rgb = Image.new("RGB", (4, 4), RED)
    assert load_image(rgb) is not rgb


def test_draft_size_decodes_a_large_jpeg_at_reduced_scale() -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:1200, 0:1600]
    smooth = np.stack([xx * 255 // 1600, yy * 255 // 1200, (xx + yy) * 255 // 2800], axis=2)
    noisy = smooth + rng.integers(-8, 8, smooth.shape)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
    full = load_image(buffer.getvalue())
    small = load_image(buffer.getvalue(), draft_size=(300, 200))
    assert small.size == (400, 300)  # 1/4 scale: the largest that keeps both sides >= request
    assert small.info[ORIGINAL_SIZE] == full.info[ORIGINAL_SIZE] == (1600, 1200)
    assert _mean_diff(small, full.resize(small.size, Image.Resampling.BOX)) < 3


def test_draft_size_respects_rotation_and_transposes_after_draft(tmp_path: Path) -> None:
    path = _save_oriented(_quadrants(800, 400), 6, tmp_path / "r.jpg", quality=95)
    result = load_image(path, draft_size=(50, 200))
    # Stored 400x800; the request is swapped to (200, 50) -> 1/2 scale -> 200x400 -> upright.
    # Drafting with the unswapped request would pick 1/4 and leave the height at 100 < 200.
    assert result.size == (400, 200)
    assert result.info[ORIGINAL_SIZE] == (800, 400)  # upright full size
    error = np.abs(np.subtract(_corners(result), [RED, GREEN, BLUE, YELLOW])).max()
    assert error < 40  # JPEG blurs colours a little; a wrong rotation swaps whole quadrants


def test_draft_size_is_ignored_for_non_jpeg(tmp_path: Path) -> None:
    _quadrants(400, 200).save(tmp_path / "q.png")
    assert load_image(tmp_path / "q.png", draft_size=(50, 25)).size == (400, 200)


@pytest.mark.parametrize("bad", [(0, 10), (10,), (1.5, 2)])
def test_bad_draft_size_is_a_value_error(bad: Any) -> None:
    with pytest.raises(ValueError, match="draft_size must be two positive ints"):
        load_image(_jpeg_bytes(), draft_size=bad)


def test_wrong_source_type_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="not int"):
        load_image(42)  # type: ignore[arg-type]


# --- generated: failures -------------------------------------------------------------------------


def _png(width: int, height: int, *, bit_depth: int, colour_type: int, rows: list[bytes]) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    data = zlib.compress(b"".join(b"\x00" + row for row in rows))
    chunks = chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def _png_header_only(width: int, height: int) -> bytes:
    return _png(width, height, bit_depth=8, colour_type=2, rows=[b"\x00" * 3])


def test_zero_byte_file_and_empty_bytes_are_empty(tmp_path: Path) -> None:
    (tmp_path / "zero.jpg").write_bytes(b"")
    _raise_reason(tmp_path / "zero.jpg", "empty", "zero.jpg: file is empty")
    _raise_reason(b"", "empty", "<bytes>: no image data")


def test_random_bytes_are_not_an_image() -> None:
    data = np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    _raise_reason(data, "not-an-image", "<bytes>: not a recognised image format")


@pytest.mark.parametrize("progressive", [False, True])
def test_jpeg_cut_in_half_is_truncated(progressive: bool) -> None:
    data = _jpeg_bytes((256, 256), progressive=progressive)
    assert not ImageFile.LOAD_TRUNCATED_IMAGES
    _raise_reason(data[: len(data) // 2], "truncated", "image file is truncated")


def test_png_cut_short_is_truncated() -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (64, 64, 3), np.uint8)).save(
        buffer, "PNG"
    )
    _raise_reason(buffer.getvalue()[:-2000], "truncated", "truncated or corrupt")


def test_truncated_images_allowed_globally_are_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    images._warn_truncated_allowed.cache_clear()
    data = _jpeg_bytes((256, 256))
    load_image(data[: len(data) // 2])
    assert "LOAD_TRUNCATED_IMAGES is True" in caplog.text


def test_huge_header_is_a_bomb_before_any_pixel_is_decoded() -> None:
    error = _raise_reason(_png_header_only(100_000, 100_000), "decompression-bomb", "PIL refused")
    assert "MAX_IMAGE_PIXELS" in str(error)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_header_between_our_cap_and_pils_hard_limit_is_rejected_by_our_check() -> None:
    side = int(MAX_IMAGE_PIXELS**0.5) + 100
    _raise_reason(_png_header_only(side, side), "decompression-bomb", "exceeds max_pixels=")


@pytest.mark.filterwarnings("error::PIL.Image.DecompressionBombWarning")
def test_pil_bomb_warning_escalated_to_error_is_typed() -> None:
    _raise_reason(_png_header_only(10_000, 10_000), "decompression-bomb", "decompression bomb")


def test_max_pixels_caps_real_images() -> None:
    _raise_reason(_jpeg_bytes(), "decompression-bomb", "64x48 = 3072 pixels", max_pixels=3000)
    assert load_image(_jpeg_bytes(), max_pixels=3072).size == (64, 48)


def test_zero_sized_pil_image_is_rejected() -> None:
    _raise_reason(Image.new("RGB", (0, 5)), "not-an-image", "<PIL.Image>: header declares")


def test_directory_and_missing_file_are_unreadable(tmp_path: Path) -> None:
    _raise_reason(tmp_path, "unreadable", "is a directory")
    _raise_reason(tmp_path / "nope.jpg", "unreadable", "nope.jpg: no such file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads chmod 000 files anyway")
def test_unreadable_permissions(tmp_path: Path) -> None:
    path = tmp_path / "locked.jpg"
    path.write_bytes(_jpeg_bytes())
    path.chmod(0)
    try:
        _raise_reason(path, "unreadable", "permission denied")
    finally:
        path.chmod(0o600)


def test_recognised_but_undecodable_format_is_unsupported() -> None:
    grib = b"GRIB\x00\x00\x00\x01" + bytes(64)  # PIL identifies GRIB but ships no decoder
    _raise_reason(grib, "unsupported", "cannot find loader")
