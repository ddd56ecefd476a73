"""File lists: ``@list.txt`` names one image file or folder per line.

Relative paths are relative to the list's folder; blank lines and lines starting with ``#`` are
ignored. Lines are read as bytes and decoded like file names (``os.fsdecode``), so any name the
file system allows can be listed. A listed file that does not exist is still an input: its
decoding fails with "no such file". The list is read line by line, never whole.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from xmodal.pipelines.sources.folders import walk_folder
from xmodal.pipelines.sources.items import Item, Skipped, SourcePolicy, file_item, is_remote


def read_list(path: str, policy: SourcePolicy) -> Iterator[Item | Skipped]:
    """Every input named by the list file ``path`` (absolute), in the list's order."""
    base = os.path.dirname(path)
    with open(path, "rb") as handle:
        for raw in handle:
            line = os.fsdecode(raw.rstrip(b"\r\n")).strip()
            if not line or line.startswith("#"):
                continue
            if is_remote(line):
                yield Skipped(line, "not-local")
                continue
            listed = os.path.abspath(os.path.join(base, os.path.expanduser(line)))
            if os.path.isdir(listed):
                yield from walk_folder(os.path.realpath(listed), policy)
            else:
                yield file_item(listed)
