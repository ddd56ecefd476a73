"""The values sources produce, and the helpers every kind of source shares."""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass

IMAGE_EXTENSIONS = frozenset(
    {
        ".jpg", ".jpeg", ".jpe", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff",
        ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".ico", ".jp2", ".j2k", ".avif", ".heic", ".heif",
        ".mpo", ".psd",
    }
)  # fmt: skip
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True, slots=True)
class Span:
    """Bytes inside a container file (a tar shard member): read by whoever decodes them.

    ``member`` names the bytes inside the container, for messages only.
    """

    path: str
    offset: int
    length: int
    member: str = ""

    def read(self) -> bytes:
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            return handle.read(self.length)

    def __str__(self) -> str:
        return f"{self.path}::{self.member}" if self.member else f"{self.path}@{self.offset}"


@dataclass(frozen=True, slots=True)
class Item:
    """One input of a batch run, before it is decoded.

    ``uri`` is the item's identity in the catalog: a file's absolute path, or
    ``/abs/shard.tar::member/name.jpg`` for a member of a tar shard, whose bytes ``span`` locates.
    A file that could not be stat'ed has size 0 and mtime 0.0: decoding then says why it fails.
    """

    uri: str
    size: int
    mtime: float
    caption: str | None = None
    content_hash: str | None = None  # filled in by the pipeline for files it must index
    span: Span | None = None

    @property
    def source(self) -> str | Span:
        """What a decoder opens: the file path, or the span inside a container."""
        return self.span if self.span is not None else self.uri


@dataclass(frozen=True, slots=True)
class Skipped:
    """An input that a source saw and left out by policy.

    Reasons: ``hidden``; ``not-an-image``; ``outside-root`` (a link leading out of the folder
    walked); ``link-inside-root`` (a link to a folder walked under its own name anyway);
    ``already-walked`` (a folder reached again through a link or mount: loops end);
    ``unreadable-folder``; ``too-large``, ``not-a-file`` and ``no-image`` (tar members and
    samples); ``unreadable-shard``; ``no-path``, ``bad-row`` and ``not-local`` (table and list
    rows).
    """

    uri: str
    reason: str


@dataclass(frozen=True)
class SourcePolicy:
    """What the sources take: the defaults are the safe choice for a photo folder."""

    include_hidden: bool = False
    follow_links: bool = False  # follow symbolic links that lead out of the folder walked
    max_member_bytes: int = 256 * 2**20  # tar members larger than this are skipped
    path_column: str | None = None  # tables: None means the first of path, file, filepath, image
    caption_column: str | None = None  # tables: None means caption/text/title if present


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def is_remote(text: str) -> bool:
    """True for a URL (``https://...``, ``s3://...``): sources read local files only."""
    return bool(_SCHEME.match(text))


def file_item(path: str, caption: str | None = None, *, sidecar: bool = True) -> Item:
    """An Item for a file path; a file that cannot be stat'ed still becomes an Item.

    Its decoding then fails with the reason (missing, permission denied), so the input is
    accounted for as a failure instead of vanishing from the run.
    """
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return Item(path, 0, 0.0, caption)
    if caption is None and sidecar:
        caption = sidecar_caption(path)
    return Item(path, info.st_size, info.st_mtime, caption)


def sidecar_caption(path: str) -> str | None:
    """A sidecar ``photo.txt`` beside ``photo.jpg`` is the photo's caption."""
    sidecar = os.path.splitext(path)[0] + ".txt"
    if sidecar == path:
        return None
    try:
        if not stat.S_ISREG(os.stat(sidecar).st_mode):
            return None  # opening a fifo named photo.txt would block the walk
        with open(sidecar, "rb") as handle:
            text = handle.read(1 << 20)
    except OSError:
        return None
    return clean_caption(text.decode("utf-8", errors="replace"))


def clean_caption(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None
