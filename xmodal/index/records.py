"""Plain result types shared by the index, the pipelines, the CLI and the app."""

from __future__ import annotations

from dataclasses import dataclass


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
    """One search result: the stable catalog id, the similarity score and the record."""

    id: int
    score: float
    record: Record
