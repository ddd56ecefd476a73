"""The commit protocol of a writable collection: write, publish, switch, or undo.

``Collection`` (``xmodal.index.collection``) holds the public API and the staged state; this
mixin holds what a commit does with them, in order: fit the projection, write the new segment
files and merges (``committing``), commit the catalog rows of the new generation in one
transaction, fsync the directory, switch the manifest, then sweep what no manifest names. A
failure before the switch discards the new files and undoes the catalog rows
(``_abandon``); the previous generation stays current.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

from xmodal.errors import CollectionError
from xmodal.index import autoindex, autoproject, catalogdb, committing
from xmodal.index import generations as gens
from xmodal.index import manifest as mf
from xmodal.index.durable import durable_write, fsync_path
from xmodal.index.segments import LoadedSegment

if TYPE_CHECKING:
    from xmodal.index.catalog import Catalog

log = logging.getLogger("xmodal.index.collection")


class CommitProtocol:
    """How a ``Collection`` publishes its staged changes; see the module docstring."""

    def _commit(self, planner: committing.Planner, *, force: bool = False) -> int:
        sizes = [segment.live for segment in self._store.segments]
        mergeable = force and bool(planner(sizes))
        if not self._store.dirty and not self._index_request and not mergeable:
            if self._catalog.editable:
                return self._commit_catalog()
            return self.generation
        previous = self._store.projection
        generation = self.generation + 1
        try:
            requested = self._requested()
            projection = autoproject.plan(requested["projection"], self._fit(), self._store)
            reindex = projection is not previous or self._index_request is not None
            self._store.projection = projection
            if self._catalog.count() != self._store.count:
                raise CollectionError(
                    f"internal error: catalog has {self._catalog.count()} rows but the index "
                    f"{self._store.count}; nothing was committed, please report this"
                )
            self._working_catalog()  # the catalog database exists before the manifest names it
            settings = autoindex.IndexSettings(requested["index_key"], requested["memory_budget"])
            # Written smallest first, so that a size limit is met by the file that exceeds it.
            projection_file = self._write_projection(generation, projection, reindex)
            segments = committing.write_vectors(
                self._dir, generation, self._store, settings, reindex=reindex, planner=planner
            )
            fit = autoproject.fit_record(
                projection, requested["projection"], self._fit(), self._store,
                refitted=projection is not previous,
            )  # fmt: skip
        except BaseException:
            self._store.projection = previous
            gens.discard(self._dir, generation=generation)
            raise
        try:
            self._publish(generation, segments, projection_file, fit, requested)
        except BaseException:
            self._abandon(generation)
            raise
        try:
            gens.sweep(self._dir, self._manifest)
        except OSError as exc:  # leftovers are swept again by the next writer
            log.warning("could not delete old generation files in %s: %s", self._dir, exc)
        log.info("committed %s generation %d (%d items, %d segments)", self._dir, generation,
                 self.count, len(segments))  # fmt: skip
        return generation

    def _fit(self) -> dict[str, Any] | None:
        return self._manifest.projection_fit

    def _write_projection(
        self, generation: int, projection: Any, reindex: bool
    ) -> mf.FileEntry | None:
        if projection is None:
            return None
        if not reindex and self._manifest.projection_file is not None:
            return self._manifest.projection_file
        name = mf.generation_file("projection", generation)
        return mf.FileEntry.of(durable_write(self._dir, name, projection.save))

    def _requested(self) -> dict[str, Any]:
        base = {
            "index_key": self._manifest.index_key,
            "memory_budget": self._manifest.memory_budget,
            "projection": self._manifest.projection,
        }
        return base | (self._index_request or {})

    def _publish(
        self,
        generation: int,
        segments: list[LoadedSegment],
        projection_file: mf.FileEntry | None,
        fit: dict[str, Any] | None,
        requested: dict[str, Any],
    ) -> None:
        """Commit the catalog, switch the manifest, adopt the new generation in this handle."""
        self._catalog.commit(generation)
        fsync_path(self._dir)  # the WAL file's name too must outlive a crash
        manifest = self._manifest.replace(
            format_version=mf.format_needed(segment.meta for segment in segments),
            generation=generation,
            index_key=requested["index_key"],
            memory_budget=requested["memory_budget"],
            projection=requested["projection"],
            projection_file=projection_file,
            projection_fit=fit,
            dim=self._store.dim,
            count=self._store.count,
            next_id=self._next_id,
            updated=gens.now(),
            segments=tuple(segment.meta for segment in segments),
            catalog=None,
            catalog_id=self._catalog_id,
        )
        mf.write_manifest(self._dir, manifest)  # the switch: from here on the new generation
        self._manifest = manifest
        self._index_request = None
        self._store.adopt(segments, self._store.projection)

    def _commit_catalog(self) -> int:
        """Publish a catalog-only change (ledger rows): the manifest lists the same vector files."""
        generation = self.generation + 1
        try:
            self._catalog.commit(generation)
            fsync_path(self._dir)
            manifest = self._manifest.replace(
                format_version=mf.format_needed(self._manifest.segments),
                generation=generation,
                updated=gens.now(),
                catalog=None,
                catalog_id=self._catalog_id,
            )
            mf.write_manifest(self._dir, manifest)
        except BaseException:
            self._abandon(generation)
            raise
        self._manifest = manifest
        with contextlib.suppress(OSError):  # leftovers are swept again by the next writer
            gens.sweep(self._dir, self._manifest)
        return generation

    def _abandon(self, generation: int) -> None:
        """After a failed publish the staged changes are spent: undo, close, no retry here.

        The catalog rows of ``generation`` may be committed already: they are undone now (and
        by the next writer if even that fails); no reader looks at them meanwhile.
        """
        log.error("commit of %s failed; closing the handle, reopen to continue", self._dir)
        gens.discard(self._dir, generation=generation)
        if self._catalog.versioned and self._catalog_id is not None:
            try:
                if mf.read_manifest(self._dir).generation != generation:
                    self._catalog.discard_after(self.generation)
            except Exception as exc:  # noqa: BLE001 (the next writer undoes them on open)
                log.warning("could not undo the catalog rows of generation %d: %s", generation, exc)
        self.close()

    def _working_catalog(self) -> Catalog:
        """The writer's catalog; a collection without the versioned database gets one here
        (rows of an older per-generation catalog file copied in), named by the next manifest."""
        if self._catalog_id is None or not self._catalog.versioned:
            legacy = self._manifest.catalog
            source = self._dir / legacy.name if legacy is not None else None
            catalog, identity = catalogdb.create(self._dir, self.generation, source)
            self._catalog.close()
            self._catalog, self._catalog_id = catalog, identity
        return self._catalog
