"""xmodal.images on generated edge cases: orientation, modes, inputs, options, failures."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from image_helpers import STORE, mean_diff, raise_reason, rgb_array
from PIL import Image, ImageFile

from xmodal import images
from xmodal.images import MAX_IMAGE_PIXELS, ORIGINAL_SIZE, load_image

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
    grey = rgb_array(load_image(tmp_path / "g16.png"))[..., 0]
    assert grey.tolist() == [[255, 128], [1, 0]]


def test_16bit_rgb_png_is_scaled(tmp_path: Path) -> None:
    row = struct.pack(">6H", 65535, 32768, 0, 0, 257, 65535)
    path = tmp_path / "rgb16.png"
    path.write_bytes(_png(2, 1, bit_depth=16, colour_type=2, rows=[row]))
    assert rgb_array(load_image(path)).tolist() == [[[255, 128, 0], [0, 1, 255]]]


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
    grey = rgb_array(load_image(Image.fromarray(array, mode)))[0, :, 0]
    assert grey.tolist() == expected


def test_transparent_rgba_becomes_white_and_half_alpha_blends(tmp_path: Path) -> None:
    image = Image.new("RGBA", (4, 2), (0, 0, 0, 0))
    image.paste((255, 0, 0, 128), (0, 1, 4, 2))
    image.save(tmp_path / "a.png")
    pixels = rgb_array(load_image(tmp_path / "a.png"))
    assert (pixels[0] == 255).all()
    assert np.abs(pixels[1] - [255, 127, 127]).max() <= 1


def test_palette_transparency_becomes_white(tmp_path: Path) -> None:
    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.paste(1, (0, 0, 2, 4))
    image.save(tmp_path / "p.png", transparency=0)
    pixels = rgb_array(load_image(tmp_path / "p.png"))
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
    pixels = rgb_array(load_image(Image.new(mode, (2, 2), value)))
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
    assert np.abs(rgb_array(load_image(path)) - RED).max() <= 2


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
    assert all(np.array_equal(rgb_array(r), rgb_array(results[0])) for r in results)
    assert results[0].size == (64, 48)


def test_pil_input_is_converted_without_being_modified() -> None:
    source = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    result = load_image(source)
    assert result is not source and source.mode == "RGBA"
    assert (rgb_array(result) == 255).all()
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
    assert mean_diff(small, full.resize(small.size, Image.Resampling.BOX)) < 3


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
    raise_reason(tmp_path / "zero.jpg", "empty", "zero.jpg: file is empty")
    raise_reason(b"", "empty", "<bytes>: no image data")


def test_random_bytes_are_not_an_image() -> None:
    data = np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    raise_reason(data, "not-an-image", "<bytes>: not a recognised image format")


@pytest.mark.parametrize("progressive", [False, True])
def test_jpeg_cut_in_half_is_truncated(progressive: bool) -> None:
    data = _jpeg_bytes((256, 256), progressive=progressive)
    assert not ImageFile.LOAD_TRUNCATED_IMAGES
    raise_reason(data[: len(data) // 2], "truncated", "image file is truncated")


def test_png_cut_short_is_truncated() -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (64, 64, 3), np.uint8)).save(
        buffer, "PNG"
    )
    raise_reason(buffer.getvalue()[:-2000], "truncated", "truncated or corrupt")


def test_truncated_images_allowed_globally_are_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    images._warn_truncated_allowed.cache_clear()
    data = _jpeg_bytes((256, 256))
    load_image(data[: len(data) // 2])
    assert "LOAD_TRUNCATED_IMAGES is True" in caplog.text


def test_huge_header_is_a_bomb_before_any_pixel_is_decoded() -> None:
    error = raise_reason(_png_header_only(100_000, 100_000), "decompression-bomb", "PIL refused")
    assert "MAX_IMAGE_PIXELS" in str(error)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_header_between_our_cap_and_pils_hard_limit_is_rejected_by_our_check() -> None:
    side = int(MAX_IMAGE_PIXELS**0.5) + 100
    raise_reason(_png_header_only(side, side), "decompression-bomb", "exceeds max_pixels=")


@pytest.mark.filterwarnings("error::PIL.Image.DecompressionBombWarning")
def test_pil_bomb_warning_escalated_to_error_is_typed() -> None:
    # 144 MP: between PIL's limit (set to ours) and twice it, where PIL warns.
    raise_reason(_png_header_only(12_000, 12_000), "decompression-bomb", "decompression bomb")


def test_max_pixels_caps_real_images() -> None:
    raise_reason(_jpeg_bytes(), "decompression-bomb", "64x48 = 3072 pixels", max_pixels=3000)
    assert load_image(_jpeg_bytes(), max_pixels=3072).size == (64, 48)


def test_zero_sized_pil_image_is_rejected() -> None:
    raise_reason(Image.new("RGB", (0, 5)), "not-an-image", "<PIL.Image>: header declares")


def test_directory_and_missing_file_are_unreadable(tmp_path: Path) -> None:
    raise_reason(tmp_path, "unreadable", "is a directory")
    raise_reason(tmp_path / "nope.jpg", "unreadable", "nope.jpg: no such file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads chmod 000 files anyway")
def test_unreadable_permissions(tmp_path: Path) -> None:
    path = tmp_path / "locked.jpg"
    path.write_bytes(_jpeg_bytes())
    path.chmod(0)
    try:
        raise_reason(path, "unreadable", "permission denied")
    finally:
        path.chmod(0o600)


def test_format_outside_the_allow_list_is_not_an_image() -> None:
    grib = b"GRIB\x00\x00\x00\x01" + bytes(64)  # PIL has a GRIB plugin; it is not allowed
    raise_reason(grib, "not-an-image", "not a recognised image format (or its header is invalid)")
