"""A collection: one directory holding FAISS segments, a SQLite catalog and the raw embeddings.

Writers stage changes in their handle and publish them with ``commit``: every new vector file of
the new generation is written beside the old ones (temp file, fsync, rename), the catalog's rows
of the new generation are committed in one SQLite transaction (rows carry their generation, so
nobody reads them yet: ``xmodal.index.versions``), then one atomic manifest replace switches
generations, then the old files are deleted. A crash at any moment therefore leaves either the
old or the new generation, never a mix: catalog rows of a generation whose manifest never came
are undone by the next writer. One writer at a time holds ``lock``;
readers take no lock, verify checksums and keep what they opened even while a writer commits.

With a projection ("pca:128", see ``xmodal.index.projection``) the index holds projected rows:
it is fitted at commit on the stored raw embeddings (``xmodal.index.autoproject``), saved as a
generation file, and applied inside ``search`` to the raw queries callers pass in.

Adding a record whose path is already catalogued *replaces* it: the old id is removed from the
index and the catalog and the row gets a new id. Ids are never reused within a directory.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xmodal.errors import CollectionError
from xmodal.index import autoindex, autoproject, catalogdb, checks, merging
from xmodal.index import generations as gens
from xmodal.index import manifest as mf
from xmodal.index.catalog import Catalog
from xmodal.index.ledger import LedgerEntry, RunRecord
from xmodal.index.lock import WriterLock
from xmodal.index.publishing import CommitProtocol
from xmodal.index.reading import CollectionReader, guarded
from xmodal.index.records import Record
from xmodal.index.segments import IndexBuilder
from xmodal.index.tagstore import Tag
from xmodal.index.vectors import VectorStore

log = logging.getLogger(__name__)


class Collection(CommitProtocol, CollectionReader):
    """A handle on a collection directory; see the module docstring for the guarantees."""

    def __init__(
        self,
        directory: Path,
        manifest: mf.Manifest,
        catalog: Catalog,
        store: VectorStore,
        lock: WriterLock | None = None,
    ) -> None:
        self._dir = directory
        self._manifest = manifest
        self._catalog = catalog
        self._store = store
        self._lock: WriterLock | None = lock
        self._next_id = manifest.next_id
        self._catalog_id = manifest.catalog_id
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

        ``index_key`` is "auto" (chosen for every segment from its size, dim and
        ``memory_budget`` bytes, default half the RAM; see ``xmodal.index.choice``), an alias
        ("flat", "hnsw", "ivf-flat", "ivf-pq": that family, sized per segment) or a literal FAISS
        factory string. ``projection`` is "none", "pca:N" or "pca:F" (share of variance),
        optionally ":whiten".
        """
        directory = Path(directory)
        autoindex.choice.check_index_key(index_key)
        spec = checks.clean_spec(encoder_spec)
        wanted = str(autoproject.check_request(projection, spec.get("dim")))
        if spec.get("dim") is not None and not autoindex.choice.is_managed(index_key):
            autoindex.check_factory(int(spec["dim"]), index_key)
        gens.check_target(directory, overwrite)
        directory.mkdir(parents=True, exist_ok=True)
        lock = WriterLock(directory, directory / mf.LOCK_NAME)
        lock.acquire()
        try:
            manifest = gens.first_manifest(directory, spec, index_key, memory_budget, wanted)
            mf.write_manifest(directory, manifest)
            gens.sweep(directory, manifest)
            store = VectorStore(spec.get("dim"))
            catalog = catalogdb.empty(manifest.generation)
            return cls(directory, manifest, catalog, store, lock)
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
                if manifest.catalog_id is not None:  # undoes rows of a commit that never came
                    catalog.close()
                    catalog = catalogdb.open_writer(
                        directory, manifest.generation, manifest.catalog_id
                    )
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
        with self._staging():
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
            with self._staging():
                self._working_catalog().delete(present.tolist())
            self._store.remove(present)
        return len(present)

    @guarded
    def record(self, entries: Sequence[LedgerEntry], run: RunRecord | None = None) -> None:
        """Stage ledger entries and a run's row; the next commit publishes them with the rows."""
        self._require_writable("record inputs")
        with self._staging():
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
        with self._staging():
            catalog = self._working_catalog()
            if reset is not None:
                catalog.reset_tags(reset)
            present = catalog.get_records(tags)
            catalog.put_tags({int(i): tuple(t) for i, t in tags.items() if int(i) in present})

    @guarded
    def commit(self) -> int:
        """Publish staged changes as a new generation; a no-op returning the current one if none.

        Writes only the new segment, new tombstone files, merged segments (``merging``) and the
        catalog; a refitted projection or a new index key rewrites every row (a reindex).
        """
        self._require_writable("commit")
        return self._commit(merging.plan_merges)

    @guarded
    def compact(self, *, full: bool = False) -> int:
        """Merge segments now: each size tier into one, or everything into one (``full``).

        Also publishes any staged changes; returns the generation (unchanged if nothing to do).
        """
        self._require_writable("compact")
        planner = functools.partial(merging.plan_compaction, full=full)
        return self._commit(planner, force=True)

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
        """Fill segment indexes with ``builder`` in this handle (None: in-process, the default).

        A builder gets (dim, factory, ids, rows) and returns the filled id-mapped index; the
        distributed pipeline uses one that adds parts in parallel and merges them.
        """
        self._store.builder = builder

    @contextlib.contextmanager
    def _staging(self) -> Iterator[None]:
        """A catalog edit that lost every staged change (SQLite rolled back the whole
        transaction on a write error) drops the staged vectors too: both stay in step."""
        try:
            yield
        except CollectionError:
            if not self._catalog.editable and self._store.dirty:
                self._store.discard_staged()
            raise

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
            self._store.discard_staged()
            with contextlib.suppress(sqlite3.Error):
                self._catalog.close()  # rolls back what was staged
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
