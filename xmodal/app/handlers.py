"""What the app does for a query, as plain functions: no Gradio here.

The Gradio layout (``ui.py``) and a later HTTP API both call these, so validation, error wording
and labels live in one place. Every function that talks to the retriever turns failures into a
message for the user; none lets a traceback reach a page.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, Protocol

from PIL import Image

from xmodal.app.config import AppConfig
from xmodal.errors import XmodalError
from xmodal.index.records import Hit

log = logging.getLogger(__name__)

GalleryItem = tuple[Image.Image, str]

UNEXPECTED_MESSAGE = "Search failed because of an internal error; the server log has the details."
PLACEHOLDER_RGB = (210, 210, 210)


class RetrieverLike(Protocol):
    """The part of ``xmodal.pipelines.search.Retriever`` the app uses."""

    def search(
        self,
        text: str | None = None,
        image: Any = None,
        *,
        k: int = 10,
        threshold: float | None = None,
    ) -> list[Hit]: ...

    def describe(self) -> dict[str, Any]: ...

    def load_thumbnail(self, hit_id: int, max_side: int = 512) -> Image.Image: ...


class QueryError(XmodalError):
    """A query from the UI or the API is empty or malformed."""


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """A validated query: at least one of ``text`` and ``image``; ``k`` within the app's bounds."""

    text: str | None
    image: Image.Image | None
    k: int
    threshold: float | None


@dataclass(frozen=True, slots=True)
class SearchOutcome:
    """What one search produced for a page: gallery items, the hits behind them and a status line.

    ``ok`` is False when the search itself failed; ``items`` and ``hits`` are then empty.
    """

    items: tuple[GalleryItem, ...]
    hits: tuple[Hit, ...]
    message: str
    ok: bool


def parse_query(
    text: str | None,
    image: Any,
    k: Any,
    threshold: Any,
    config: AppConfig,
) -> SearchQuery:
    """Check and normalise raw widget (or API) values; raise ``QueryError`` with what to fix.

    ``image`` is an upload path, raw bytes or a PIL image; paths and bytes are decoded with the
    same policy as indexing (``xmodal.images.load_image``) and capped at ``max_upload_pixels``.
    """
    text = (text or "").strip() or None
    if text is None and image is None:
        raise QueryError("Type a description or upload an image to search.")
    if text is not None and len(text) > config.max_text_chars:
        raise QueryError(
            f"The description has {len(text):,} characters; shorten it to "
            f"{config.max_text_chars:,} or fewer."
        )
    return SearchQuery(
        text=text,
        image=None if image is None else _decode_upload(image, config),
        k=_parse_k(k, config.max_k),
        threshold=_parse_threshold(threshold),
    )


def _parse_k(k: Any, max_k: int) -> int:
    try:
        value = float(k)
    except (TypeError, ValueError):
        raise QueryError(f"The number of results must be a number from 1 to {max_k}.") from None
    if not math.isfinite(value):
        raise QueryError(f"The number of results must be a number from 1 to {max_k}.")
    return min(max(round(value), 1), max_k)


def _parse_threshold(threshold: Any) -> float | None:
    if threshold is None or (isinstance(threshold, str) and not threshold.strip()):
        return None
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise QueryError("The minimum score must be a number, or left empty.") from None
    return value if math.isfinite(value) else None


def _decode_upload(image: Any, config: AppConfig) -> Image.Image:
    if isinstance(image, Image.Image):
        if image.width * image.height > config.max_upload_pixels:
            raise QueryError(
                f"The image has {image.width}x{image.height} pixels; the limit is "
                f"{config.max_upload_pixels:,} pixels. Upload a smaller image."
            )
        return image.convert("RGB")
    from xmodal.images import load_image  # lazy: the app imports without the decoding stack

    return load_image(image, max_pixels=config.max_upload_pixels)


def hit_label(hit: Hit, caption_chars: int = 120) -> str:
    """``"0.312 · IMG_0042.jpg · a dog on a beach"``: score, file name (no folder), caption."""
    parts = [f"{hit.score:.3f}", file_name(hit.record.path)]
    caption = " ".join((hit.record.caption or "").split())
    if caption:
        if len(caption) > caption_chars:
            caption = caption[: caption_chars - 1].rstrip() + "…"
        parts.append(caption)
    return " · ".join(parts)


def file_name(path: str) -> str:
    """The last component of a catalog path, whether POSIX, Windows, URL or ``shard.tar::key``."""
    tail = path.replace("\\", "/").split("::")[-1].split("?")[0].rstrip("/")
    return PurePath(tail).name or path


def gallery_items(
    retriever: RetrieverLike, hits: list[Hit], config: AppConfig
) -> tuple[list[GalleryItem], int]:
    """Thumbnails by catalog id, with labels; returns the items and how many thumbnails failed.

    A thumbnail that cannot be loaded (file moved, unreadable) becomes a grey placeholder so the
    ranking stays visible; only the retriever ever opens catalog files.
    """
    items: list[GalleryItem] = []
    missing = 0
    for hit in hits:
        label = hit_label(hit, config.caption_chars)
        try:
            thumb = retriever.load_thumbnail(hit.id, max_side=config.thumbnail_side)
        except XmodalError as exc:
            log.warning("no thumbnail for hit %d: %s", hit.id, exc)
            missing += 1
            thumb = Image.new("RGB", (64, 64), PLACEHOLDER_RGB)
            label = f"{label} · (image unavailable)"
        items.append((thumb, label))
    return items, missing


def run_search(
    retriever: RetrieverLike,
    text: str | None,
    image: Any,
    k: Any,
    threshold: Any,
    config: AppConfig,
) -> SearchOutcome:
    """Parse, search and render one query; never raises.

    ``XmodalError`` messages are meant for users and are shown as they are; anything else is
    logged with its traceback and shown as a generic line, so internals never reach the page.
    """
    try:
        query = parse_query(text, image, k, threshold, config)
        hits = retriever.search(
            text=query.text, image=query.image, k=query.k, threshold=query.threshold
        )
        items, missing = gallery_items(retriever, hits, config)
    except XmodalError as exc:
        return SearchOutcome(items=(), hits=(), message=str(exc), ok=False)
    except Exception:
        log.exception("search failed")
        return SearchOutcome(items=(), hits=(), message=UNEXPECTED_MESSAGE, ok=False)
    return SearchOutcome(
        items=tuple(items), hits=tuple(hits), message=_summary(query, len(hits), missing), ok=True
    )


def _summary(query: SearchQuery, n: int, missing: int) -> str:
    if n == 0:
        message = "No results"
        if query.threshold is not None:
            message += f" scored {query.threshold:g} or more; lower the minimum score"
        message += "."
    else:
        message = f"{n} result{'s' if n != 1 else ''}."
    if missing:
        message += f" {missing} image{'s' if missing != 1 else ''} could not be loaded."
    return message


def describe_collection(retriever: RetrieverLike) -> str:
    """One line about the collection: model, item count, index type, projection and dimension."""
    try:
        info = retriever.describe()
        count = int(info.get("count", 0))
        projection = info.get("projection") or "none"
        return (
            f"model {info.get('model', '?')} · {count:,} item{'s' if count != 1 else ''} · "
            f"index {info.get('index', '?')} · projection {projection} · dim {info.get('dim', '?')}"
        )
    except Exception:
        log.exception("describe() failed")
        return "Collection details are unavailable; the server log has the details."
