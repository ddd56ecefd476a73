"""``index_with_ray``: the distributed counterpart of ``index_paths``.

1. The driver walks the sources lazily (the same ``iter_inputs`` as the single-machine path) and
   cuts the items into shards of ``shard_size`` in source order, ``window_shards`` shards at a
   time (``windows``): one window's inputs are in the driver's memory at once, not the run's.
2. A window's shards without a matching done marker are computed on the cluster (``embed_job``)
   and committed one by one under ``COLLECTION/shards/``; inputs the collection already holds
   unchanged are not decoded.
3. The driver adds the window's rows to the collection in source order (``from_shards``), one
   commit (one new segment) per chunk, then deletes the window's shards. When a segment's index
   is IVF it is filled in parallel parts and merged (``build``).
4. A run killed at any point resumes: finished shards are reused, committed inputs passed over.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from xmodal.encoders import Encoder
from xmodal.errors import XmodalError
from xmodal.index import Collection
from xmodal.pipelines.accounting import IndexReport, RunBook
from xmodal.pipelines.distributed.build import ray_index_builder
from xmodal.pipelines.distributed.embed_job import EmbedJob, PendingShard, run_embedding
from xmodal.pipelines.distributed.ray_runtime import connected, quiet_data_context
from xmodal.pipelines.distributed.shards import ShardPlan, ShardStore
from xmodal.pipelines.distributed.windows import cut_windows, run_windows
from xmodal.pipelines.maintenance import prune_missing
from xmodal.pipelines.sources import Item, Skipped, SourcePolicy, check_sources, iter_inputs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RayIndexConfig:
    """How a distributed run is laid out; the defaults suit a local cluster on one machine."""

    address: str | None = None  # None: start a local cluster; "auto" or "host:port": join one
    actors: int = 1  # embedding actors, each holding one encoder
    gpus_per_actor: float = 0.0
    cpus_per_actor: float = 1.0
    batch_size: int = 32
    shard_size: int = 1024
    commit_every: int = 2048
    # What each actor passes to load_encoder; None: the default where the actor runs
    # ($XMODAL_DEVICE / $XMODAL_PRECISION, else auto on the actor's hardware).
    device: str | None = None
    precision: str | None = None
    index_parts: int = 8  # Ray tasks that fill an IVF index
    # Shards walked, embedded and replayed together: bounds the driver's memory (one window's
    # inputs) while keeping the cluster busy; each window starts its own actor pool.
    window_shards: int = 64
    prune: bool = False
    retry_failed: bool = False  # decode inputs that failed before even if they did not change
    policy: SourcePolicy = field(default_factory=SourcePolicy)
    on_shard: Callable[[ShardPlan], None] | None = None  # after each shard is committed


@dataclass(frozen=True)
class RayRunStats:
    """Shard counts of one run, besides the usual IndexReport."""

    shards: int
    computed: int
    reused: int


def index_with_ray(
    encoder: Encoder,
    collection: Collection,
    sources: Iterable[str],
    config: RayIndexConfig = RayIndexConfig(),
) -> tuple[IndexReport, RayRunStats]:
    """Embed every image under ``sources`` into ``collection`` (opened writable) on Ray."""
    collection.check_encoder(encoder.spec.to_dict())
    if min(config.shard_size, config.actors, config.batch_size, config.window_shards) < 1:
        raise XmodalError(
            "--ray-actors, --ray-batch-size, the shard size and the window must be at least 1"
        )
    sources = [str(source) for source in sources]
    check_sources(sources, config.policy)  # a typo fails before Ray starts
    book = RunBook.start(collection, sources, config.commit_every)
    salt = shard_salt(encoder, config)
    store = ShardStore(collection.directory)
    store.prepare()
    with connected(config.address) as ray:
        quiet_data_context(ray)
        job = _job(encoder, config)

        def embed(pending: Sequence[PendingShard]) -> None:
            with book.times.stage("encode"):  # the whole cluster stage: decode and embed
                run_embedding(ray, pending, job, encoder.preparer, store, config.on_shard)

        inputs = _timed(book, iter_inputs(sources, config.policy))
        windows = cut_windows(inputs, config.shard_size, config.window_shards, salt)
        builder = ray_index_builder(ray, config.index_parts, lists_dir=collection.directory)
        collection.use_index_builder(builder)
        try:
            totals = run_windows(encoder, book, windows, store, embed, config.retry_failed)
            book.finish(prune_missing(collection, sources) if config.prune else 0)
        finally:
            collection.use_index_builder(None)
    store.clear()
    stats = RayRunStats(totals.shards, totals.computed, totals.reused)
    log.info("%d shards: %d computed, %d done before", stats.shards, stats.computed, stats.reused)
    return book.report(), stats


def _timed(book: RunBook, inputs: Iterator[Item | Skipped]) -> Iterator[Item | Skipped]:
    """The walk, lazily, with its time booked under "walk"."""
    while True:
        with book.times.stage("walk"):
            entry = next(inputs, None)
        if entry is None:
            return
        yield entry


def shard_salt(encoder: Encoder, config: RayIndexConfig) -> str:
    """What every shard fingerprint includes besides its inputs: the model's identity and the
    precision the actors run at, so that a re-run at another precision does not reuse shards
    embedded at this one (bf16 and fp32 vectors differ by up to ~0.004)."""
    return json.dumps([encoder.spec.identity(), config.precision], sort_keys=True)


def _job(encoder: Encoder, config: RayIndexConfig) -> EmbedJob:
    return EmbedJob(
        model=encoder.spec.source or encoder.spec.model_id,
        device=config.device,
        precision=config.precision,
        actors=config.actors,
        gpus_per_actor=config.gpus_per_actor,
        cpus_per_actor=config.cpus_per_actor,
        batch_size=config.batch_size,
    )
