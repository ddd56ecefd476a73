"""What the app does for a query, as plain functions: no Gradio here.

The Gradio layout (``ui.py``) and the HTTP API (``api.py``) both call these, so validation,
error wording and labels live in one place. Every function that talks to the retriever turns
failures into a message for the user; none lets a traceback reach a page.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, Protocol

from PIL import Image

from xmodal.app.config import AppConfig
from xmodal.app.query import QueryError, RawQuery, SearchQuery, parse_query
from xmodal.errors import XmodalError
from xmodal.index.pathtext import display_path
from xmodal.index.records import Hit

__all__ = [
    "Found",
    "QueryError",
    "RawQuery",
    "RetrieverLike",
    "SearchOutcome",
    "SearchQuery",
    "describe_collection",
    "find",
    "gallery_items",
    "hit_label",
    "parse_query",
    "run_search",
]

log = logging.getLogger(__name__)

GalleryItem = tuple[Image.Image, str]

UNEXPECTED_MESSAGE = "Search failed because of an internal error; the server log has the details."
PLACEHOLDER_RGB = (210, 210, 210)


class ResultLike(Protocol):
    """``xmodal.pipelines.search.SearchResult``: hits, and why there are none."""

    hits: tuple[Hit, ...]
    reason: str | None


class RetrieverLike(Protocol):
    """The part of ``xmodal.pipelines.search.Retriever`` the app uses."""

    def search_result(
        self,
        text: str | None = None,
        image: Any = None,
        *,
        negative: str | None = None,
        image_weight: float = 0.5,
        k: int = 10,
        threshold: float | None = None,
        where: Any = None,
        mode: str = "vector",
        keyword_weight: float = 0.5,
    ) -> ResultLike: ...

    def describe(self) -> dict[str, Any]: ...

    def load_thumbnail(self, hit_id: int, max_side: int = 512) -> Image.Image: ...


@dataclass(frozen=True, slots=True)
class SearchOutcome:
    """What one search produced for a page: gallery items, the hits behind them and a status line.

    ``ok`` is False when the search itself failed; ``items`` and ``hits`` are then empty.
    """

    items: tuple[GalleryItem, ...]
    hits: tuple[Hit, ...]
    message: str
    ok: bool


@dataclass(frozen=True, slots=True)
class Found:
    """A checked query, its hits, and why there are none (from the retriever)."""

    query: SearchQuery
    hits: list[Hit]
    reason: str | None = None

    @property
    def message(self) -> str | None:
        """What the user should be told beside the hits: a lowered ``k``, an empty result."""
        return " ".join(m for m in (self.query.notice, self.reason) if m) or None


def find(retriever: RetrieverLike, raw: RawQuery, config: AppConfig) -> Found:
    """Check ``raw`` and search; raises ``XmodalError`` with a message meant for the user.

    The one path from raw values to hits: the page, the JSON API and the clip-retrieval
    protocol all come through here.
    """
    query = parse_query(raw, config)
    result = retriever.search_result(
        text=query.text,
        image=query.image,
        negative=query.negative,
        image_weight=query.image_weight,
        k=query.k,
        threshold=query.threshold,
        where=query.where,
        mode=query.mode,
        keyword_weight=query.keyword_weight,
    )
    return Found(query, list(result.hits), None if result.hits else result.reason)


@contextlib.contextmanager
def held_collection(retriever: RetrieverLike) -> Iterator[Any]:
    """The retriever's collection held for one request (one generation); None without one."""
    reading = getattr(retriever, "reading", None)
    if reading is None:
        yield getattr(retriever, "collection", None)
        return
    with reading() as collection:
        yield collection


def hit_label(hit: Hit, caption_chars: int = 120) -> str:
    """``"0.312 · IMG_0042.jpg · a dog on a beach"``: score, file name (no folder), caption."""
    parts = [f"{hit.score:.3f}", display_path(file_name(hit.record.path))]
    caption = " ".join((hit.record.caption or "").split())
    if caption:
        if len(caption) > caption_chars:
            caption = caption[: caption_chars - 1].rstrip() + "…"
        parts.append(caption)
    if hit.tags:
        parts.append("tags: " + ", ".join(f"{t.label} {t.prob:.2f}" for t in hit.tags))
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


def run_search(retriever: RetrieverLike, raw: RawQuery, config: AppConfig) -> SearchOutcome:
    """Parse, search and render one query for the page; never raises.

    ``XmodalError`` messages are meant for users and are shown as they are; anything else is
    logged with its traceback and shown as a generic line, so internals never reach the page.
    """
    try:
        found = find(retriever, raw, config)
        items, missing = gallery_items(retriever, found.hits, config)
    except XmodalError as exc:
        return SearchOutcome(items=(), hits=(), message=str(exc), ok=False)
    except Exception:
        log.exception("search failed")
        return SearchOutcome(items=(), hits=(), message=UNEXPECTED_MESSAGE, ok=False)
    return SearchOutcome(
        items=tuple(items), hits=tuple(found.hits), message=_summary(found, missing), ok=True
    )


def _summary(found: Found, missing: int) -> str:
    n = len(found.hits)
    message = f"{n} result{'s' if n != 1 else ''}." if n else "No results."
    if found.message:
        message = found.message if not n else f"{message} {found.message}"
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
