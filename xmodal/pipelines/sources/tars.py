"""WebDataset-style tar shards, read in place.

Members are grouped into samples by key: the member's name up to the first dot of its base
name (``train/00042.jpg`` and ``train/00042.json`` form sample ``train/00042``); WebDataset
writes a sample's members next to each other, and only consecutive members are grouped. Each
image member (by extension) is an Item whose ``span`` points at its bytes inside the shard, so
workers read just those bytes. A sample's caption comes from a ``.txt`` or ``.caption`` member,
or the ``caption``/``text`` key of a ``.json`` member (parsed as JSON). Nothing else is read:
pickled members (``.pyd``, ``.pickle``, ...) and any other extension are never opened.

Only uncompressed ``.tar`` shards are read: a compressed stream cannot be seeked, so its members
have no span to hand to workers. Compressed shards are refused up front (see ``check_shard``).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import posixpath
import tarfile
from collections.abc import Iterator

from xmodal.errors import XmodalError
from xmodal.pipelines.sources.items import (
    Item,
    Skipped,
    SourcePolicy,
    Span,
    clean_caption,
    is_image_name,
)

log = logging.getLogger(__name__)

TAR_SUFFIXES = (".tar",)
COMPRESSED_TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar.zst")
_CAPTION_SUFFIXES = (".txt", ".caption")
_MAX_CAPTION_BYTES = 1 << 20


def is_shard_name(path: str) -> bool:
    return path.lower().endswith(TAR_SUFFIXES + COMPRESSED_TAR_SUFFIXES)


def check_shard(path: str) -> None:
    """Refuse a shard that cannot be read in place, with what to do instead."""
    if path.lower().endswith(COMPRESSED_TAR_SUFFIXES):
        raise XmodalError(
            f"{path}: compressed tar shards cannot be read in place; decompress it first "
            "(e.g. gunzip -k shard.tar.gz) and index the .tar"
        )
    try:
        with tarfile.open(path, "r:") as shard:
            shard.next()
    except (tarfile.TarError, OSError) as exc:
        raise XmodalError(f"{path}: not a readable uncompressed tar shard ({exc})") from None


def read_shard(path: str, policy: SourcePolicy) -> Iterator[Item | Skipped]:
    """Every image member of the shard ``path`` (absolute) as an Item, in the shard's order."""
    mtime = os.stat(path).st_mtime  # a rewritten shard re-checks all of its members
    try:
        with tarfile.open(path, "r:") as shard:
            sample: list[tarfile.TarInfo] = []
            while (member := shard.next()) is not None:
                if sample and _key(member.name) != _key(sample[0].name):
                    yield from _sample(shard, path, mtime, sample, policy)
                    sample = []
                sample.append(member)
                shard.members.clear()  # TarFile keeps every header it read; a shard may be big
            yield from _sample(shard, path, mtime, sample, policy)
    except (tarfile.TarError, OSError) as exc:
        log.warning("%s: stopped reading the shard: %s", path, exc)
        yield Skipped(path, "unreadable-shard")


def _key(name: str) -> str:
    folder, base = posixpath.split(name)
    return posixpath.join(folder, base.split(".", 1)[0])


def _sample(
    shard: tarfile.TarFile,
    path: str,
    mtime: float,
    members: list[tarfile.TarInfo],
    policy: SourcePolicy,
) -> Iterator[Item | Skipped]:
    images = [m for m in members if is_image_name(m.name)]
    if not images:
        if members and any(m.isfile() for m in members):
            yield Skipped(f"{path}::{_key(members[0].name)}", "no-image")
        return
    caption = _caption(shard, members)
    for member in images:
        uri = f"{path}{MEMBER_SEPARATOR}{member.name}"
        if not member.isfile() or member.issparse():
            yield Skipped(uri, "not-a-file")
        elif member.size > policy.max_member_bytes:
            yield Skipped(uri, "too-large")
        else:
            span = Span(path, member.offset_data, member.size, member.name)
            yield Item(uri, member.size, mtime, caption, span=span)


def _caption(shard: tarfile.TarFile, members: list[tarfile.TarInfo]) -> str | None:
    for member in members:
        name = member.name.lower()
        if not member.isfile() or member.size > _MAX_CAPTION_BYTES:
            continue
        if name.endswith(_CAPTION_SUFFIXES):
            return clean_caption(_read(shard, member).decode("utf-8", errors="replace"))
        if name.endswith(".json"):
            caption = _json_caption(_read(shard, member))
            if caption is not None:
                return caption
    return None


def _read(shard: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    handle = shard.extractfile(member)
    return handle.read() if handle is not None else b""


def _json_caption(data: bytes) -> str | None:
    try:
        value = json.loads(data)
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    for key in ("caption", "text"):
        if isinstance(value.get(key), str):
            return clean_caption(value[key])
    return None


MEMBER_SEPARATOR = "::"


def locate(uri: str) -> str | Span:
    """What to open for a catalogued uri: the file itself, or a tar member's span.

    Used to show an indexed image again (the catalog keeps uris, not offsets). A shard's member
    table is read once per shard version and kept for the few shards a results page touches.
    """
    path, sep, name = uri.partition(MEMBER_SEPARATOR)
    if not sep or not is_shard_name(path) or not os.path.isfile(path):
        return uri
    stat = os.stat(path)
    found = _members(path, stat.st_mtime_ns, stat.st_size).get(name)
    if found is None:
        raise XmodalError(f"{name} is no longer a member of {path}")
    return Span(path, found[0], found[1], name)


@functools.lru_cache(maxsize=8)
def _members(path: str, mtime_ns: int, size: int) -> dict[str, tuple[int, int]]:
    del mtime_ns, size  # part of the cache key: a rewritten shard is read again
    with tarfile.open(path, "r:") as shard:
        return {m.name: (m.offset_data, m.size) for m in shard if m.isfile() and not m.issparse()}
