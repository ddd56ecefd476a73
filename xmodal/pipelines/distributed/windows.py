"""Windows: the driver walks, embeds and replays a run a bounded number of shards at a time.

The walk is consumed lazily and cut into windows of ``shards_per_window`` shards (plus the skipped
inputs between their items). Each window is embedded on the cluster, replayed into the collection
(``from_shards``: one commit per chunk, so each chunk becomes a small segment that the tiered
merge policy folds in later), and its shard files are deleted before the next window is walked.
The driver therefore holds one window's inputs and at most one chunk's rows, whatever the size of
the run; the collection's own memory (segment ids, memory-mapped rows) is the only part that
grows with it.

A window's shards may be deleted once it is replayed: a run killed later re-walks the window,
finds its inputs catalogued (or recorded failed) and recomputes its shards without decoding.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from xmodal.encoders import Encoder
from xmodal.index import Collection
from xmodal.pipelines.accounting import RunBook, fails_again
from xmodal.pipelines.distributed.embed_job import PendingShard
from xmodal.pipelines.distributed.from_shards import fill_from_shards
from xmodal.pipelines.distributed.shards import ShardPlan, ShardStore, plan_shards
from xmodal.pipelines.sources import Item, Skipped

log = logging.getLogger(__name__)

# Computes and commits the given shards (on Ray in a real run).
Embed = Callable[[Sequence[PendingShard]], None]


@dataclass(frozen=True)
class Window:
    """Consecutive inputs of the run and the shards cut from their items."""

    inputs: tuple[Item | Skipped, ...]
    plans: tuple[ShardPlan, ...]


@dataclass(frozen=True)
class WindowTotals:
    """Shard counts over all windows of a run."""

    shards: int = 0
    computed: int = 0
    reused: int = 0


def cut_windows(
    inputs: Iterable[Item | Skipped], shard_size: int, shards_per_window: int, salt: str
) -> Iterator[Window]:
    """Windows of ``shards_per_window`` shards of ``shard_size`` items, in source order.

    Shard numbers run on across windows, so a shard's name depends only on its position in the
    run (what resuming needs), not on the window size.
    """
    if shard_size < 1 or shards_per_window < 1:
        raise ValueError("shard size and shards per window must be at least 1")
    per_window = shard_size * shards_per_window
    buffer: list[Item | Skipped] = []
    items, first = 0, 0
    for entry in inputs:
        buffer.append(entry)
        items += isinstance(entry, Item)
        if items == per_window:
            yield _window(buffer, shard_size, salt, first)
            buffer, items, first = [], 0, first + shards_per_window
    if buffer:
        yield _window(buffer, shard_size, salt, first)


def _window(buffer: list[Item | Skipped], size: int, salt: str, first: int) -> Window:
    items = (entry for entry in buffer if isinstance(entry, Item))
    return Window(tuple(buffer), tuple(plan_shards(items, size, salt, start=first)))


def run_windows(
    encoder: Encoder,
    book: RunBook,
    windows: Iterable[Window],
    store: ShardStore,
    embed: Embed,
    retry_failed: bool = False,
) -> WindowTotals:
    """Embed and replay every window in turn; returns the shard counts."""
    shards = computed = 0
    for window in windows:
        pending = [
            PendingShard(plan, no_work(book.collection, plan, retry_failed))
            for plan in window.plans
            if not store.is_done(plan)
        ]
        shards, computed = shards + len(window.plans), computed + len(pending)
        log.info("window of %d shards: %d to compute", len(window.plans), len(pending))
        embed(pending)
        fill_from_shards(encoder, book, window.inputs, window.plans, store, retry_failed)
        store.drop(window.plans)
    return WindowTotals(shards, computed, shards - computed)


def no_work(collection: Collection, plan: ShardPlan, retry: bool) -> tuple[bool, ...]:
    """Inputs the run will not decode: catalogued unchanged, or failed before with these bytes."""
    uris = [item.uri for item in plan.items]
    known = collection.ids_for_paths(uris)
    records = collection.get_records(list(known.values())) if known else {}
    ledger = collection.ledger_for(uris)
    flags = []
    for item in plan.items:
        record = records.get(known.get(item.uri, -1))
        same = record is not None and (record.size, record.mtime) == (item.size, item.mtime)
        flags.append(same or (not retry and fails_again(ledger.get(item.uri), item)))
    return tuple(flags)
