"""The manifest: the single switch between generations of a collection.

A collection directory holds one ``manifest.json`` and, per generation, immutable data files whose
names carry the generation number. Writers create the files of generation N+1 beside those of
generation N (``xmodal.index.durable``: temp file, fsync, verify, rename, fsync the directory),
then replace the manifest atomically. Readers read the manifest first and so always see one
whole generation.

Checksums are SHA-256: with SHA-NI (every recent x86 and ARMv8 server) hashlib's SHA-256 runs at
well over 1 GB/s, faster than BLAKE2b, and it is what everybody's tooling can check by hand
(``sha256sum``). The algorithm is named in the manifest so it can change with a format bump.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
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

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
LOCK_NAME = "lock"
CHECKSUM_ALGORITHM = "sha256"
_GENERATION_FILE = re.compile(r"^[a-z]+\.g(\d{6,})\.[a-z0-9.]+$")

# Role -> file name pattern of one generation; the manifest lists the files under these roles.
FILE_PATTERNS = {
    "index": "index.g{gen:06d}.faiss",
    "catalog": "catalog.g{gen:06d}.sqlite",
    "embeddings": "embeddings.g{gen:06d}.f16.npy",
    "ids": "ids.g{gen:06d}.npy",
    "projection": "projection.g{gen:06d}.npz",
}


def generation_file(role: str, generation: int) -> str:
    """The file name of ``role`` (index, catalog, embeddings, ids, projection) in ``generation``."""
    return FILE_PATTERNS[role].format(gen=generation)


def generation_of(name: str) -> int | None:
    """The generation number encoded in a data file name, or None for any other file."""
    match = _GENERATION_FILE.match(name)
    return int(match.group(1)) if match else None


# Kept for callers that sync files written by other libraries.
fsync_dir = fsync_path
fsync_file = fsync_path


def not_a_collection(directory: Path) -> CollectionError:
    """The one message for a directory that holds no collection (shared by open and the CLI)."""
    return CollectionError(
        f"not an xmodal collection: {directory} (create one with `xmodal index SOURCE -c DIR`)"
    )


def describe_file(path: Path) -> dict[str, Any]:
    """The manifest entry of one data file: name, size and checksum."""
    return {"name": path.name, "size": path.stat().st_size, "sha256": written_digest(path)}


def verify_files(directory: Path, files: dict[str, dict[str, Any]]) -> None:
    """Check size and checksum of every listed file; a mismatch names the file that is damaged."""
    for entry in files.values():
        path = directory / entry["name"]
        if not path.exists():
            raise FileNotFoundError(path)
        size = path.stat().st_size
        if size != entry["size"]:
            raise CollectionCorruptError(
                f"collection file {path} is damaged: {size} bytes, the manifest says "
                f"{entry['size']} (truncated or overwritten); restore the directory from a backup "
                "or rebuild the collection"
            )
        if file_digest(path) != entry["sha256"]:
            raise CollectionCorruptError(
                f"collection file {path} is damaged: its sha256 does not match the manifest; "
                "restore the directory from a backup or rebuild the collection"
            )


def read_manifest(directory: Path) -> dict[str, Any]:
    """Read and sanity-check ``manifest.json``; refuse formats this version cannot read."""
    path = directory / MANIFEST_NAME
    if not directory.is_dir() or not path.is_file():
        raise not_a_collection(directory)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CollectionCorruptError(f"collection file {path} is unreadable: {exc}") from exc
    if not isinstance(manifest, dict) or "format_version" not in manifest:
        raise CollectionCorruptError(f"collection file {path} is not an xmodal manifest")
    version = manifest["format_version"]
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CollectionError(
            f"collection {directory} has format version {version}, but this xmodal reads "
            f"format {FORMAT_VERSION} and older; upgrade xmodal to open it"
        )
    missing = {"generation", "encoder_spec", "index_key", "dim", "count", "next_id", "files"}
    missing -= manifest.keys()
    if missing:
        raise CollectionCorruptError(f"collection file {path} lacks {sorted(missing)}")
    return manifest


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    """Replace the manifest atomically: this rename is the moment a generation becomes current."""
    data = json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8") + b"\n"
    durable_write(directory, MANIFEST_NAME, lambda sink: sink.write(data))


def stale_files(directory: Path, keep: set[str]) -> Iterator[Path]:
    """Data files of other generations and leftover temp files: safe to delete under the lock."""
    for path in directory.iterdir():
        name = path.name
        if name.startswith(TEMP_PREFIX) or (generation_of(name) is not None and name not in keep):
            yield path
