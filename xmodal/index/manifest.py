"""The manifest: the single switch between generations of a collection, as a typed value.

A collection directory holds one ``manifest.json`` and immutable data files. Since format 2 the
vectors live in *segments* (Lucene's design): each segment is its own raw float16 embeddings, ids
and FAISS index, written once and never changed; deleting rows writes a new tombstones file for
that segment (``<segment>.deletes.gNNNNNN.npy``, the sorted ids removed). A commit writes only new
segments and new tombstone files, commits the catalog's rows of the new generation, then replaces
the manifest atomically (``xmodal.index.durable``: temp file, fsync, verify, rename, fsync the
directory). The manifest lists every immutable file of the generation with its size and SHA-256,
so readers that read the manifest first always see one whole generation, and a damaged file is
named on open. The catalog is one database shared by all generations (``catalog.sqlite``, rows
versioned by generation, see ``xmodal.index.versions``): the manifest names it by the identity
stored inside it (``catalog_id``) instead of a checksum, as it changes with every commit.
Manifests written before that list a per-generation catalog file (``catalog``) instead.

Format 2 (segments, a catalog file per generation) reads as it is; its next commit writes
format 3. Format 1 (one monolithic generation: ``index/embeddings/ids.gNNNNNN``) is read as a
manifest with one segment made of those files; the next commit writes format 3 (no file is
rewritten for the upgrade: the old files simply stay listed until merged away).

Checksums are SHA-256: with SHA-NI (every recent x86 and ARMv8 server) hashlib's SHA-256 runs at
well over 1 GB/s, faster than BLAKE2b, and it is what everybody's tooling can check by hand
(``sha256sum``). The algorithm is named in the manifest so it can change with a format bump.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xmodal.errors import CollectionCorruptError, CollectionError
from xmodal.index.durable import (  # noqa: F401 (re-exported: the durable-write helpers)
    TEMP_PREFIX,
    Sink,
    durable_write,
    file_digest,
    fsync_path,
    publish,
    temp_path,
    written_digest,
)

# 4: a segment's IVF lists may live in their own file (``lists``, see ``format_needed``);
# 3: the versioned catalog (catalog_id); 2: segments; 1: one generation.
FORMAT_VERSION = 4
MANIFEST_NAME = "manifest.json"
CATALOG_NAME = "catalog.sqlite"
LOCK_NAME = "lock"
CHECKSUM_ALGORITHM = "sha256"
_GENERATION_FILE = re.compile(r"^[a-z]+\.g(\d{6,})\.[a-z0-9.]+$")
_SEGMENT_FILE = re.compile(r"^seg(\d{6,})-\d+\.[a-z0-9.]+$")
_DELETES_FILE = re.compile(r"^seg\d{6,}-\d+\.deletes\.g(\d{6,})\.npy$")

# Role -> file name pattern of one generation (format 1 used all of them; format 2 keeps the
# catalog and the projection per generation, the vectors per segment).
FILE_PATTERNS = {
    "index": "index.g{gen:06d}.faiss",
    "catalog": "catalog.g{gen:06d}.sqlite",
    "embeddings": "embeddings.g{gen:06d}.f16.npy",
    "ids": "ids.g{gen:06d}.npy",
    "projection": "projection.g{gen:06d}.npz",
}
SEGMENT_FILES = {
    "index": "{name}.index.faiss",
    "embeddings": "{name}.embeddings.f16.npy",
    "ids": "{name}.ids.npy",
    "lists": "{name}.lists.ivfdata",  # on-disk IVF inverted lists, memory-mapped by readers
}


@dataclass(frozen=True)
class FileEntry:
    """One data file of a generation: name (in the collection directory), size and checksum."""

    name: str
    size: int
    sha256: str

    @classmethod
    def of(cls, path: Path) -> FileEntry:
        return cls(path.name, path.stat().st_size, written_digest(path))


@dataclass(frozen=True)
class Segment:
    """An immutable slice of the collection's vectors plus its current tombstones."""

    name: str
    count: int  # rows in the files, tombstoned ones included
    index: FileEntry
    embeddings: FileEntry
    ids: FileEntry
    index_factory: str = "Flat"
    index_kind: str = "flat"
    index_reason: str = ""
    search_params: dict[str, Any] = field(default_factory=dict)
    tuning: dict[str, Any] | None = None  # measured recall@10 etc. of a tuned ANN index
    deletes: FileEntry | None = None
    deleted: int = 0
    lists: FileEntry | None = None  # the index's inverted lists, when they live on disk

    @property
    def live(self) -> int:
        return self.count - self.deleted

    def files(self) -> list[FileEntry]:
        listed = [self.index, self.embeddings, self.ids]
        return listed + [f for f in (self.lists, self.deletes) if f is not None]


@dataclass(frozen=True)
class Manifest:
    """Everything a reader needs to open one generation; replaced whole by every commit."""

    generation: int
    encoder_spec: dict[str, Any]
    index_key: str
    dim: int | None
    count: int
    next_id: int
    created: str
    updated: str
    format_version: int = FORMAT_VERSION
    checksum: str = CHECKSUM_ALGORITHM
    memory_budget: int | None = None
    segments: tuple[Segment, ...] = ()
    catalog: FileEntry | None = None  # a per-generation catalog file (before catalog_id)
    catalog_id: str | None = None  # identity of catalog.sqlite, the versioned catalog
    projection: str = "none"  # the requested spec
    projection_file: FileEntry | None = None
    projection_fit: dict[str, Any] | None = None  # what was fitted, with its measured recall

    def files(self) -> list[FileEntry]:
        """Every data file this generation consists of."""
        listed = [f for segment in self.segments for f in segment.files()]
        listed += [f for f in (self.catalog, self.projection_file) if f is not None]
        return listed

    def largest(self) -> Segment | None:
        return max(self.segments, key=lambda s: s.live, default=None)

    def replace(self, **changes: Any) -> Manifest:
        return dataclasses.replace(self, **changes)


def generation_file(role: str, generation: int) -> str:
    """The file name of ``role`` (catalog, projection; format 1: all roles) in ``generation``."""
    return FILE_PATTERNS[role].format(gen=generation)


def segment_name(generation: int, serial: int) -> str:
    """The name of the ``serial``-th segment written by the commit of ``generation``."""
    return f"seg{generation:06d}-{serial}"


def format_needed(segments: Iterable[Segment]) -> int:
    """The oldest format that can describe ``segments``: 3 unless one keeps lists on disk.

    A collection without on-disk lists stays readable by xmodal versions that know format 3.
    """
    return FORMAT_VERSION if any(s.lists is not None for s in segments) else 3


def segment_file(name: str, role: str) -> str:
    return SEGMENT_FILES[role].format(name=name)


def deletes_file(name: str, generation: int) -> str:
    return f"{name}.deletes.g{generation:06d}.npy"


def generation_of(name: str) -> int | None:
    """The generation that wrote a data file (by its name), or None for any other file."""
    for pattern in (_GENERATION_FILE, _DELETES_FILE, _SEGMENT_FILE):
        match = pattern.match(name)
        if match:
            return int(match.group(1))
    return None


# Kept for callers that sync files written by other libraries.
fsync_dir = fsync_path
fsync_file = fsync_path


def not_a_collection(directory: Path) -> CollectionError:
    """The one message for a directory that holds no collection (shared by open and the CLI)."""
    return CollectionError(
        f"not an xmodal collection: {directory} (create one with `xmodal index SOURCE -c DIR`)"
    )


def verify_files(directory: Path, files: list[FileEntry]) -> None:
    """Check size and checksum of every listed file; a mismatch names the file that is damaged."""
    for entry in files:
        path = directory / entry.name
        if not path.exists():
            raise FileNotFoundError(path)
        size = path.stat().st_size
        if size != entry.size:
            raise CollectionCorruptError(
                f"collection file {path} is damaged: {size} bytes, the manifest says "
                f"{entry.size} (truncated or overwritten); restore the directory from a backup "
                "or rebuild the collection"
            )
        if file_digest(path) != entry.sha256:
            raise CollectionCorruptError(
                f"collection file {path} is damaged: its sha256 does not match the manifest; "
                "restore the directory from a backup or rebuild the collection"
            )


def read_manifest(directory: Path) -> Manifest:
    """Read, sanity-check and (format 1) upgrade ``manifest.json``; refuse newer formats."""
    path = directory / MANIFEST_NAME
    if not directory.is_dir() or not path.is_file():
        raise not_a_collection(directory)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CollectionCorruptError(f"collection file {path} is unreadable: {exc}") from exc
    if not isinstance(raw, dict) or "format_version" not in raw:
        raise CollectionCorruptError(f"collection file {path} is not an xmodal manifest")
    version = raw["format_version"]
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CollectionError(
            f"collection {directory} has format version {version}, but this xmodal reads "
            f"format {FORMAT_VERSION} and older; upgrade xmodal to open it"
        )
    missing = {"generation", "encoder_spec", "index_key", "dim", "count", "next_id"}
    missing |= {"files"} if version == 1 else {"segments"}
    missing -= raw.keys()
    if missing:
        raise CollectionCorruptError(f"collection file {path} lacks {sorted(missing)}")
    try:
        return _from_v1(raw) if version == 1 else _from_json(raw)
    except (KeyError, TypeError, ValueError) as exc:
        raise CollectionCorruptError(f"collection file {path} is malformed: {exc!r}") from exc


def write_manifest(directory: Path, manifest: Manifest) -> None:
    """Replace the manifest atomically: this rename is the moment a generation becomes current."""
    data = json.dumps(to_json(manifest), indent=2, sort_keys=True).encode("utf-8") + b"\n"
    durable_write(directory, MANIFEST_NAME, lambda sink: sink.write(data))


def to_json(manifest: Manifest) -> dict[str, Any]:
    return dataclasses.asdict(manifest) | {
        "segments": [dataclasses.asdict(s) for s in manifest.segments]
    }


def stale_files(directory: Path, keep: set[str]) -> Iterator[Path]:
    """Data files no longer listed and leftover temp files: safe to delete under the lock."""
    for path in directory.iterdir():
        name = path.name
        if name.startswith(TEMP_PREFIX) or (generation_of(name) is not None and name not in keep):
            yield path  # a TEMP_PREFIX directory is an on-disk merge's scratch space


def _entry(raw: Mapping[str, Any] | None) -> FileEntry | None:
    return (
        None if raw is None else FileEntry(str(raw["name"]), int(raw["size"]), str(raw["sha256"]))
    )


def _from_json(raw: dict[str, Any]) -> Manifest:
    names = {f.name for f in dataclasses.fields(Manifest)}
    values = {key: value for key, value in raw.items() if key in names}
    segments = []
    for seg in raw["segments"]:
        seg = dict(seg)
        for role in ("index", "embeddings", "ids", "deletes", "lists"):
            seg[role] = _entry(seg.get(role))
        segments.append(Segment(**seg))
    values["segments"] = tuple(segments)
    values["catalog"] = _entry(raw.get("catalog"))
    values["projection_file"] = _entry(raw.get("projection_file"))
    return Manifest(**values)


def _from_v1(raw: dict[str, Any]) -> Manifest:
    """Format 1: its index/embeddings/ids files become one segment, listed under their names."""
    files = {role: _entry(entry) for role, entry in raw["files"].items()}
    segments: tuple[Segment, ...] = ()
    if files.get("index") is not None and int(raw["count"]):
        factory = str(raw.get("index_factory") or raw["index_key"])
        tuning = raw.get("tuning")
        segments = (
            Segment(
                name=f"g{int(raw['generation']):06d}",
                count=int(raw["count"]),
                index=files["index"],
                embeddings=files["embeddings"],
                ids=files["ids"],
                index_factory=factory,
                index_kind=str(raw.get("index_kind") or ""),
                index_reason=str(raw.get("index_reason") or ""),
                search_params=dict(raw.get("search_params") or {}),
                tuning=dict(tuning) if tuning else None,
            ),
        )
    return Manifest(
        generation=int(raw["generation"]),
        encoder_spec=dict(raw["encoder_spec"]),
        index_key=str(raw["index_key"]),
        dim=raw["dim"],
        count=int(raw["count"]),
        next_id=int(raw["next_id"]),
        created=str(raw.get("created") or raw.get("updated")),
        updated=str(raw.get("updated") or raw.get("created")),
        format_version=1,
        memory_budget=raw.get("memory_budget"),
        segments=segments,
        catalog=files.get("catalog"),
        projection=str(raw.get("projection") or "none"),
        projection_file=files.get("projection"),
        projection_fit=raw.get("projection_fit"),
    )
