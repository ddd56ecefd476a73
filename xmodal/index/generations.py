"""Generations on disk: preparing a directory, loading the current generation, sweeping old ones.

Kept apart from the Collection handle so the rules about which files may be read, reused or
deleted sit in one place. Only a lock holder ever deletes anything (``sweep``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import shutil
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from xmodal.errors import CollectionCorruptError, CollectionError
from xmodal.index import catalogdb, choice
from xmodal.index import manifest as mf
from xmodal.index.catalog import Catalog
from xmodal.index.manifest import Manifest
from xmodal.index.vectors import VectorStore

log = logging.getLogger(__name__)
_OPEN_ATTEMPTS = 20


@dataclass(frozen=True)
class CollectionInfo:
    """A view of the current committed generation's manifest (staged rows not included).

    ``index_factory``, ``search_params``, ``recall_at_10`` and ``index_bytes`` describe the
    largest segment (the others are small and Flat under "auto").
    """

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
    # Segments (format 2): how many, and the live rows of each, oldest first.
    segments: int = 0
    segment_sizes: tuple[int, ...] = ()
    deleted_rows: int = 0  # tombstoned rows still on disk until their segment is merged


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
        generation, next_id = old.generation + 1, old.next_id
    seen = [g for p in directory.iterdir() if (g := mf.generation_of(p.name)) is not None]
    return {"generation": max([generation, *(g + 1 for g in seen)]), "next_id": next_id}


def load_generation(directory: Path) -> tuple[Manifest, Catalog, VectorStore]:
    """Read the manifest and its files; retry when a writer replaced the generation meanwhile."""
    for _ in range(_OPEN_ATTEMPTS):
        manifest = mf.read_manifest(directory)
        try:
            return manifest, *_load_files(directory, manifest)
        except (FileNotFoundError, sqlite3.OperationalError, CollectionCorruptError) as exc:
            # A writer may commit and delete this generation's files while we read them.
            if mf.read_manifest(directory).generation != manifest.generation:
                log.debug("generation of %s moved on while opening; retrying", directory)
                continue
            if isinstance(exc, CollectionCorruptError):
                raise
            raise CollectionCorruptError(
                f"collection {directory} is damaged: {exc} (a file the manifest lists is "
                "missing); restore the directory from a backup or rebuild the collection"
            ) from exc
    raise CollectionError(f"collection {directory} changes too fast to open; try again")


def _load_files(directory: Path, manifest: Manifest) -> tuple[Catalog, VectorStore]:
    mf.verify_files(directory, manifest.files())
    store = VectorStore.load(directory, manifest)
    catalog = open_catalog(directory, manifest)
    try:
        check_counts(directory, manifest, store, catalog)
    except BaseException:
        catalog.close()
        raise
    return catalog, store


def check_counts(directory: Path, manifest: Manifest, store: VectorStore, catalog: Catalog) -> None:
    """Manifest, segments and catalog must count the same items, or hits would silently vanish.

    Each file passes its own checksum, so a mismatch means files of different collections or
    generations were put together (a catalog copied in and the manifest "fixed" to match).
    """
    rows, count, live = catalog.count(), manifest.count, store.count
    if rows == count == live:
        return
    name = catalog.path or "(none)"
    raise CollectionCorruptError(
        f"collection {directory} is damaged: the manifest counts {count} items and the index "
        f"holds {live}, but the catalog {name} has {rows} rows; restore the directory from a "
        "backup or rebuild the collection"
    )


def open_catalog(directory: Path, manifest: Manifest) -> Catalog:
    """The catalog seen at the manifest's generation: the versioned database, an older
    per-generation file, or (no rows ever committed) an empty one."""
    if manifest.catalog_id is not None:
        path = directory / mf.CATALOG_NAME
        opener = functools.partial(
            catalogdb.open_reader, directory, manifest.generation, manifest.catalog_id
        )
    elif manifest.catalog is not None:
        path = directory / manifest.catalog.name
        opener = functools.partial(catalogdb.open_legacy, path)
    else:
        return catalogdb.empty(manifest.generation)
    try:
        return opener()
    except sqlite3.DatabaseError as exc:
        if isinstance(exc, sqlite3.OperationalError) and not path.exists():
            raise
        raise CollectionCorruptError(f"collection file {path} is not a readable catalog") from exc


def sweep(directory: Path, manifest: Manifest) -> None:
    """Delete files no longer listed and crash leftovers; only ever called holding the lock.

    Readers that opened an older generation keep working: they hold its indexes in memory and
    its embeddings and catalog open, and on POSIX an open file outlives its unlinked name.
    """
    keep = {entry.name for entry in manifest.files()}
    removed = 0
    for path in mf.stale_files(directory, keep):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed += 1
    if manifest.catalog_id is None:  # a database no manifest names (overwritten collection)
        for name in (mf.CATALOG_NAME, f"{mf.CATALOG_NAME}-wal", f"{mf.CATALOG_NAME}-shm"):
            if (directory / name).exists():
                (directory / name).unlink()
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
        current = mf.read_manifest(directory)
        if current.generation == generation:
            return
        keep = {entry.name for entry in current.files()}
        for path in directory.iterdir():
            if mf.generation_of(path.name) == generation and path.name not in keep:
                path.unlink(missing_ok=True)
    except (CollectionError, OSError) as exc:
        log.warning("could not clean up after a failed commit in %s: %s", directory, exc)


def first_manifest(
    directory: Path,
    spec: dict[str, Any],
    index_key: str,
    memory_budget: int | None,
    projection: str,
) -> Manifest:
    """The manifest of a new, empty collection (generation without data files)."""
    previous = previous_state(directory)
    created = now()
    return Manifest(
        generation=previous["generation"],
        encoder_spec=spec,
        index_key=index_key,
        dim=spec.get("dim"),
        count=0,
        next_id=previous["next_id"],
        created=created,
        updated=created,
        memory_budget=memory_budget,
        projection=projection,
    )


def describe(directory: Path, manifest: Manifest) -> CollectionInfo:
    """CollectionInfo of the committed generation described by ``manifest``."""
    data_bytes = sum(entry.size for entry in manifest.files())
    if manifest.catalog_id is not None:
        with contextlib.suppress(OSError):
            data_bytes += (directory / mf.CATALOG_NAME).stat().st_size
    largest = manifest.largest()
    tuned = (largest.tuning or {}) if largest is not None else {}
    if largest is not None:
        factory = largest.index_factory
    else:
        factory = manifest.index_key if not choice.is_managed(manifest.index_key) else "Flat"
    return CollectionInfo(
        directory=directory,
        generation=manifest.generation,
        count=manifest.count,
        dim=manifest.dim,
        index_key=manifest.index_key,
        encoder_spec=dict(manifest.encoder_spec),
        created=datetime.fromisoformat(manifest.created),
        updated=datetime.fromisoformat(manifest.updated),
        format_version=manifest.format_version,
        bytes_on_disk=data_bytes + (directory / mf.MANIFEST_NAME).stat().st_size,
        index_factory=factory,
        search_params=dict(largest.search_params) if largest is not None else {},
        recall_at_10=tuned.get("recall_at_10", 1.0 if factory == "Flat" and largest else None),
        tuning_sample_size=tuned.get("sample_size"),
        index_bytes=largest.index.size if largest is not None else None,
        memory_budget=manifest.memory_budget,
        segments=len(manifest.segments),
        segment_sizes=tuple(segment.live for segment in manifest.segments),
        deleted_rows=sum(segment.deleted for segment in manifest.segments),
        **_projection_info(manifest),
    )


def _projection_info(manifest: Manifest) -> dict[str, Any]:
    fit = manifest.projection_fit or {}
    return {
        "projection": str(manifest.projection or "none"),
        "projection_in_dim": fit.get("in_dim"),
        "projection_out_dim": fit.get("out_dim"),
        "projection_explained_variance": fit.get("explained_variance_ratio"),
        "projection_whiten": bool(fit.get("whiten", False)),
        "projection_recall_at_10": fit.get("recall_at_10"),
        "projection_sample_queries": fit.get("recall_sample_size"),
    }
