"""Decoding policy: a path, bytes or PIL image in, a fully loaded 8-bit RGB image out.

Indexing and queries both go through :func:`load_image`, so an image embeds the same way whichever
door it came in by. Every failure is an :class:`~xmodal.errors.ImageDecodeError` with a reason code;
no raw PIL or OS error escapes.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import stat
from typing import IO

import numpy as np
from PIL import Image, ImageCms, ImageFile, ImageOps, UnidentifiedImageError

from xmodal.errors import ImageDecodeError

__all__ = ["MAX_IMAGE_PIXELS", "ORIGINAL_SIZE", "load_image"]

logger = logging.getLogger(__name__)

# 2**27 (~134 MP) is above every single-shot camera output in common use (108 MP phone sensors
# write 12000x9000 = 108 MP; full-frame cameras write <= 61 MP), so real photos pass, while the
# decoded RGB buffer stays <= 384 MiB per worker. It is also below PIL's hard bomb limit
# (2 * Image.MAX_IMAGE_PIXELS = 178,956,970), so with defaults PIL never refuses an image that
# this policy would accept: our check, made on the header before any pixel is decoded, decides.
MAX_IMAGE_PIXELS: int = 2**27

# ``image.info`` key on every decoded file: its full upright (width, height), also when a
# reduced-size decode (``draft_size``) produced fewer pixels.
ORIGINAL_SIZE = "xmodal_original_size"

_WHITE = (255, 255, 255)
_ORIENTATION_TAG = 0x0112
_SWAPS_AXES = frozenset({5, 6, 7, 8})  # EXIF orientations that rotate by 90 degrees
_UNSUPPORTED_HINTS = ("not available", "cannot find loader", "not supported", "unsupported")


def load_image(
    source: str | os.PathLike[str] | bytes | Image.Image,
    *,
    max_pixels: int = MAX_IMAGE_PIXELS,
    draft_size: tuple[int, int] | None = None,
) -> Image.Image:
    """Decode ``source`` into a fully loaded 8-bit RGB image.

    EXIF orientation is applied, every mode is converted to RGB (16-bit scaled, alpha composited on
    white) and only the first frame of an animation or multi-page file is used. ``max_pixels``
    caps width * height, checked from the header before pixels are decoded. ``draft_size`` lets a
    large JPEG decode at a reduced DCT scale while both sides stay >= the requested (width, height)
    of the upright image. A ``PIL.Image`` input is used at its current frame and never modified.

    Raises:
        ImageDecodeError: with ``reason`` one of ``empty``, ``not-an-image``, ``truncated``,
            ``decompression-bomb``, ``unreadable``, ``unsupported``.
    """
    if draft_size is not None:
        _check_draft_size(draft_size)
    if isinstance(source, Image.Image):
        return _load_pil(source, max_pixels)
    if isinstance(source, bytes | bytearray | memoryview):
        name = "<bytes>"
        if len(source) == 0:
            raise ImageDecodeError("empty", "no image data (0 bytes)", name)
        return _decode_stream(io.BytesIO(source), name, max_pixels, draft_size)
    if isinstance(source, str | os.PathLike):
        path = os.fspath(source)
        with _open_file(path) as handle:
            return _decode_stream(handle, path, max_pixels, draft_size)
    raise TypeError(
        f"load_image() takes a path, bytes or a PIL.Image.Image, not {type(source).__name__}"
    )


def _check_draft_size(draft_size: tuple[int, int]) -> None:
    if len(draft_size) != 2 or not all(isinstance(v, int) and v > 0 for v in draft_size):
        raise ValueError(f"draft_size must be two positive ints (width, height), got {draft_size}")


def _open_file(path: str) -> IO[bytes]:
    """Open a regular file for reading, mapping OS failures to ``unreadable``/``empty``."""
    try:
        info = os.stat(path)
        if stat.S_ISDIR(info.st_mode):
            raise ImageDecodeError("unreadable", "is a directory, not an image file", path)
        if not stat.S_ISREG(info.st_mode):
            raise ImageDecodeError("unreadable", "is not a regular file", path)
        if info.st_size == 0:
            raise ImageDecodeError("empty", "file is empty (0 bytes)", path)
        return open(path, "rb")  # noqa: SIM115 - the caller closes it with `with`
    except FileNotFoundError:
        raise ImageDecodeError("unreadable", "no such file; check the path", path) from None
    except PermissionError:
        raise ImageDecodeError(
            "unreadable", "permission denied; check the file's permissions", path
        ) from None
    except OSError as exc:
        raise ImageDecodeError(
            "unreadable", f"cannot read file: {exc.strerror or exc}", path
        ) from exc


def _decode_stream(
    handle: IO[bytes], name: str, max_pixels: int, draft_size: tuple[int, int] | None
) -> Image.Image:
    image = _open_image(handle, name)
    try:
        _check_pixels(image.size, max_pixels, name)
        width, height = image.size
        if _orientation(image) in _SWAPS_AXES:
            width, height = height, width
        if draft_size is not None:
            _apply_draft(image, draft_size)
        if ImageFile.LOAD_TRUNCATED_IMAGES:
            _warn_truncated_allowed()
        _load_pixels(image, name)
        out = _normalise(image, name)
        out.info[ORIGINAL_SIZE] = (width, height)  # upright, before any reduced-size decode
        return out
    finally:
        image.close()


def _load_pil(image: Image.Image, max_pixels: int) -> Image.Image:
    name = "<PIL.Image>"
    _check_pixels(image.size, max_pixels, name)
    _load_pixels(image, name)
    return _normalise(image, name)  # always a new object: the caller's image is left alone


def _open_image(handle: IO[bytes], name: str) -> ImageFile.ImageFile:
    try:
        return Image.open(handle)
    except UnidentifiedImageError:
        raise ImageDecodeError(
            "not-an-image", "not a recognised image format (or its header is invalid)", name
        ) from None
    except Exception as exc:  # PIL plugins raise many types on hostile headers
        raise _classify(exc, name) from exc


def _load_pixels(image: Image.Image, name: str) -> None:
    try:
        image.load()
    except Exception as exc:
        raise _classify(exc, name) from exc


def _classify(exc: BaseException, name: str) -> ImageDecodeError:
    """Turn an exception raised while opening or decoding into a typed error."""
    text = str(exc)
    if isinstance(exc, Image.DecompressionBombError | Image.DecompressionBombWarning):
        return ImageDecodeError(
            "decompression-bomb",
            f"{text} PIL refused it; if the image is trusted, raise PIL.Image.MAX_IMAGE_PIXELS "
            "and pass a larger max_pixels",
            name,
        )
    if isinstance(exc, MemoryError) or "too large" in text.lower():
        return ImageDecodeError(
            "decompression-bomb", f"decoding needs too much memory ({text or 'MemoryError'})", name
        )
    if isinstance(exc, OSError) and exc.errno is not None:
        return ImageDecodeError("unreadable", f"cannot read file: {exc.strerror or exc}", name)
    if isinstance(exc, NotImplementedError) or any(h in text for h in _UNSUPPORTED_HINTS):
        return ImageDecodeError(
            "unsupported", f"format recognised but cannot be decoded here ({text})", name
        )
    return ImageDecodeError(
        "truncated", f"image data is truncated or corrupt ({type(exc).__name__}: {text})", name
    )


def _check_pixels(size: tuple[int, int], max_pixels: int, name: str) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageDecodeError("not-an-image", f"header declares an empty size {size}", name)
    if width * height > max_pixels:
        raise ImageDecodeError(
            "decompression-bomb",
            f"{width}x{height} = {width * height} pixels exceeds max_pixels={max_pixels}; "
            "downscale the image or pass a larger max_pixels if it is trusted",
            name,
        )


@functools.cache
def _warn_truncated_allowed() -> None:
    # Someone else set this global; undoing it would not be thread-safe, so say so once.
    logger.warning(
        "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True in this process: truncated images will "
        "decode with grey fill instead of failing; set it to False to reject them"
    )


def _apply_draft(image: ImageFile.ImageFile, draft_size: tuple[int, int]) -> None:
    """Let libjpeg decode at 1/2, 1/4 or 1/8 scale; PIL keeps both sides >= the request."""
    if image.format not in ("JPEG", "MPO"):
        return
    width, height = draft_size
    if _orientation(image) in _SWAPS_AXES:
        # draft_size describes the upright image; the stored one is rotated by 90 degrees.
        width, height = height, width
    image.draft("RGB", (width, height))  # keeps the JPEG's own mode; only the scale changes


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # corrupt EXIF must not fail the image
        return 1
    return value if isinstance(value, int) else 1


def _normalise(image: Image.Image, name: str) -> Image.Image:
    upright = _exif_transpose(image, name)
    try:
        return _to_rgb(upright)
    except (ValueError, OSError) as exc:
        raise ImageDecodeError(
            "unsupported", f"cannot convert mode {image.mode!r} to RGB ({exc})", name
        ) from exc


def _exif_transpose(image: Image.Image, name: str) -> Image.Image:
    if _orientation(image) == 1:
        return image
    try:
        return ImageOps.exif_transpose(image)
    except Exception as exc:  # a broken orientation tag is not worth losing the image over
        logger.warning("%s: ignoring unusable EXIF orientation (%s)", name, exc)
        return image


def _to_rgb(image: Image.Image) -> Image.Image:
    """Every branch builds a new image, so the input is never returned or modified."""
    mode = image.mode
    if mode.startswith("I") or mode == "F":
        return _high_depth_to_rgb(image)
    if mode == "LAB":
        return ImageCms.applyTransform(image, _lab_to_srgb())
    if mode == "La":  # premultiplied; PIL only un-premultiplies La -> LA
        image = image.convert("LA")
    if image.has_transparency_data:
        return _flatten_on_white(image.convert("RGBA"))
    # 1, L, P, RGB, RGBX, CMYK (PIL already un-inverts Adobe CMYK JPEGs), YCbCr, HSV.
    return image.convert("RGB")


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    """Scale 16/32-bit integer and float greyscale to 8 bits instead of clipping at 255."""
    raw = np.asarray(image)
    grey = _scale_to_uint8(raw, image.mode)
    rgb = Image.fromarray(np.repeat(grey[:, :, None], 3, axis=2), "RGB")
    transparent = image.info.get("transparency")
    if isinstance(transparent, int) and image.mode != "F":
        alpha = np.where(raw == transparent, 0, 255).astype(np.uint8)
        rgb = _flatten_on_white(Image.merge("RGBA", (*rgb.split(), Image.fromarray(alpha, "L"))))
    return rgb


def _scale_to_uint8(raw: np.ndarray, mode: str) -> np.ndarray:
    if mode.startswith("I;16") or (
        mode == "I" and raw.size and raw.min() >= 0 and raw.max() <= 65535
    ):
        # round(v / 257) in integers: 65535 -> 255, 32768 -> 128; the full 16-bit range survives.
        return ((raw.astype(np.uint32) + 128) // 257).astype(np.uint8)
    values = raw.astype(np.float32)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(raw.shape, np.uint8)
    low, high = float(values[finite].min()), float(values[finite].max())
    values = np.where(finite, values, low)
    if mode == "F" and low >= 0 and high <= 1:
        scaled = values * 255.0  # the usual convention for normalised float images
    elif high > low:
        scaled = (values - low) * (255.0 / (high - low))  # arbitrary range: stretch it
    else:
        scaled = values
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _flatten_on_white(rgba: Image.Image) -> Image.Image:
    background = Image.new("RGB", rgba.size, _WHITE)
    background.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))
    return background


@functools.cache
def _lab_to_srgb() -> ImageCms.ImageCmsTransform:
    # PIL's plain convert() copies L*a*b* bytes into RGB on older versions; LittleCMS does it
    # colorimetrically. NOCACHE makes the shared transform safe to use from several threads.
    return ImageCms.buildTransform(
        ImageCms.createProfile("LAB"),
        ImageCms.createProfile("sRGB"),
        "LAB",
        "RGB",
        flags=ImageCms.Flags.NOCACHE,
    )
