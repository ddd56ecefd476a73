"""The reading half of a collection handle: search, lookups, info and properties.

Kept apart from the writing half in ``collection.py``; both work on the same handle state
(``_store``, ``_catalog``, ``_manifest``, ``_dir``, ``_lock``, ``_mutex``, ``_closed``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from xmodal.errors import CollectionError
from xmodal.index import checks
from xmodal.index import generations as gens
from xmodal.index.filters import Filter, as_filter
from xmodal.index.generations import CollectionInfo
from xmodal.index.ledger import LedgerEntry, RunRecord
from xmodal.index.records import Hit, Record
from xmodal.index.subset import search_all, search_subset
from xmodal.index.tagstore import Tag

if TYPE_CHECKING:
    import threading

    from xmodal.index.catalog import Catalog
    from xmodal.index.lock import WriterLock
    from xmodal.index.manifest import Manifest
    from xmodal.index.vectors import VectorStore

_F = TypeVar("_F", bound=Callable[..., Any])


def guarded(method: _F) -> _F:
    """Serialise calls on one handle (the app shares handles between threads)."""

    @functools.wraps(method)
    def wrapper(self: CollectionReader, *args: Any, **kwargs: Any) -> Any:
        with self._mutex:
            if self._closed:
                raise CollectionError(f"collection {self._dir} is closed; open it again")
            return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


class CollectionReader:
    """Read access shared by read-only and writable handles."""

    _dir: Path
    _manifest: Manifest
    _store: VectorStore
    _catalog: Catalog
    _lock: WriterLock | None
    _mutex: threading.RLock
    _closed: bool

    @guarded
    def search(
        self,
        query_vectors: np.ndarray,
        k: int = 10,
        where: Filter | str | Sequence[str] | None = None,
        *,
        min_score: float | None = None,
    ) -> list[list[Hit]]:
        """Top-``k`` hits per query row by inner product (cosine), committed + staged rows.

        The k best items come back whenever k exist, with or without ``where`` (a filter, see
        ``xmodal.index.filters``, keeps only the items matching it). Hits scoring below
        ``min_score`` are dropped.
        """
        k = checks.check_k(k)
        queries = checks.check_vectors(
            query_vectors, self._store.dim, what="query vectors", allow_1d=True
        )
        where = as_filter(where)
        if where is None:
            scores, ids = search_all(self._store, queries, k)
        else:
            scores, ids = search_subset(self._store, queries, self._catalog.ids_where(where), k)
        records = self._catalog.get_records(ids[ids >= 0].tolist())
        tags = self._catalog.tags_for(records)
        floor = -np.inf if min_score is None else float(min_score)
        return [
            [
                Hit(int(i), float(s), records[int(i)], tags.get(int(i), ()))
                for s, i in zip(row_scores, row_ids, strict=True)
                if int(i) in records and s >= floor
            ]
            for row_scores, row_ids in zip(scores, ids, strict=True)
        ]

    @guarded
    def keyword_search(
        self, text: str, k: int = 10, where: Filter | str | Sequence[str] | None = None
    ) -> list[Hit]:
        """The ``k`` best items whose caption or file name matches ``text``; score is -BM25.

        Query syntax and tokenisation: ``xmodal.index.keywords``. Staged rows are searched too.
        """
        k = checks.check_k(k)
        found = self._catalog.keyword_search(text, k, as_filter(where))
        records = self._catalog.get_records(i for i, _ in found)
        tags = self._catalog.tags_for(records)
        return [Hit(i, s, records[i], tags.get(i, ())) for i, s in found if i in records]

    @guarded
    def has_captions(self) -> bool:
        """True when some item has a caption (keyword search then looks beyond file names)."""
        return self._catalog.has_captions()

    @guarded
    def tags_for(self, ids: Iterable[int] | np.ndarray) -> dict[int, tuple[Tag, ...]]:
        """Zero-shot tags of the given ids, most probable first; untagged ids are left out."""
        return self._catalog.tags_for(checks.check_ids(ids).tolist())

    @guarded
    def untagged_ids(self) -> list[int]:
        """Ids not yet classified with the current tag settings (all, if never tagged)."""
        return self._catalog.untagged_ids()

    @guarded
    def tag_settings(self) -> str | None:
        """Fingerprint of the settings the stored tags were made with; None if never tagged."""
        return self._catalog.tag_settings()

    @guarded
    def ids_for_paths(self, paths: Iterable[str | Path]) -> dict[str, int]:
        """Catalog ids of the given paths that are present (pipelines skip those)."""
        if isinstance(paths, str | Path):
            paths = [paths]
        return self._catalog.ids_for_paths(str(p) for p in paths)

    @guarded
    def ids_where(self, where: Filter | str | Sequence[str]) -> np.ndarray:
        """Sorted int64 ids of the items (committed + staged) matching ``where``."""
        return self._catalog.ids_where(as_filter(where) or Filter())

    @guarded
    def ids_for_hashes(self, hashes: Iterable[str]) -> dict[str, list[int]]:
        """Ids of items per content hash (catalogs written before hashes existed give none)."""
        return self._catalog.ids_for_hashes(hashes)

    @guarded
    def hash_groups(self, where: Filter | str | Sequence[str] | None = None) -> list[list[int]]:
        """Ids of the items (matching ``where``) that share a content hash: one list per hash."""
        return self._catalog.hash_groups(as_filter(where) or Filter())

    @guarded
    def get_records(self, ids: Iterable[int] | np.ndarray) -> dict[int, Record]:
        """Records of the given ids that are present."""
        return self._catalog.get_records(checks.check_ids(ids).tolist())

    @guarded
    def raw_embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        """(int64 ids, float16 rows) as stored; a read-only memmap when nothing is staged."""
        return self._store.raw_embeddings()

    @guarded
    def ledger(self, status: str | None = None, run: int | None = None) -> list[LedgerEntry]:
        """What batch runs made of each input, by uri: optionally one status and/or run id.

        ``status`` is indexed, unchanged, failed or skipped; every entry carries the id of the
        run that last saw its input (see ``runs``).
        """
        return self._catalog.ledger(status, run)

    @guarded
    def ledger_for(self, uris: Iterable[str]) -> dict[str, LedgerEntry]:
        """Ledger entries of the given uris that have one."""
        return self._catalog.ledger_for(uris)

    @guarded
    def ledger_counts(self, run: int) -> dict[str, int]:
        """Inputs per status that run ``run`` was the last to see."""
        return self._catalog.ledger_counts(run)

    @guarded
    def runs(self) -> list[RunRecord]:
        """Every batch run recorded in this collection, oldest first."""
        return self._catalog.runs()

    @guarded
    def last_run(self) -> RunRecord | None:
        """The newest batch run (finished or interrupted), or None."""
        found = self._catalog.runs(last=True)
        return found[0] if found else None

    @guarded
    def info(self) -> CollectionInfo:
        """The committed state: generation, counts, encoder, timestamps, bytes on disk."""
        return gens.describe(self._dir, self._manifest)

    def check_encoder(self, encoder_spec: Mapping[str, Any]) -> None:
        """Raise EncoderMismatchError unless ``encoder_spec`` has the same model, revision, dim."""
        built_with = dict(self._manifest.encoder_spec)
        if built_with.get("dim") is None:
            built_with["dim"] = self.dim
        checks.check_encoder(self._dir, built_with, encoder_spec)

    @property
    def directory(self) -> Path:
        return self._dir

    @property
    def writable(self) -> bool:
        return self._lock is not None

    @property
    def encoder_spec(self) -> dict[str, Any]:
        return dict(self._manifest.encoder_spec)

    @property
    def dim(self) -> int | None:
        return self._store.dim

    @property
    def count(self) -> int:
        """Items this handle sees: committed plus staged minus removed."""
        return self._store.count

    @property
    def generation(self) -> int:
        return self._manifest.generation

    @property
    def index_key(self) -> str:
        return self._manifest.index_key
