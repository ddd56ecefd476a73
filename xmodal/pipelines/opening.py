"""Open a collection for writing the way every writing command does: create it, or change it.

``xmodal index`` and ``xmodal import`` both take ``--index``, ``--memory-budget`` and
``--projection``. A new collection is created with them (defaults: "auto", half the RAM, no
projection); for an existing one a request that differs from what the collection has asks for a
rebuild at its next commit (``Collection.set_index``), and an empty request changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xmodal.index import Collection


@dataclass(frozen=True)
class IndexRequest:
    """What the command line asked of the index; None: keep (or, when new, the default)."""

    index_key: str | None = None
    memory_budget: int | None = None  # bytes
    projection: str | None = None


def exists(directory: Path) -> bool:
    return (Path(directory) / "manifest.json").is_file()


def open_for_writing(
    directory: Path, encoder_spec: Mapping[str, Any], request: IndexRequest = IndexRequest()
) -> Collection:
    """The collection at ``directory``, writable; see the module docstring."""
    if not exists(directory):
        return Collection.create(
            directory,
            encoder_spec,
            index_key=request.index_key or "auto",
            memory_budget=request.memory_budget,
            projection=request.projection or "none",
        )
    collection = Collection.open(directory, writable=True)
    try:
        _change_index(collection, request)
    except BaseException:
        collection.close()
        raise
    return collection


def _change_index(collection: Collection, request: IndexRequest) -> None:
    """Ask for a rebuild at commit when the key, budget or projection differ."""
    from xmodal.index.projection import parse_projection

    info = collection.info()
    key = request.index_key or info.index_key
    budget = request.memory_budget
    projection = request.projection
    moved = projection is not None and str(parse_projection(projection)) != info.projection
    if key != info.index_key or (budget is not None and budget != info.memory_budget) or moved:
        budget = budget if budget is not None else info.memory_budget
        collection.set_index(key, budget, projection=projection if moved else None)
