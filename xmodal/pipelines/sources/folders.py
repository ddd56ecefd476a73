"""Folders: walked recursively in a stable order, with the link and hidden-file policy.

Inside a folder, files come before subfolders and both are sorted by name, so a walk over the
same tree always yields the same sequence. Only one folder's listing is held at a time, and
it is kept small: the sorted names as plain strings, with a ``DirEntry`` kept only for the
folders and links among them (a ``DirEntry`` holds its name, its full path and cached stat
fields, several times the memory of the name alone, which counts in a folder of a million files).

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
            names, special = _list(folder)
        except OSError:
            yield Skipped(folder, "unreadable-folder")
            return
        captions = _sidecars(names)
        for name in names:
            path = os.path.join(folder, name)
            if name.startswith(".") and not self.policy.include_hidden:
                yield Skipped(path, "hidden")
                continue
            entry = special.get(name)
            kind = "file" if entry is None else self._kind(entry)
            if isinstance(kind, Skipped):
                yield kind
            elif kind == "folder":
                subfolders.append(path)
            elif is_image_name(name):
                caption = sidecar_caption(path) if _stem(name) in captions else None
                yield file_item(path, caption, sidecar=False)
            elif _stem(name) not in captions or not _is_sidecar(name):
                yield Skipped(path, "not-an-image")
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


def _list(folder: str) -> tuple[list[str], dict[str, os.DirEntry]]:
    """The sorted names in ``folder``, and the entries that are not plain files.

    Whether an entry is a folder or a link comes from the listing itself (``d_type``), so a
    plain file costs no system call here; an entry whose type cannot be told is kept too, and
    ``_kind`` decides.
    """
    names: list[str] = []
    special: dict[str, os.DirEntry] = {}
    with os.scandir(folder) as scan:
        for entry in scan:
            names.append(entry.name)
            try:
                plain = not entry.is_symlink() and not entry.is_dir(follow_symlinks=False)
            except OSError:
                plain = False
            if not plain:
                special[entry.name] = entry
    names.sort()
    return names, special


def _sidecars(names: list[str]) -> set[str]:
    """Stems that have both an image and a ``.txt`` sidecar in this folder.

    Collected from the ``.txt`` names first: they are usually few, so no set of every image
    stem in a large folder is built.
    """
    texts = {_stem(name) for name in names if _is_sidecar(name)}
    if not texts:
        return set()
    return {_stem(name) for name in names if is_image_name(name) and _stem(name) in texts}
