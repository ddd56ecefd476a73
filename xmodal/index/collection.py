"""A collection: one directory holding a FAISS index, a SQLite catalog and the raw embeddings.

Writers stage changes in their handle and publish them with ``commit``: every data file of the
new generation is written beside the old ones (temp file, fsync, rename), then one atomic manifest
replace switches generations, then the old files are deleted. A crash at any moment therefore
leaves either the old or the new generation, never a mix. One writer at a time holds ``lock``;
readers take no lock, verify checksums and keep what they opened even while a writer commits.

With a projection ("pca:128", see ``xmodal.index.projection``) the index holds projected rows:
it is fitted at commit on the stored raw embeddings (``xmodal.index.autoproject``), saved as a
generation file, and applied inside ``search`` to the raw queries callers pass in.

Adding a record whose path is already catalogued *replaces* it: the old id is removed from the
index and the catalog and the row gets a new id. Ids are never reused within a directory.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xmodal.errors import CollectionError
from xmodal.index import autoindex, autoproject, checks
from xmodal.index import generations as gens
from xmodal.index import manifest as mf
from xmodal.index.catalog import Catalog
from xmodal.index.durable import write_failed
from xmodal.index.ledger import LedgerEntry, RunRecord
from xmodal.index.lock import WriterLock
from xmodal.index.reading import CollectionReader, guarded
from xmodal.index.records import Record
from xmodal.index.tagstore import Tag
from xmodal.index.vectors import GenerationFiles, IndexBuilder, VectorStore

log = logging.getLogger(__name__)


class Collection(CollectionReader):
    """A handle on a collection directory; see the module docstring for the guarantees."""

    def __init__(
        self,
        directory: Path,
        manifest: dict,
        catalog: Catalog,
        store: VectorStore,
        lock: WriterLock | None = None,
    ) -> None:
        self._dir = directory
        self._manifest = manifest
        self._catalog = catalog
        self._store = store
        self._lock: WriterLock | None = lock
        self._next_id = int(manifest["next_id"])
        self._index_request: dict[str, Any] | None = None  # set_index, applied at commit
        self._mutex = threading.RLock()
        self._closed = False

    # ----------------------------------------------------------------- creating and opening
    @classmethod
    def create(
        cls,
        directory: str | Path,
        encoder_spec: Mapping[str, Any],
        *,
        index_key: str = "auto",
        memory_budget: int | None = None,
        overwrite: bool = False,
        projection: str = "none",
    ) -> Collection:
        """Make ``directory`` an empty collection and return a writable handle holding the lock.

        ``index_key`` is "auto" (chosen at every commit from count, dim and ``memory_budget``
        bytes, default half the RAM; see ``xmodal.index.choice``), an alias ("flat", "hnsw",
        "ivf-flat", "ivf-pq": that family, sized at commit) or a literal FAISS factory string.
        ``projection`` is "none", "pca:N" or "pca:F" (share of variance), optionally ":whiten".
        """
        directory = Path(directory)
        autoindex.choice.check_index_key(index_key)
        spec = checks.clean_spec(encoder_spec)
        wanted = str(autoproject.check_request(projection, spec.get("dim")))
        gens.check_target(directory, overwrite)
        directory.mkdir(parents=True, exist_ok=True)
        lock = WriterLock(directory, directory / mf.LOCK_NAME)
        lock.acquire()
        try:
            fields = autoindex.initial_fields(index_key, memory_budget)
            store = VectorStore(spec.get("dim"), fields["index_factory"])  # checks the key
            manifest = gens.first_manifest(directory, spec, index_key) | fields
            manifest["projection"] = wanted
            mf.write_manifest(directory, manifest)
            gens.sweep(directory, manifest)
            return cls(directory, manifest, Catalog.open_committed(None), store, lock)
        except BaseException:
            lock.release()
            raise

    @classmethod
    def open(cls, directory: str | Path, *, writable: bool = False) -> Collection:
        """Open the current generation, verifying every file's size and checksum."""
        directory = Path(directory)
        mf.read_manifest(directory)  # refuse non-collections before touching anything
        lock = None
        if writable:
            lock = WriterLock(directory, directory / mf.LOCK_NAME)
            lock.acquire()
        try:
            manifest, catalog, store = gens.load_generation(directory)
            if writable:
                gens.sweep(directory, manifest)
            return cls(directory, manifest, catalog, store, lock)
        except BaseException:
            if lock is not None:
                lock.release()
            raise

    # ----------------------------------------------------------------- writing
    @guarded
    def add(self, vectors: np.ndarray, records: Sequence[Record]) -> np.ndarray:
        """Stage rows and return their new int64 ids; visible to others only after commit()."""
        self._require_writable("add items")
        vectors = checks.check_vectors(vectors, self._store.dim, what="vectors")
        records = checks.check_records(records, len(vectors))
        if not len(vectors):
            return np.zeros(0, np.int64)
        checks.check_normalised(vectors)
        self._store.ensure_dim(vectors.shape[1])
        ids = np.arange(self._next_id, self._next_id + len(vectors), dtype=np.int64)
        replaced = self._working_catalog().put(ids.tolist(), records)
        self._store.remove(np.asarray(replaced, np.int64))
        self._store.add(ids, vectors)
        self._next_id += len(vectors)
        return ids

    @guarded
    def remove(self, ids: Iterable[int] | np.ndarray) -> int:
        """Stage removal of ``ids``; returns how many were present (unknown ids are ignored)."""
        self._require_writable("remove items")
        ids = checks.check_ids(ids)
        present = np.asarray(sorted(self._catalog.get_records(ids)), np.int64)
        if len(present):
            self._working_catalog().delete(present.tolist())
            self._store.remove(present)
        return len(present)

    @guarded
    def record(self, entries: Sequence[LedgerEntry], run: RunRecord | None = None) -> None:
        """Stage ledger entries and a run's row; the next commit publishes them with the rows."""
        self._require_writable("record inputs")
        catalog = self._working_catalog()
        catalog.put_ledger(entries)
        if run is not None:
            catalog.put_run(run)

    @guarded
    def put_tags(self, tags: Mapping[int, Sequence[Tag]], *, reset: str | None = None) -> None:
        """Stage items' zero-shot tags; ``reset`` (a settings fingerprint) first drops all tags.

        Tags of ids no longer in the catalog are ignored. Published by the next commit.
        """
        self._require_writable("tag items")
        catalog = self._working_catalog()
        if reset is not None:
            catalog.reset_tags(reset)
        present = catalog.get_records(tags)
        catalog.put_tags({int(i): tuple(t) for i, t in tags.items() if int(i) in present})

    @guarded
    def commit(self) -> int:
        """Publish staged changes as a new generation; a no-op returning the current one if none."""
        self._require_writable("commit")
        if self._catalog.editable and not self._store.dirty and not self._index_request:
            return self._commit_catalog()
        previous = self._store.projection
        try:
            self._store.use_projection(autoproject.plan(self._requested(), self._store))
            picked = self._plan_index()
            if not self._store.dirty and (not self._index_request or self._store.index is None):
                self._discard_working_catalog()
                return self.generation
            if self._catalog.count() != self._store.count:
                raise CollectionError(
                    f"internal error: catalog has {self._catalog.count()} rows but the index "
                    f"{self._store.count}; nothing was committed, please report this"
                )
            self._working_catalog()  # an index-only change publishes an unchanged catalog copy
            generation = self.generation + 1
            files = self._store.write_generation(self._dir, generation)  # failing here is harmless
        except BaseException:
            self._store.revert_projection(previous)
            gens.discard(self._dir, generation=self.generation + 1)
            raise
        refitted = self._store.projection is not previous
        try:
            self._publish(generation, files, picked, refitted=refitted)
        except BaseException:
            self._abandon(generation)
            raise
        try:
            gens.sweep(self._dir, self._manifest)
        except OSError as exc:  # leftovers are swept again by the next writer
            log.warning("could not delete old generation files in %s: %s", self._dir, exc)
        log.info("committed %s generation %d (%d items)", self._dir, generation, self.count)
        return generation

    @guarded
    def set_index(
        self, index_key: str, memory_budget: int | None = None, projection: str | None = None
    ) -> None:
        """Use another index key, budget and projection (None: keep) from the next commit on."""
        self._require_writable("change the index")
        autoindex.choice.check_index_key(index_key)
        request: dict[str, Any] = {"index_key": index_key, "memory_budget": memory_budget}
        dim = self._store.index_dim
        if projection is not None:
            wanted = autoproject.check_request(projection, self._store.dim)
            request["projection"] = str(wanted)
            dim = wanted.n_components or (None if wanted.kind == "pca" else self._store.dim)
        if dim is not None and not autoindex.choice.is_managed(index_key):
            autoindex.check_factory(dim, index_key)
        self._index_request = request

    def use_index_builder(self, builder: IndexBuilder | None) -> None:
        """Fill rebuilt indexes with ``builder`` in this handle (None: in-process, the default).

        A builder gets (dim, factory, ids, rows) and returns the filled id-mapped index; the
        distributed pipeline uses one that adds parts in parallel and merges them.
        """
        self._store.builder = builder

    def _requested(self) -> dict[str, Any]:
        return self._manifest | (self._index_request or {})

    def _plan_index(self) -> autoindex.choice.IndexChoice:
        """Resolve the index for the rows about to be committed; the store rebuilds on change."""
        picked = autoindex.resolve(self._requested(), self._store.count, self._store.index_dim)
        self._store.use_factory(picked.factory)
        return picked

    def _publish(
        self,
        generation: int,
        files: GenerationFiles,
        picked: autoindex.choice.IndexChoice,
        *,
        refitted: bool,
    ) -> None:
        """Publish the catalog, switch the manifest, adopt the new generation in this handle."""
        catalog_path = self._publish_catalog(generation)
        paths = {"index": files.index, "catalog": catalog_path}
        paths |= {"embeddings": files.embeddings, "ids": files.ids}
        if files.projection is not None:
            paths["projection"] = files.projection
        assert self._store.index is not None  # a dirty store has a dimension
        projection = self._store.projection
        project = projection.transform if projection is not None else None
        tuned = autoindex.tuned_fields(
            self._store.index, picked, files, self._requested(), project=project, retune=refitted
        )
        if tuned["index_factory"] != picked.factory:  # exact search won: rewrite the index as Flat
            self._store.rewrite_index(files, tuned["index_factory"])
            tuned["index_bytes"] = files.index.stat().st_size
        measured = autoproject.fields(projection, self._requested(), files, refitted=refitted)
        manifest = gens.next_manifest(
            self._requested() | tuned | measured,
            generation,
            paths,
            dim=self._store.dim,
            count=self._store.count,
            next_id=self._next_id,
        )
        mf.write_manifest(self._dir, manifest)  # the switch: from here on the new generation
        self._manifest = manifest
        self._index_request = None
        self._catalog = Catalog.open_committed(catalog_path)
        self._store.switch_to(files)

    def _commit_catalog(self) -> int:
        """Publish a catalog-only change (ledger rows): the manifest lists the same vector files."""
        generation = self.generation + 1
        try:
            catalog_path = self._publish_catalog(generation)
            manifest = gens.catalog_manifest(self._manifest, generation, catalog_path)
            mf.write_manifest(self._dir, manifest)
        except BaseException:
            self._abandon(generation)
            raise
        self._manifest = manifest
        self._catalog = Catalog.open_committed(catalog_path)
        with contextlib.suppress(OSError):  # leftovers are swept again by the next writer
            gens.sweep(self._dir, self._manifest)
        return generation

    def _abandon(self, generation: int) -> None:
        """After a failed publish the staged catalog is spent: clean up, close, no retry here."""
        log.error("commit of %s failed; closing the handle, reopen to continue", self._dir)
        gens.discard(self._dir, generation=generation)
        self.close()

    def _publish_catalog(self, generation: int) -> Path:
        """Move the finished working catalog to its generation name, durably."""
        catalog_path = self._dir / mf.generation_file("catalog", generation)
        try:
            mf.publish(self._catalog.finish(), catalog_path)
        except OSError as exc:
            raise write_failed(catalog_path, exc) from exc
        return catalog_path

    def _working_catalog(self) -> Catalog:
        """The editable copy of the catalog, made on the first change after open or commit."""
        if not self._catalog.editable:
            committed = self._manifest["files"].get("catalog")
            source = self._dir / committed["name"] if committed else None
            work = mf.temp_path(self._dir, "catalog.work.sqlite")
            catalog = Catalog.open_working_copy(source, work)
            self._catalog.close()
            self._catalog = catalog
        return self._catalog

    def _discard_working_catalog(self) -> None:
        if self._catalog.editable:
            self._catalog.finish().unlink(missing_ok=True)
            self._catalog = gens.open_catalog(self._dir, self._manifest)

    def _require_writable(self, action: str) -> None:
        if self._lock is None:
            raise CollectionError(
                f"cannot {action}: collection {self._dir} is open read-only; open it with "
                "Collection.open(directory, writable=True)"
            )

    # ----------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Release the lock; staged changes that were not committed are discarded."""
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            if self._catalog.editable:
                with contextlib.suppress(CollectionError):  # a cut-short copy deletes itself
                    self._catalog.finish().unlink(missing_ok=True)
            else:
                self._catalog.close()
            if self._lock is not None:
                self._lock.release()

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def __repr__(self) -> str:
        mode = "writable" if self._lock is not None else "read-only"
        return f"Collection({str(self._dir)!r}, generation={self.generation}, {mode})"
