"""A collection: one directory holding a FAISS index, a SQLite catalog and the raw embeddings.

Writers stage changes in their handle and publish them with ``commit``: every data file of the
new generation is written beside the old ones (temp file, fsync, rename), then one atomic manifest
replace switches generations, then the old files are deleted. A crash at any moment therefore
leaves either the old or the new generation, never a mix. One writer at a time holds ``lock``;
readers take no lock, verify checksums and keep what they opened even while a writer commits.

Adding a record whose path is already catalogued *replaces* it: the old id is removed from the
index and the catalog and the row gets a new id. Ids are never reused within a directory.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from xmodal.errors import CollectionError
from xmodal.index import checks
from xmodal.index import generations as gens
from xmodal.index import manifest as mf
from xmodal.index.catalog import Catalog
from xmodal.index.generations import CollectionInfo
from xmodal.index.lock import WriterLock
from xmodal.index.records import Hit, Record
from xmodal.index.vectors import GenerationFiles, VectorStore

log = logging.getLogger(__name__)
_F = TypeVar("_F", bound=Callable[..., Any])


def _guarded(method: _F) -> _F:
    """Serialise calls on one handle (the app shares handles between threads)."""

    @functools.wraps(method)
    def wrapper(self: Collection, *args: Any, **kwargs: Any) -> Any:
        with self._mutex:
            if self._closed:
                raise CollectionError(f"collection {self._dir} is closed; open it again")
            return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


class Collection:
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
        self._mutex = threading.RLock()
        self._closed = False

    # ----------------------------------------------------------------- creating and opening
    @classmethod
    def create(
        cls,
        directory: str | Path,
        encoder_spec: Mapping[str, Any],
        *,
        index_key: str = "Flat",
        overwrite: bool = False,
    ) -> Collection:
        """Make ``directory`` an empty collection and return a writable handle holding the lock."""
        directory = Path(directory)
        spec = checks.clean_spec(encoder_spec)
        gens.check_target(directory, overwrite)
        directory.mkdir(parents=True, exist_ok=True)
        lock = WriterLock(directory, directory / mf.LOCK_NAME)
        lock.acquire()
        try:
            store = VectorStore(spec.get("dim"), index_key)  # builds the index: checks the key
            manifest = gens.first_manifest(directory, spec, index_key)
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
    @_guarded
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

    @_guarded
    def remove(self, ids: Iterable[int] | np.ndarray) -> int:
        """Stage removal of ``ids``; returns how many were present (unknown ids are ignored)."""
        self._require_writable("remove items")
        ids = checks.check_ids(ids)
        present = np.asarray(sorted(self._catalog.get_records(ids)), np.int64)
        if len(present):
            self._working_catalog().delete(present.tolist())
            self._store.remove(present)
        return len(present)

    @_guarded
    def commit(self) -> int:
        """Publish staged changes as a new generation; a no-op returning the current one if none."""
        self._require_writable("commit")
        if not self._store.dirty:
            self._discard_working_catalog()
            return self.generation
        if self._catalog.count() != self._store.count:
            raise CollectionError(
                f"internal error: catalog has {self._catalog.count()} rows but the index "
                f"{self._store.count}; nothing was committed, please report this"
            )
        generation = self.generation + 1
        files = self._store.write_generation(self._dir, generation)  # a failure here is harmless
        try:
            self._publish(generation, files)
        except BaseException:
            # The staged catalog is spent, so this handle cannot retry; the directory still holds
            # the previous generation (or the new one, if the manifest switch got through).
            log.error("commit of %s failed; closing the handle, reopen to continue", self._dir)
            self.close()
            raise
        try:
            gens.sweep(self._dir, self._manifest)
        except OSError as exc:  # leftovers are swept again by the next writer
            log.warning("could not delete old generation files in %s: %s", self._dir, exc)
        log.info("committed %s generation %d (%d items)", self._dir, generation, self.count)
        return generation

    def _publish(self, generation: int, files: GenerationFiles) -> None:
        """Publish the catalog, switch the manifest, adopt the new generation in this handle."""
        catalog_path = self._dir / mf.generation_file("catalog", generation)
        mf.publish(self._catalog.finish(), catalog_path)
        paths = {"index": files.index, "catalog": catalog_path}
        paths |= {"embeddings": files.embeddings, "ids": files.ids}
        manifest = gens.next_manifest(
            self._manifest,
            generation,
            paths,
            dim=self._store.dim,
            count=self._store.count,
            next_id=self._next_id,
        )
        mf.write_manifest(self._dir, manifest)  # the switch: from here on the new generation
        self._manifest = manifest
        self._catalog = Catalog.open_committed(catalog_path)
        self._store.switch_to(files)

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

    # ----------------------------------------------------------------- reading
    @_guarded
    def search(self, query_vectors: np.ndarray, k: int = 10) -> list[list[Hit]]:
        """Top-``k`` hits per query row by inner product (cosine), committed + staged rows."""
        k = checks.check_k(k)
        queries = checks.check_vectors(
            query_vectors, self._store.dim, what="query vectors", allow_1d=True
        )
        scores, ids = self._store.search(queries, k)
        records = self._catalog.get_records(ids[ids >= 0].tolist())
        return [
            [
                Hit(int(i), float(s), records[int(i)])
                for s, i in zip(row_scores, row_ids, strict=True)
                if int(i) in records
            ]
            for row_scores, row_ids in zip(scores, ids, strict=True)
        ]

    @_guarded
    def ids_for_paths(self, paths: Iterable[str | Path]) -> dict[str, int]:
        """Catalog ids of the given paths that are present (pipelines skip those)."""
        if isinstance(paths, str | Path):
            paths = [paths]
        return self._catalog.ids_for_paths(str(p) for p in paths)

    @_guarded
    def get_records(self, ids: Iterable[int] | np.ndarray) -> dict[int, Record]:
        """Records of the given ids that are present."""
        return self._catalog.get_records(checks.check_ids(ids).tolist())

    @_guarded
    def raw_embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        """(int64 ids, float16 rows) as stored; a read-only memmap when nothing is staged."""
        if self._store.dim is None:
            return np.zeros(0, np.int64), np.zeros((0, 0), np.float16)
        return self._store.raw_embeddings()

    @_guarded
    def info(self) -> CollectionInfo:
        """The committed state: generation, counts, encoder, timestamps, bytes on disk."""
        return gens.describe(self._dir, self._manifest)

    def check_encoder(self, encoder_spec: Mapping[str, Any]) -> None:
        """Raise EncoderMismatchError unless ``encoder_spec`` has the same model, revision, dim."""
        built_with = dict(self._manifest["encoder_spec"])
        if built_with.get("dim") is None:
            built_with["dim"] = self.dim
        checks.check_encoder(self._dir, built_with, encoder_spec)

    # ----------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Release the lock; staged changes that were not committed are discarded."""
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            if self._catalog.editable:
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

    @property
    def directory(self) -> Path:
        return self._dir

    @property
    def writable(self) -> bool:
        return self._lock is not None

    @property
    def encoder_spec(self) -> dict[str, Any]:
        return dict(self._manifest["encoder_spec"])

    @property
    def dim(self) -> int | None:
        return self._store.dim

    @property
    def count(self) -> int:
        """Items this handle sees: committed plus staged minus removed."""
        return self._store.count

    @property
    def generation(self) -> int:
        return int(self._manifest["generation"])

    @property
    def index_key(self) -> str:
        return str(self._manifest["index_key"])
