"""Zero-shot retrieval recall@k, defined as the CLIP paper and CLIP_benchmark define it.

Text-to-image: every caption is a query; it is correct at k when its own image is among the k
best-scoring images. Image-to-text: every image is a query; it is correct at k when ANY of its
captions is among the k best-scoring captions. Recall@k is the share of correct queries.

Both directions reduce to one number per query: the rank of its best-ranked positive (1 = top,
``MISSED`` when a ranked list holds none). Ranks come from two places:

- a full score matrix (exact search): ties are counted against the query. The best positive's
  rank is 1 + the number of negatives scoring at least as high as it, so a negative with exactly
  the same score (for example the same caption text written under two images) ranks above it.
  Scores within ``TIE_TOLERANCE`` count as equal. The result is deterministic and never
  flatters the model;
- the ranked lists an index returns (ids with their scores, higher is better): the same rule
  applied within the list, 1 + the number of listed negatives scoring at least as high as the
  best listed positive; a query whose list holds no positive is missed. A list cut off inside
  the best positive's tie group would hide tied negatives (which one of twenty equal scores a
  top-10 list keeps is arbitrary), so ``searched_ranks`` asks the method again, twice as deep,
  until the tie group ends inside the list or the list holds the whole gallery. A Flat index
  therefore ranks exactly as the full score matrix does.

So every method of a table, exact or not, counts ties the same way. Ties are real: identical
captions under different images embed identically, and binary codes give integer distances.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

MISSED = np.iinfo(np.int64).max
# Scores this close are one score: float32 rounding of the same cosine differs by this much
# between BLAS kernels and batch positions (identical captions encoded in different batches).
TIE_TOLERANCE = 1e-6
DEFAULT_KS = (1, 5, 10)
# A method's search: (queries, k) -> (scores, gallery row numbers), best first, -1 for no row.
Search = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]
_BLOCK = 512  # query rows scored at a time: memory stays at BLOCK x gallery floats


@dataclass(frozen=True)
class Pairing:
    """Which gallery rows are positives of which query rows.

    ``caption_image[i]`` is the image of caption ``i``. With ``text_queries`` the queries are the
    captions and the gallery the images (text-to-image); otherwise the reverse.
    """

    caption_image: np.ndarray
    n_images: int
    text_queries: bool

    def positives(self, queries: np.ndarray) -> np.ndarray:
        """Boolean (len(queries), gallery size) mask of the positives of ``queries``."""
        owner = self.caption_image
        if self.text_queries:
            return owner[queries][:, None] == np.arange(self.n_images)[None, :]
        return owner[None, :] == queries[:, None]

    def is_positive(self, queries: np.ndarray, found: np.ndarray) -> np.ndarray:
        """Boolean mask shaped like ``found`` (gallery ids per query, -1 for none)."""
        valid = found >= 0
        safe = np.where(valid, found, 0)
        if self.text_queries:
            hit = safe == self.caption_image[queries][:, None]
        else:
            hit = self.caption_image[safe] == queries[:, None]
        return hit & valid


def ranks_from_scores(scores: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """Rank of each row's best positive in a (queries, gallery) score block; ties count against."""
    best = np.where(positives, scores, -np.inf).max(axis=1)
    above = ((scores >= best[:, None] - TIE_TOLERANCE) & ~positives).sum(axis=1)
    ranks = above.astype(np.int64) + 1
    return np.where(positives.any(axis=1), ranks, MISSED)


def ranks_from_lists(scores: np.ndarray, is_positive: np.ndarray) -> np.ndarray:
    """Rank of each list's best positive among the listed rows; ties count against the query."""
    return ranks_from_scores(scores, is_positive)


def exact_ranks(queries: np.ndarray, gallery: np.ndarray, pairing: Pairing) -> np.ndarray:
    """Tie-pessimistic rank of every query's best positive by inner product, in blocks."""
    ranks = np.empty(len(queries), np.int64)
    for rows in _blocks(len(queries)):
        scores = np.asarray(queries[rows], np.float32) @ np.asarray(gallery, np.float32).T
        ranks[rows] = ranks_from_scores(scores, pairing.positives(np.arange(rows.start, rows.stop)))
    return ranks


def index_ranks(
    scores: np.ndarray, found: np.ndarray, pairing: Pairing, queries: np.ndarray | None = None
) -> np.ndarray:
    """Ranks from an index's (queries, k) scores and ids (-1: no row); ``queries`` are the query
    row numbers of the lists (default: list i is query i)."""
    queries = np.arange(len(found)) if queries is None else queries
    listed = np.where(found >= 0, scores, -np.inf)
    return ranks_from_lists(listed, pairing.is_positive(queries, found))


def ties_cut_off(
    scores: np.ndarray, found: np.ndarray, pairing: Pairing, queries: np.ndarray
) -> np.ndarray:
    """Per list: True when it is full and its last row ties with (or beats) the best listed
    positive, so negatives tied with that positive may lie beyond the list."""
    positive = pairing.is_positive(queries, found)
    listed = np.where(found >= 0, scores, -np.inf)
    best = np.where(positive, listed, -np.inf).max(axis=1)
    full = found[:, -1] >= 0
    return full & positive.any(axis=1) & (listed[:, -1] >= best - TIE_TOLERANCE)


def searched_ranks(
    search: Search,
    queries: np.ndarray,
    depth: int,
    pairing: Pairing,
    gallery_size: int,
    max_rank: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ranks, scores, found) of ``search`` at ``depth``, with every tie counted.

    Queries whose list ends inside the best positive's tie group (and whose rank could still be
    within ``max_rank``) are searched again twice as deep until the group ends in the list or
    the list holds the whole gallery: the ranks then equal the full-matrix rule's. ``scores``
    and ``found`` are the lists at ``depth``.
    """
    scores, found = search(queries, depth)
    rows = np.arange(len(queries))
    ranks = index_ranks(scores, found, pairing, rows)
    todo = rows[ties_cut_off(scores, found, pairing, rows) & (ranks <= max_rank)]
    deeper = depth
    while len(todo) and deeper < gallery_size:
        deeper = min(2 * deeper, gallery_size)
        more_scores, more_found = search(queries[todo], deeper)
        ranks[todo] = index_ranks(more_scores, more_found, pairing, todo)
        cut = ties_cut_off(more_scores, more_found, pairing, todo)
        todo = todo[cut & (ranks[todo] <= max_rank)]
    return ranks, scores, found


def recall_at(ranks: np.ndarray, ks: Sequence[int] = DEFAULT_KS) -> dict[int, float]:
    """{k: share of queries whose best positive ranks within k}."""
    if len(ranks) == 0:
        return {k: 0.0 for k in ks}
    return {k: float(np.mean(ranks <= k)) for k in ks}


def chance_recall(n_gallery: int, n_positive: float, k: int) -> float:
    """Expected recall@k of random scores: 1 - C(n - p, k) / C(n, k) (p positives of n)."""
    if k >= n_gallery:
        return 1.0
    p = int(round(n_positive))
    miss = 1.0
    for i in range(k):
        miss *= max(n_gallery - p - i, 0) / (n_gallery - i)
    return 1.0 - miss


def _blocks(n: int) -> Iterator[slice]:
    for start in range(0, n, _BLOCK):
        yield slice(start, min(start + _BLOCK, n))
