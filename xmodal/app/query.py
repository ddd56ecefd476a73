"""Checking what a user or a program asked for, before any model work: no Gradio, no FastAPI.

The page and the HTTP API both hand raw values to :func:`parse_query`, so limits and wording are
the same whichever door a query came in by.
"""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import dataclass
from typing import Any

from PIL import Image

from xmodal.app.config import AppConfig
from xmodal.errors import XmodalError


class QueryError(XmodalError):
    """A query from the UI or the API is empty or malformed."""


class UploadTooLarge(QueryError):
    """An uploaded image is over the byte limit."""


@dataclass(frozen=True, slots=True)
class RawQuery:
    """Values as they arrived from a widget or a JSON body, not yet checked.

    ``image`` is an upload path, raw bytes or a PIL image. ``where`` is filter text in the
    ``xmodal.index.filters`` grammar (``"ext:jpg and width>=1024"``).
    """

    text: str | None = None
    image: Any = None
    k: Any = None
    threshold: Any = None
    negative: str | None = None
    image_weight: Any = None
    where: str | None = None
    mode: Any = None
    keyword_weight: Any = None


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """A validated query: at least one of ``text`` and ``image``; ``k`` within the app's bounds."""

    text: str | None
    image: Image.Image | None
    k: int
    threshold: float | None
    negative: str | None = None
    image_weight: float = 0.5
    where: str | None = None
    # What was asked for when it was over the server's maximum and ``k`` was lowered to it.
    k_requested: int | None = None
    mode: str = "vector"
    keyword_weight: float = 0.5

    @property
    def notice(self) -> str | None:
        """A line saying ``k`` was lowered, or None."""
        if self.k_requested is None:
            return None
        return f"Showing at most {self.k} results (asked for {self.k_requested})."


def parse_query(raw: RawQuery, config: AppConfig) -> SearchQuery:
    """Check and normalise raw values; raise ``QueryError`` saying what to fix.

    Paths and bytes are decoded with the same policy as indexing (``xmodal.images.load_image``)
    and capped at ``max_upload_pixels``.
    """
    text = _clean_text(raw.text, "description", config)
    negative = _clean_text(raw.negative, "negative text", config)
    where = _clean_text(raw.where, "filter", config)
    if text is None and raw.image is None:
        raise QueryError("Type a description or upload an image to search.")
    k = parse_k(config.default_k if raw.k is None else raw.k)
    return SearchQuery(
        text=text,
        image=None if raw.image is None else decode_upload(raw.image, config),
        k=min(k, config.max_k),
        threshold=_parse_threshold(raw.threshold),
        negative=negative,
        image_weight=_parse_weight(raw.image_weight),
        where=where,
        mode=_parse_mode(raw.mode),
        keyword_weight=_parse_weight(raw.keyword_weight, "keyword weight", "vector", "keyword"),
        k_requested=k if k > config.max_k else None,
    )


def _parse_mode(mode: Any) -> str:
    """vector (the default), keyword or hybrid: see ``xmodal.pipelines.hybrid``."""
    if mode is None or (isinstance(mode, str) and not mode.strip()):
        return "vector"
    chosen = mode.strip().lower() if isinstance(mode, str) else None
    if chosen not in ("vector", "keyword", "hybrid"):
        raise QueryError("The search mode must be vector, keyword or hybrid.")
    return chosen


def _clean_text(value: Any, what: str, config: AppConfig) -> str | None:
    if value is not None and not isinstance(value, str):
        raise QueryError(f"The {what} must be text.")
    value = (value or "").strip() or None
    if value is not None and not _is_unicode(value):
        raise QueryError(
            f"The {what} is not valid Unicode text (it has an unpaired surrogate); send UTF-8."
        )
    if value is not None and len(value) > config.max_text_chars:
        raise QueryError(
            f"The {what} has {len(value):,} characters; shorten it to "
            f"{config.max_text_chars:,} or fewer."
        )
    return value


def _is_unicode(text: str) -> bool:
    """False for text with lone surrogates (a JSON ``"\\ud800"``): no encoder can take it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_k(k: Any) -> int:
    """The number of results asked for, by the rule every front end shares (at least 1).

    Clamping to the server's maximum is the caller's, so it can say that it clamped.
    """
    from xmodal.pipelines.search import check_k  # lazy: the model stack is not needed here

    try:
        return check_k(k)
    except XmodalError as exc:
        raise QueryError(str(exc)) from None


def _parse_threshold(threshold: Any) -> float | None:
    if threshold is None or (isinstance(threshold, str) and not threshold.strip()):
        return None
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise QueryError("The minimum score must be a number, or left empty.") from None
    if not math.isfinite(value):
        raise QueryError("The minimum score must be a finite number, or left empty.")
    return value


def _parse_weight(
    weight: Any, what: str = "image weight", zero: str = "text", one: str = "image"
) -> float:
    if weight is None or (isinstance(weight, str) and not weight.strip()):
        return 0.5
    try:
        value = float(weight)
    except (TypeError, ValueError):
        value = math.nan
    if not 0.0 <= value <= 1.0:  # also false for NaN
        raise QueryError(f"The {what} must be a number from 0 ({zero} only) to 1 ({one} only).")
    return value


def decode_upload(image: Any, config: AppConfig) -> Image.Image:
    """An uploaded image as RGB, pixel-capped; bytes and paths go through the indexing decoder."""
    if isinstance(image, Image.Image):
        if image.width * image.height > config.max_upload_pixels:
            raise QueryError(
                f"The image has {image.width}x{image.height} pixels; the limit is "
                f"{config.max_upload_pixels:,} pixels. Upload a smaller image."
            )
        return image.convert("RGB")
    if isinstance(image, bytes | bytearray) and len(image) > config.max_upload_bytes:
        raise _too_large(len(image), config)
    from xmodal.images import load_image  # lazy: the app imports without the decoding stack

    return load_image(image, max_pixels=config.max_upload_pixels)


def decode_base64_image(data: Any, config: AppConfig) -> bytes:
    """The bytes of a base64 image from a JSON body (a ``data:`` URL prefix is allowed).

    The size is checked from the text length before decoding, so an oversized upload costs no
    memory beyond the request body itself.
    """
    if not isinstance(data, str):
        raise QueryError("The image must be a base64 string.")
    if data.startswith("data:"):
        data = data.partition(",")[2]
    data = "".join(data.split())
    if len(data) * 3 // 4 > config.max_upload_bytes + 2:
        raise _too_large(len(data) * 3 // 4, config)
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise QueryError(
            "The image is not valid base64; send the file's bytes base64-encoded."
        ) from None
    if len(raw) > config.max_upload_bytes:
        raise _too_large(len(raw), config)
    return raw


def _too_large(size: int, config: AppConfig) -> UploadTooLarge:
    return UploadTooLarge(
        f"The image has {size:,} bytes; the limit is {config.max_upload_bytes:,} bytes. "
        "Upload a smaller image."
    )
