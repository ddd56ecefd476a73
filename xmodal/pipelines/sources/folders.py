"""Folders: walked recursively in a stable order, with the link and hidden-file policy.

Inside a folder, files come before subfolders and both are sorted by name, so a walk over the
same tree always yields the same sequence. Only one folder's entries are held at a time.

Symbolic links: a link whose target lies inside the root is taken for a file (under the link's
name) and not descended for a folder (the folder is walked under its own name anyway); a link
leading out of the root is ``outside-root`` unless ``follow_links``. Every folder walked is
remembered by (device, inode), so link loops and bind-mount loops end.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator

from xmodal.pipelines.sources.items import (
    Item,
    Skipped,
    SourcePolicy,
    file_item,
    is_image_name,
    sidecar_caption,
)


def walk_folder(root: str, policy: SourcePolicy) -> Iterator[Item | Skipped]:
    """Every entry under ``root`` (an absolute, resolved folder path) as an Item or a Skipped."""
    info = os.stat(root)
    walk = _Walk(root, policy, {(info.st_dev, info.st_ino)})
    stack = [root]
    while stack:
        folder = stack.pop()
        subfolders: list[str] = []
        yield from walk.folder(folder, subfolders)
        stack.extend(reversed(subfolders))


class _Walk:
    def __init__(self, root: str, policy: SourcePolicy, visited: set[tuple[int, int]]) -> None:
        self.root = root
        self.prefix = root if root.endswith(os.sep) else root + os.sep
        self.policy = policy
        self.visited = visited

    def folder(self, folder: str, subfolders: list[str]) -> Iterator[Item | Skipped]:
        """Yield the files of ``folder``; collect the subfolders to walk into ``subfolders``."""
        try:
            with os.scandir(folder) as scan:
                entries = sorted(scan, key=lambda entry: entry.name)
        except OSError:
            yield Skipped(folder, "unreadable-folder")
            return
        captions = _sidecars(entries)
        for entry in entries:
            if entry.name.startswith(".") and not self.policy.include_hidden:
                yield Skipped(entry.path, "hidden")
                continue
            kind = self._kind(entry)
            if isinstance(kind, Skipped):
                yield kind
            elif kind == "folder":
                subfolders.append(entry.path)
            elif is_image_name(entry.name):
                caption = sidecar_caption(entry.path) if _stem(entry.name) in captions else None
                yield file_item(entry.path, caption, sidecar=False)
            elif _stem(entry.name) not in captions or not _is_sidecar(entry.name):
                yield Skipped(entry.path, "not-an-image")
            # else: a caption sidecar, consumed by its image

    def _kind(self, entry: os.DirEntry) -> str | Skipped:
        """``folder`` (to walk), ``file``, or why the entry is left out."""
        try:
            if entry.is_symlink():
                return self._link_kind(entry)
            if not entry.is_dir(follow_symlinks=False):
                return "file"
            info = entry.stat(follow_symlinks=False)
        except OSError:
            return "file"  # decoding reports what is wrong with it
        return self._enter(entry.path, info)

    def _link_kind(self, entry: os.DirEntry) -> str | Skipped:
        target = os.path.realpath(entry.path)
        inside = target == self.root or target.startswith(self.prefix)
        if not inside and not self.policy.follow_links:
            return Skipped(entry.path, "outside-root")
        try:
            info = os.stat(entry.path)
        except OSError:
            return "file"  # a dangling link: decoding says "no such file"
        if not stat.S_ISDIR(info.st_mode):
            return "file"
        if inside:
            return Skipped(entry.path, "link-inside-root")
        return self._enter(entry.path, info)

    def _enter(self, path: str, info: os.stat_result) -> str | Skipped:
        key = (info.st_dev, info.st_ino)
        if key in self.visited:
            return Skipped(path, "already-walked")
        self.visited.add(key)
        return "folder"


def _stem(name: str) -> str:
    return os.path.splitext(name)[0]


def _is_sidecar(name: str) -> bool:
    return os.path.splitext(name)[1] == ".txt"


def _sidecars(entries: list[os.DirEntry]) -> set[str]:
    """Stems that have both an image and a ``.txt`` sidecar in this folder."""
    images = {_stem(e.name) for e in entries if is_image_name(e.name)}
    return {_stem(e.name) for e in entries if _is_sidecar(e.name) and _stem(e.name) in images}
