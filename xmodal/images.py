"""Decoding policy: a path, bytes or PIL image in, a fully loaded 8-bit RGB image out.

Indexing and queries both go through :func:`load_image`, so an image embeds the same way whichever
door it came in by. Every failure is an :class:`~xmodal.errors.ImageDecodeError` with a reason code;
no raw PIL or OS error escapes.
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import os
import warnings
from typing import IO

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from xmodal.errors import ImageDecodeError
from xmodal.image_files import read_file
from xmodal.image_modes import to_rgb

__all__ = [
    "ALLOWED_FORMATS",
    "CONTENT_HASH",
    "MAX_IMAGE_PIXELS",
    "ORIGINAL_SIZE",
    "content_hasher",
    "load_image",
]

logger = logging.getLogger(__name__)

# 2**27 (~134 MP) is above every single-shot camera output in common use (108 MP phone sensors
# write 12000x9000 = 108 MP; full-frame cameras write <= 61 MP), so real photos pass, while the
# decoded RGB buffer stays <= 384 MiB per worker.
MAX_IMAGE_PIXELS: int = 2**27

# The one pixel cap of this process. PIL warns above its own MAX_IMAGE_PIXELS (89.5 MP by default,
# below ours: 108 MP photos printed a DecompressionBombWarning on stderr) and refuses above twice
# it. PIL's limit is set to ours, so it never speaks about an image this policy accepts; the
# warning it gives between 1x and 2x is silenced because our check, made on the header before any
# pixel is decoded, refuses those images with a typed reason anyway. Above 2x, PIL's error is
# turned into the same reason (``_classify``). A filter rather than ``catch_warnings``: that one
# swaps the process-wide filter list and is not thread-safe (the app decodes in threads).
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

# The formats PIL may open. An allow-list, because PIL identifies a file by its content: an EPS
# named .png would otherwise reach Ghostscript (a subprocess run on untrusted input), and
# PDF/PS/WMF and other rarely used plugins are attack surface with no photo in them. Every format
# here decodes in-process. JPEG covers MPO (multi-picture JPEG); PPM covers PGM/PBM/PNM.
ALLOWED_FORMATS: tuple[str, ...] = (
    "JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP", "PPM", "PSD", "JPEG2000", "AVIF", "ICO", "TGA",
)  # fmt: skip
# Formats refused by name, so that the message says what the file is (sniffed from its start).
_REFUSED_MAGIC = ((b"%!PS", "PostScript/EPS"), (b"\xc5\xd0\xd3\xc6", "EPS"), (b"%PDF", "PDF"))

# ``image.info`` key on every decoded image: the content hash (``content_hasher``) of exactly the
# bytes that were decoded, so a stored hash always describes the stored vector.
CONTENT_HASH = "xmodal_content_hash"
# ``image.info`` key on every decoded file: its full upright (width, height), also when a
# reduced-size decode (``draft_size``) produced fewer pixels.
ORIGINAL_SIZE = "xmodal_original_size"

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
    white) and only the first frame of an animation or multi-page file is used. Only the formats
    in ``ALLOWED_FORMATS`` are opened. ``max_pixels`` caps width * height, checked from the header
    before pixels are decoded. ``draft_size`` lets a large JPEG decode at a reduced DCT scale
    while both sides stay >= the requested (width, height) of the upright image. A file is read
    once, into memory, and those bytes are both decoded and hashed (``info[CONTENT_HASH]``). A
    ``PIL.Image`` input is used at its current frame and never modified.

    Raises:
        ImageDecodeError: with ``reason`` one of ``empty``, ``not-an-image``, ``truncated``,
            ``decompression-bomb``, ``unreadable``, ``unsupported``, ``changed-during-read``,
            ``too-large``.
    """
    if draft_size is not None:
        _check_draft_size(draft_size)
    if isinstance(source, Image.Image):
        return _load_pil(source, max_pixels)
    if isinstance(source, bytes | bytearray | memoryview):
        name = "<bytes>"
        if len(source) == 0:
            raise ImageDecodeError("empty", "no image data (0 bytes)", name)
        return _decode_bytes(bytes(source), name, max_pixels, draft_size)
    if isinstance(source, str | os.PathLike):
        path = os.fspath(source)
        return _decode_bytes(read_file(path), path, max_pixels, draft_size)
    raise TypeError(
        f"load_image() takes a path, bytes or a PIL.Image.Image, not {type(source).__name__}"
    )


def content_hasher() -> hashlib.blake2b:
    """The content hash of the catalog: blake2b-128 (feed it bytes, read ``hexdigest()``)."""
    return hashlib.blake2b(digest_size=16)


def _check_draft_size(draft_size: tuple[int, int]) -> None:
    if len(draft_size) != 2 or not all(isinstance(v, int) and v > 0 for v in draft_size):
        raise ValueError(f"draft_size must be two positive ints (width, height), got {draft_size}")


def _decode_bytes(
    data: bytes, name: str, max_pixels: int, draft_size: tuple[int, int] | None
) -> Image.Image:
    image = _decode_stream(io.BytesIO(data), name, max_pixels, draft_size)
    digest = content_hasher()
    digest.update(data)
    image.info[CONTENT_HASH] = digest.hexdigest()
    return image


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
        return Image.open(handle, formats=ALLOWED_FORMATS)
    except UnidentifiedImageError:
        raise _unidentified(handle, name) from None
    except Exception as exc:  # PIL plugins raise many types on hostile headers
        raise _classify(exc, name) from exc


def _unidentified(handle: IO[bytes], name: str) -> ImageDecodeError:
    handle.seek(0)
    start = handle.read(4)
    for magic, kind in _REFUSED_MAGIC:
        if start == magic:
            return ImageDecodeError(
                "unsupported",
                f"{kind} is not decoded (it would run an interpreter on the file); convert it "
                "to PNG or JPEG",
                name,
            )
    return ImageDecodeError(
        "not-an-image",
        "not a recognised image format (or its header is invalid); accepted: "
        + ", ".join(ALLOWED_FORMATS),
        name,
    )


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
        return to_rgb(upright)
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
