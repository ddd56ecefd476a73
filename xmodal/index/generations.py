"""Generations on disk: preparing a directory, loading the current generation, sweeping old ones.

Kept apart from the Collection handle so the rules about which files may be read, reused or
deleted sit in one place. Only a lock holder ever deletes anything (``sweep``).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from xmodal.errors import CollectionCorruptError, CollectionError
from xmodal.index import autoindex, tuning
from xmodal.index import manifest as mf
from xmodal.index.catalog import Catalog
from xmodal.index.vectors import GenerationFiles, VectorStore

log = logging.getLogger(__name__)
_OPEN_ATTEMPTS = 20


@dataclass(frozen=True)
class CollectionInfo:
    """What the manifest of the current committed generation says (staged rows not included)."""

    directory: Path
    generation: int
    count: int
    dim: int | None
    index_key: str
    encoder_spec: dict[str, Any]
    created: datetime
    updated: datetime
    format_version: int
    bytes_on_disk: int
    # Index choice and tuning (absent from manifests written before them: None / empty).
    index_factory: str | None = None
    search_params: dict[str, Any] = field(default_factory=dict)
    recall_at_10: float | None = None
    tuning_sample_size: int | None = None
    index_bytes: int | None = None
    memory_budget: int | None = None
    # Projection (absent from older manifests: "none"); ``dim`` stays the encoder's dimension.
    projection: str = "none"
    projection_in_dim: int | None = None
    projection_out_dim: int | None = None
    projection_explained_variance: float | None = None
    projection_whiten: bool = False
    projection_recall_at_10: float | None = None
    projection_sample_queries: int | None = None


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def check_target(directory: Path, overwrite: bool) -> None:
    """Never adopt or wipe a directory holding someone else's files."""
    if (directory / mf.MANIFEST_NAME).exists():
        if not overwrite:
            raise CollectionError(
                f"{directory} is already an xmodal collection; open it with "
                "Collection.open(directory, writable=True) or pass overwrite=True to replace it"
            )
        return
    if directory.exists() and not directory.is_dir():
        raise CollectionError(f"{directory} exists and is not a directory; choose another path")
    if directory.is_dir():
        foreign = [
            p.name
            for p in directory.iterdir()
            if p.name != mf.LOCK_NAME and not p.name.startswith(mf.TEMP_PREFIX)
        ]
        if foreign:
            raise CollectionError(
                f"{directory} is not empty and not an xmodal collection (holds {foreign[0]!r}); "
                "choose a new or empty directory"
            )


def previous_state(directory: Path) -> dict[str, int]:
    """Where an overwritten collection left off: new names and ids must not collide with old."""
    generation, next_id = 0, 0
    with contextlib.suppress(CollectionError):
        old = mf.read_manifest(directory)
        generation, next_id = int(old["generation"]) + 1, int(old["next_id"])
    seen = [g for p in directory.iterdir() if (g := mf.generation_of(p.name)) is not None]
    return {"generation": max([generation, *(g + 1 for g in seen)]), "next_id": next_id}


def load_generation(directory: Path) -> tuple[dict, Catalog, VectorStore]:
    """Read the manifest and its files; retry when a writer replaced the generation meanwhile."""
    for _ in range(_OPEN_ATTEMPTS):
        manifest = mf.read_manifest(directory)
        try:
            return manifest, *_load_files(directory, manifest)
        except (FileNotFoundError, sqlite3.OperationalError, CollectionCorruptError) as exc:
            # A writer may commit and delete this generation's files while we read them.
            if mf.read_manifest(directory)["generation"] != manifest["generation"]:
                log.debug("generation of %s moved on while opening; retrying", directory)
                continue
            if isinstance(exc, CollectionCorruptError):
                raise
            raise CollectionCorruptError(
                f"collection {directory} is damaged: {exc} (a file the manifest lists is "
                "missing); restore the directory from a backup or rebuild the collection"
            ) from exc
    raise CollectionError(f"collection {directory} changes too fast to open; try again")


def _load_files(directory: Path, manifest: dict) -> tuple[Catalog, VectorStore]:
    files = manifest["files"]
    mf.verify_files(directory, files)
    factory = autoindex.factory_of(manifest)
    store = VectorStore(manifest["dim"], factory)
    if "index" in files:  # a collection with a ledger but no vectors yet has a catalog only
        paths = {role: directory / entry["name"] for role, entry in files.items()}
        vector_files = GenerationFiles(
            paths["index"], paths["embeddings"], paths["ids"], paths.get("projection")
        )
        store = VectorStore.load(vector_files, manifest["dim"], factory, manifest["count"])
        tuning.apply_params(store.index, manifest.get("search_params") or {})
    catalog = open_catalog(directory, manifest)
    try:
        check_counts(directory, manifest, store, catalog)
    except BaseException:
        catalog.close()
        raise
    return catalog, store


def check_counts(directory: Path, manifest: dict, store: VectorStore, catalog: Catalog) -> None:
    """Manifest, index and catalog must count the same items, or hits would silently vanish.

    Each file passes its own checksum, so a mismatch means files of different collections or
    generations were put together (a catalog copied in and the manifest "fixed" to match).
    """
    rows, count = catalog.count(), int(manifest["count"])
    ntotal = store.index.ntotal if store.index is not None else 0
    if rows == count == ntotal:
        return
    entry = manifest["files"].get("catalog")
    name = directory / entry["name"] if entry else "(none)"
    raise CollectionCorruptError(
        f"collection {directory} is damaged: the manifest counts {count} items and the index "
        f"holds {ntotal}, but the catalog {name} has {rows} rows; restore the directory from a "
        "backup or rebuild the collection"
    )


def open_catalog(directory: Path, manifest: dict) -> Catalog:
    entry = manifest["files"].get("catalog")
    path = directory / entry["name"] if entry else None
    try:
        return Catalog.open_committed(path)
    except sqlite3.DatabaseError as exc:
        if isinstance(exc, sqlite3.OperationalError) and path is not None and not path.exists():
            raise
        raise CollectionCorruptError(f"collection file {path} is not a readable catalog") from exc


def sweep(directory: Path, manifest: dict) -> None:
    """Delete older generations and crash leftovers; only ever called while holding the lock."""
    keep = {entry["name"] for entry in manifest["files"].values()}
    removed = 0
    for path in mf.stale_files(directory, keep):
        path.unlink(missing_ok=True)
        removed += 1
    if removed:
        mf.fsync_dir(directory)
        log.debug("removed %d stale files from %s", removed, directory)


def discard(directory: Path, *, generation: int) -> None:
    """Delete the files a failed commit wrote for ``generation``, unless it became current.

    Only when the manifest on disk is readable and names another generation: if the switch got
    through (or cannot be read) the files stay, for the next writer's sweep to judge.
    """
    try:
        if mf.read_manifest(directory)["generation"] == generation:
            return
        for role in mf.FILE_PATTERNS:
            (directory / mf.generation_file(role, generation)).unlink(missing_ok=True)
    except (CollectionError, OSError) as exc:
        log.warning("could not clean up after a failed commit in %s: %s", directory, exc)


def first_manifest(directory: Path, spec: dict[str, Any], index_key: str) -> dict[str, Any]:
    """The manifest of a new, empty collection (generation without data files)."""
    previous = previous_state(directory)
    created = now()
    return {
        "format_version": mf.FORMAT_VERSION,
        "generation": previous["generation"],
        "encoder_spec": spec,
        "index_key": index_key,
        "dim": spec.get("dim"),
        "count": 0,
        "next_id": previous["next_id"],
        "created": created,
        "updated": created,
        "checksum": mf.CHECKSUM_ALGORITHM,
        "files": {},
    }


def next_manifest(
    manifest: dict[str, Any],
    generation: int,
    paths: dict[str, Path],
    *,
    dim: int | None,
    count: int,
    next_id: int,
) -> dict[str, Any]:
    """The manifest that switches to ``generation``: checksums of its freshly written files."""
    return manifest | {
        "format_version": mf.FORMAT_VERSION,
        "generation": generation,
        "dim": dim,
        "count": count,
        "next_id": next_id,
        "updated": now(),
        "checksum": mf.CHECKSUM_ALGORITHM,
        "files": {role: mf.describe_file(path) for role, path in paths.items()},
    }


def catalog_manifest(manifest: dict[str, Any], generation: int, catalog: Path) -> dict[str, Any]:
    """The manifest of ``generation`` when only the catalog changed: other files carry over."""
    files = dict(manifest["files"]) | {"catalog": mf.describe_file(catalog)}
    return manifest | {"generation": generation, "updated": now(), "files": files}


def describe(directory: Path, manifest: dict[str, Any]) -> CollectionInfo:
    """CollectionInfo of the committed generation described by ``manifest``."""
    data_bytes = sum(entry["size"] for entry in manifest["files"].values())
    return CollectionInfo(
        directory=directory,
        generation=manifest["generation"],
        count=manifest["count"],
        dim=manifest["dim"],
        index_key=manifest["index_key"],
        encoder_spec=dict(manifest["encoder_spec"]),
        created=datetime.fromisoformat(manifest["created"]),
        updated=datetime.fromisoformat(manifest["updated"]),
        format_version=manifest["format_version"],
        bytes_on_disk=data_bytes + (directory / mf.MANIFEST_NAME).stat().st_size,
        index_factory=autoindex.factory_of(manifest),
        search_params=dict(manifest.get("search_params") or {}),
        recall_at_10=(manifest.get("tuning") or {}).get("recall_at_10"),
        tuning_sample_size=(manifest.get("tuning") or {}).get("sample_size"),
        index_bytes=manifest.get("index_bytes"),
        memory_budget=manifest.get("memory_budget"),
        **_projection_info(manifest),
    )


def _projection_info(manifest: dict[str, Any]) -> dict[str, Any]:
    fit = manifest.get("projection_fit") or {}
    return {
        "projection": str(manifest.get("projection") or "none"),
        "projection_in_dim": fit.get("in_dim"),
        "projection_out_dim": fit.get("out_dim"),
        "projection_explained_variance": fit.get("explained_variance_ratio"),
        "projection_whiten": bool(fit.get("whiten", False)),
        "projection_recall_at_10": fit.get("recall_at_10"),
        "projection_sample_queries": fit.get("recall_sample_size"),
    }
