"""Where items come from: folders, image files, file lists, tar shards and tables, streamed.

``iter_inputs`` turns the sources a user names into every input they contain, in a stable
order, each either an :class:`Item` to decode or a :class:`Skipped` left out by policy, so a
batch run can account for all of them. Each argument is one of:

- a folder: walked recursively (``folders``);
- ``@list.txt``: one image file or folder per line (``lists``);
- a ``.tar`` shard in WebDataset layout (``tars``);
- a ``.parquet``, ``.csv``, ``.jsonl`` or ``.ndjson`` table with a path column (``tables``);
- any other file: taken as an image, whatever its name (decoding decides).

Every argument is checked before the first input is yielded, so a typo fails at once. A file or
folder named as an argument is resolved (links followed); paths from lists and tables are made
absolute as written; inside a folder, entries keep the names they have under it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from xmodal.errors import XmodalError
from xmodal.pipelines.sources.folders import walk_folder
from xmodal.pipelines.sources.items import (
    IMAGE_EXTENSIONS,
    Item,
    Skipped,
    SourcePolicy,
    Span,
    file_item,
)
from xmodal.pipelines.sources.lists import read_list
from xmodal.pipelines.sources.tables import check_table, is_table_name, read_table
from xmodal.pipelines.sources.tars import check_shard, is_shard_name, locate, read_shard

DEFAULT_POLICY = SourcePolicy()

__all__ = [
    "IMAGE_EXTENSIONS",
    "Item",
    "Skipped",
    "SourcePolicy",
    "Span",
    "check_sources",
    "iter_inputs",
    "iter_items",
    "locate",
]


def iter_inputs(
    sources: Iterable[str | os.PathLike], policy: SourcePolicy = DEFAULT_POLICY
) -> Iterator[Item | Skipped]:
    """Every input under ``sources``, in a stable order, as an Item or a Skipped.

    Raises:
        XmodalError: a named file, folder or list does not exist, a table lacks the path
            column, or a shard is compressed or not a tar (checked before anything is yielded).
    """
    for kind, path in check_sources(sources, policy):
        if kind == "folder":
            yield from walk_folder(path, policy)
        elif kind == "list":
            yield from read_list(path, policy)
        elif kind == "shard":
            yield from read_shard(path, policy)
        elif kind == "table":
            yield from read_table(path, policy)
        else:
            yield file_item(path)


def check_sources(
    sources: Iterable[str | os.PathLike], policy: SourcePolicy = DEFAULT_POLICY
) -> list[tuple[str, str]]:
    """Each source as (kind, resolved path), reading no more than needed to classify it.

    Callers that create something for a run (a collection, an output folder) call this first,
    so a typo fails before anything is made.

    Raises:
        XmodalError: as :func:`iter_inputs`.
    """
    return [_classify(source, policy) for source in sources]


def iter_items(
    sources: Iterable[str | os.PathLike], policy: SourcePolicy = DEFAULT_POLICY
) -> Iterator[Item]:
    """Only the Items of :func:`iter_inputs`: what there is to decode.

    Hidden files and folders are skipped inside folders; a file named explicitly is always
    taken. Symbolic-link loops end.
    """
    for found in iter_inputs(sources, policy):
        if isinstance(found, Item):
            yield found


def _classify(source: str | os.PathLike, policy: SourcePolicy) -> tuple[str, str]:
    text = os.fsdecode(source)
    if text.startswith("@") and not os.path.lexists(text):
        listed = Path(text[1:]).expanduser()
        if not listed.is_file():
            raise XmodalError(f"no such file list: {text[1:]} (a list is @FILE, one path a line)")
        return "list", str(listed.resolve())
    path = Path(text).expanduser()
    if path.is_dir():
        return "folder", str(path.resolve())
    if not path.exists():
        raise XmodalError(f"no such file or folder: {text}")
    resolved = str(path.resolve())
    if is_shard_name(resolved):
        check_shard(resolved)
        return "shard", resolved
    if is_table_name(resolved):
        check_table(resolved, policy)
        return "table", resolved
    return "file", resolved
