"""Plain result types shared by the index, the pipelines, the CLI and the app."""

from __future__ import annotations

from dataclasses import dataclass

from xmodal.index.tagstore import Tag


@dataclass(frozen=True, slots=True)
class Record:
    """One catalog row: what is known about an indexed item besides its vector."""

    path: str
    size: int | None = None
    mtime: float | None = None
    caption: str | None = None
    width: int | None = None
    height: int | None = None
    content_hash: str | None = None  # hex blake2b of the file bytes, when known


@dataclass(frozen=True, slots=True)
class Hit:
    """One search result: the stable catalog id, the score, the record and its tags.

    ``score`` is the cosine similarity in vector mode, -BM25 in keyword mode and the fused
    reciprocal-rank score in hybrid mode (``xmodal.pipelines.hybrid``). ``tags`` are the item's
    zero-shot tags (``xmodal tag``), most probable first; empty when it has none.
    """

    id: int
    score: float
    record: Record
    tags: tuple[Tag, ...] = ()
