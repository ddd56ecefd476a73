"""The Retriever: queries (text, image, both, with a negative) -> hits from a collection.

The CLI and the app both search through this one class, so a query goes through the same
decoding policy and encoder as the indexed items. It searches through a ``CollectionFollower``
(``xmodal.pipelines.following``): each query holds one generation from start to end, and a
server built with ``refresh`` > 0 picks up newer generations without a restart.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from xmodal.encoders import Encoder
from xmodal.errors import XmodalError
from xmodal.images import load_image
from xmodal.index import Collection, Hit
from xmodal.index.filters import Filter, as_filter
from xmodal.pipelines import hybrid
from xmodal.pipelines.following import CollectionFollower
from xmodal.pipelines.sources import Span, locate

ImageQuery = str | os.PathLike | bytes | Image.Image


def check_k(k: Any) -> int:
    """``k`` as an int; a ``XmodalError`` unless it is a whole number of at least 1.

    The one rule for the number of results, whichever front end asked: the CLI passes ``-k``
    here through ``Retriever.search``, the app before it clamps to its own maximum. Zero or a
    negative number is a mistake to report, never something to round up silently.
    """
    try:
        value = float(k)
    except (TypeError, ValueError):
        value = math.nan
    if isinstance(k, bool) or not math.isfinite(value) or value != int(value) or value < 1:
        shown = int(value) if math.isfinite(value) and value == int(value) else k
        raise XmodalError(
            f"k (the number of results) must be a whole number of at least 1, got {shown!r}"
        )
    return int(value)


@dataclass(frozen=True, slots=True)
class SearchResult:
    """Hits, best first, and when there are none, the reason in one line for the user.

    ``generation`` and ``count`` describe the one generation every hit and record came from.
    """

    hits: tuple[Hit, ...]
    reason: str | None = None
    generation: int | None = None
    count: int | None = None


class Retriever:
    """Search one collection with the encoder that built it.

    ``collection`` is an open ``Collection`` (searched as it is) or a ``CollectionFollower``
    (searched at its current generation; a newer one must have the same encoder, see
    ``following``).
    """

    def __init__(self, encoder: Encoder, collection: Collection | CollectionFollower) -> None:
        spec = encoder.spec.to_dict()
        if isinstance(collection, CollectionFollower):
            follower = collection
        else:
            follower = CollectionFollower(collection, refresh=0)
        with follower.reading() as reader:
            reader.check_encoder(spec)
        follower.accept(lambda reader: reader.check_encoder(spec))
        self.encoder = encoder
        self.follower = follower

    @property
    def collection(self) -> Collection:
        """The current generation's handle, for one call; use ``reading()`` for more."""
        return self.follower.current()

    @contextlib.contextmanager
    def reading(self) -> Iterator[Collection]:
        """Hold the current generation for the calls in the block (see ``CollectionFollower``)."""
        with self.follower.reading() as reader:
            yield reader

    def query_vector(
        self,
        text: str | None = None,
        image: ImageQuery | None = None,
        *,
        negative: str | None = None,
        image_weight: float = 0.5,
        negative_weight: float = 0.5,
    ) -> np.ndarray:
        """One unit query vector: text and image mixed by ``image_weight``, minus a negative."""
        text = text.strip() if text else None
        if not text and image is None:
            raise XmodalError("empty query: give a text, an image, or both")
        if not 0.0 <= image_weight <= 1.0:
            raise XmodalError(f"image_weight must be between 0 and 1, got {image_weight}")
        parts: list[tuple[float, np.ndarray]] = []
        if text:
            parts.append((1.0 - image_weight if image is not None else 1.0, self._text(text)))
        if image is not None:
            parts.append((image_weight if text else 1.0, self._image(image)))
        query = sum(weight * vector for weight, vector in parts)
        if negative and negative.strip():
            query = query - negative_weight * self._text(negative.strip())
        norm = float(np.linalg.norm(query))
        if norm == 0.0:
            raise XmodalError("the query cancels itself out; change the weights or the negative")
        return (query / norm).astype(np.float32)

    def search(
        self,
        text: str | None = None,
        image: ImageQuery | None = None,
        *,
        negative: str | None = None,
        image_weight: float = 0.5,
        k: int = 10,
        threshold: float | None = None,
        where: Filter | str | Sequence[str] | None = None,
        mode: str = "vector",
        keyword_weight: float = 0.5,
    ) -> list[Hit]:
        """The ``k`` best hits, best first; hits scoring below ``threshold`` are dropped.

        ``where`` restricts the search to matching items: a Filter, or filter text such as
        ``"ext:jpg and width>=1024"`` (grammar in ``xmodal.index.filters``), or a list of them.
        ``mode`` is "vector" (embeddings), "keyword" (FTS5 over captions and file names) or
        "hybrid" (both, fused by reciprocal rank with ``keyword_weight``; see
        ``xmodal.pipelines.hybrid``).
        """
        return list(
            self.search_result(
                text,
                image,
                negative=negative,
                image_weight=image_weight,
                k=k,
                threshold=threshold,
                where=where,
                mode=mode,
                keyword_weight=keyword_weight,
            ).hits
        )

    def search_result(
        self,
        text: str | None = None,
        image: ImageQuery | None = None,
        *,
        negative: str | None = None,
        image_weight: float = 0.5,
        k: int = 10,
        threshold: float | None = None,
        where: Filter | str | Sequence[str] | None = None,
        mode: str = "vector",
        keyword_weight: float = 0.5,
    ) -> SearchResult:
        """As :meth:`search`, and when nothing is found, why: the threshold, the filter, or
        an empty collection, so every front end can say more than "no results".

        The query holds one generation from its start: a newer one swapped in meanwhile is
        seen by the next query.
        """
        with self.reading() as reader:
            return self._search_on(
                reader,
                text,
                image,
                negative=negative,
                image_weight=image_weight,
                k=k,
                threshold=threshold,
                where=where,
                mode=mode,
                keyword_weight=keyword_weight,
            )

    def _search_on(
        self,
        reader: Collection,
        text: str | None,
        image: ImageQuery | None,
        *,
        negative: str | None,
        image_weight: float,
        k: int,
        threshold: float | None,
        where: Filter | str | Sequence[str] | None,
        mode: str,
        keyword_weight: float,
    ) -> SearchResult:
        seen = {"generation": reader.generation, "count": reader.count}
        k = check_k(k)
        mode = hybrid.check_mode(mode, keyword_weight)
        filter_ = as_filter(where)  # a bad filter fails before any encoding work
        if mode != "vector":
            words = hybrid.check_keyword_query(mode, text, image, negative, threshold)
            if mode == "keyword":
                found = hybrid.keyword_hits(reader, words, k, filter_)
                why = None if found else f"No caption or file name matches {words!r}."
                return SearchResult(tuple(found), why, **seen)
        query = self.query_vector(text, image, negative=negative, image_weight=image_weight)
        if mode == "hybrid":
            hits = hybrid.hybrid_hits(
                reader,
                query,
                words,
                k=k,
                where=filter_,
                threshold=threshold,
                keyword_weight=keyword_weight,
            )
        else:
            hits = reader.search(query[None, :], k=k, where=filter_, min_score=threshold)[0]
        if hits:
            return SearchResult(tuple(hits), **seen)
        return SearchResult((), _why_empty(reader, query, threshold, filter_, where), **seen)

    def describe(self) -> dict[str, Any]:
        with self.reading() as reader:
            info = reader.info()
        return {
            "model": self.encoder.spec.model_id,
            "count": info.count,
            "index": info.index_key,
            "projection": None if info.projection == "none" else info.projection,
            "dim": info.dim,
            "generation": info.generation,
        }

    def load_thumbnail(self, hit_id: int, max_side: int = 512) -> Image.Image:
        """The indexed image for a catalog id, scaled down; never a path from a request."""
        with self.reading() as reader:
            record = reader.get_records([int(hit_id)]).get(int(hit_id))
        if record is None:
            raise XmodalError(f"no item with id {hit_id} in this collection")
        source = locate(record.path)
        data = source.read() if isinstance(source, Span) else source
        image = load_image(data, draft_size=(max_side, max_side))
        image.thumbnail((max_side, max_side))
        return image

    def _text(self, text: str) -> np.ndarray:
        return self.encoder.encode_texts([text])[0]

    def _image(self, image: ImageQuery) -> np.ndarray:
        return self.encoder.encode_images([image])[0]


def _why_empty(
    reader: Collection,
    query: np.ndarray,
    threshold: float | None,
    filter_: Filter | None,
    where: Any,
) -> str:
    best = reader.search(query[None, :], k=1, where=filter_)[0]
    if best and threshold is not None:
        return f"No results scored {threshold:g} or more (best score {best[0].score:.3f})."
    if filter_ is not None:
        return f"No item matches the filter {_where_text(where)!r}."
    return "The collection is empty."


def _where_text(where: Any) -> str:
    if isinstance(where, str) or not isinstance(where, Sequence):
        return str(where)
    return " and ".join(str(part) for part in where)
