"""Where items come from: image files and folders, walked lazily and in a stable order."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from xmodal.errors import XmodalError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset(
    {
        ".jpg", ".jpeg", ".jpe", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff",
        ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".ico", ".jp2", ".j2k", ".avif", ".heic", ".heif",
    }
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Item:
    """One input of a batch run, before it is decoded."""

    uri: str
    size: int
    mtime: float
    caption: str | None = None
    content_hash: str | None = None  # filled in by the pipeline for files it must index


def iter_items(sources: Iterable[str | os.PathLike]) -> Iterator[Item]:
    """Yield image files named directly or found under folders (recursively, sorted).

    Hidden files and folders are skipped inside folders; a file named explicitly is always
    taken. Symbolic links to folders are not followed, so link loops cannot recur.
    """
    for source in sources:
        path = Path(source).expanduser()
        if path.is_dir():
            yield from _walk(path)
        elif path.exists():
            yield _item(path)
        else:
            raise XmodalError(f"no such file or folder: {source}")


def _walk(root: Path) -> Iterator[Item]:
    for dirpath, dirnames, filenames in os.walk(root, onerror=_warn):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            path = Path(dirpath, name)
            try:
                yield _item(path)
            except OSError as exc:
                _warn(exc)


def _item(path: Path) -> Item:
    stat = path.stat()
    return Item(
        uri=str(path.resolve()), size=stat.st_size, mtime=stat.st_mtime, caption=_caption(path)
    )


def _caption(path: Path) -> str | None:
    """A sidecar ``photo.txt`` beside ``photo.jpg`` is the photo's caption."""
    sidecar = path.with_suffix(".txt")
    if not sidecar.is_file():
        return None
    try:
        return sidecar.read_text(encoding="utf-8", errors="replace").strip() or None
    except OSError:
        return None


def _warn(exc: OSError) -> None:
    log.warning("skipping %s: %s", getattr(exc, "filename", "?"), exc.strerror or exc)
