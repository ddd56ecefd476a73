"""Keyword and hybrid search: FTS5 keyword hits, and reciprocal rank fusion with vector hits.

Hybrid = reciprocal rank fusion (Cormack, Clarke & Büttcher, 2009), as Weaviate, Elasticsearch
and others fuse lexical and vector lists: an item's score is
``w / (60 + keyword rank) + (1 - w) / (60 + vector rank)`` (ranks from 1; a list that misses the
item adds nothing), ``w`` being the keyword weight. RRF needs no score calibration, which matters
here: BM25 and cosine live on unrelated scales. Each list contributes its best
``max(k, CANDIDATES)`` items.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from xmodal.errors import XmodalError
from xmodal.index import Collection, Hit
from xmodal.index.filters import Filter

MODES = ("vector", "keyword", "hybrid")
RRF_K = 60
CANDIDATES = 100


def check_mode(mode: str, keyword_weight: float) -> str:
    """The mode, lower-cased; a bad mode or weight is a one-line error."""
    chosen = str(mode).strip().lower()
    if chosen not in MODES:
        raise XmodalError(f"mode must be vector, keyword or hybrid, got {mode!r}")
    if not 0.0 <= keyword_weight <= 1.0:
        raise XmodalError(f"keyword weight must be between 0 and 1, got {keyword_weight}")
    return chosen


def check_keyword_query(mode: str, text: str | None, image, negative, threshold) -> str:
    """The text of a keyword or hybrid query; what keyword mode cannot honour is refused."""
    text = text.strip() if text else ""
    if not text:
        raise XmodalError(
            f"{mode} mode needs a text query: keyword search matches words in captions and "
            "file names"
        )
    if mode == "keyword":
        if image is not None:
            raise XmodalError("keyword mode searches words only; drop the image or use hybrid mode")
        if negative and negative.strip():
            raise XmodalError(
                "keyword mode has no negative text; write 'word NOT other' or use hybrid mode"
            )
        if threshold is not None:
            raise XmodalError("the threshold is a cosine score; use it in vector or hybrid mode")
    return text


def keyword_hits(collection: Collection, text: str, k: int, where: Filter | None) -> list[Hit]:
    """Keyword hits; no match in a collection without captions is an error saying why."""
    hits = collection.keyword_search(text, k, where)
    if not hits and not collection.has_captions():
        raise XmodalError(
            f"no file name matches {text!r} and this collection has no captions to search; "
            "index captions (e.g. --caption-column) or use vector mode"
        )
    return hits


def rrf(ranked: Sequence[tuple[float, Sequence[int]]], k: int = RRF_K) -> list[tuple[int, float]]:
    """Fuse ranked id lists given as ``(weight, ids best first)``: ``(id, score)`` best first.

    Ties go to the smaller id, so the order never depends on dict or sort internals. Items
    whose fused score is 0 (only in lists of weight 0) are left out.
    """
    scores: dict[int, float] = {}
    for weight, ids in ranked:
        for rank, item in enumerate(ids, 1):
            scores[int(item)] = scores.get(int(item), 0.0) + weight / (k + rank)
    fused = [(item, score) for item, score in scores.items() if score > 0]
    return sorted(fused, key=lambda pair: (-pair[1], pair[0]))


def fuse(vector: list[Hit], keyword: list[Hit], keyword_weight: float, k: int) -> list[Hit]:
    """The ``k`` best hits of RRF over both lists; a hit's score becomes its fused score."""
    fused = rrf(
        [(keyword_weight, [h.id for h in keyword]), (1 - keyword_weight, [h.id for h in vector])]
    )
    by_id = {h.id: h for h in [*vector, *keyword]}
    return [Hit(item, score, by_id[item].record, by_id[item].tags) for item, score in fused[:k]]


def hybrid_hits(
    collection: Collection,
    query: np.ndarray,
    text: str,
    *,
    k: int,
    where: Filter | None,
    threshold: float | None,
    keyword_weight: float,
) -> list[Hit]:
    """Vector and keyword candidates of one query, fused (see the module docstring)."""
    depth = max(k, CANDIDATES)
    vector = collection.search(query[None, :], k=depth, where=where, min_score=threshold)[0]
    keyword = collection.keyword_search(text, depth, where)
    return fuse(vector, keyword, keyword_weight, k)
