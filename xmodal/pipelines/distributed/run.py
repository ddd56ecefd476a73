"""``index_with_ray``: the distributed counterpart of ``index_paths``.

1. The driver walks the sources (the same ``iter_inputs`` as the single-machine path) and cuts the
   items into shards of ``shard_size`` in source order.
2. Shards without a matching done marker are computed on the cluster (``embed_job``) and committed
   one by one under ``COLLECTION/shards/``; inputs the collection already holds unchanged are
   not decoded.
3. The driver adds the shards' rows to the collection in source order (``from_shards``); when the
   collection's index is IVF, it is filled in parallel parts and merged (``build``).
4. After the last commit the shards are deleted. A run killed before that resumes from them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from xmodal.encoders import Encoder
from xmodal.errors import XmodalError
from xmodal.index import Collection
from xmodal.pipelines.accounting import IndexReport, RunBook, fails_again
from xmodal.pipelines.distributed.build import ray_index_builder
from xmodal.pipelines.distributed.embed_job import EmbedJob, PendingShard, run_embedding
from xmodal.pipelines.distributed.from_shards import fill_from_shards
from xmodal.pipelines.distributed.ray_runtime import connected, quiet_data_context
from xmodal.pipelines.distributed.shards import ShardPlan, ShardStore, plan_shards
from xmodal.pipelines.maintenance import prune_missing
from xmodal.pipelines.sources import Item, SourcePolicy, iter_inputs

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
    if config.shard_size < 1 or config.actors < 1 or config.batch_size < 1:
        raise XmodalError("--ray-actors, --ray-batch-size and the shard size must be at least 1")
    sources = [str(source) for source in sources]
    book = RunBook.start(collection, sources, config.commit_every)
    with book.times.stage("walk"):
        inputs = list(iter_inputs(sources, config.policy))
    salt = json.dumps(encoder.spec.identity(), sort_keys=True)
    plans = list(plan_shards((i for i in inputs if isinstance(i, Item)), config.shard_size, salt))
    store = ShardStore(collection.directory)
    store.prepare()
    pending = [
        PendingShard(p, _no_work(collection, p, config.retry_failed))
        for p in plans
        if not store.is_done(p)
    ]
    stats = RayRunStats(len(plans), len(pending), len(plans) - len(pending))
    log.info("%d shards: %d to compute, %d done before", stats.shards, stats.computed, stats.reused)
    with connected(config.address) as ray:
        quiet_data_context(ray)
        with book.times.stage("encode"):  # the whole cluster stage: decode and embed
            job = _job(encoder, config)
            run_embedding(ray, pending, job, encoder.preparer, store, config.on_shard)
        collection.use_index_builder(ray_index_builder(ray, config.index_parts))
        try:
            fill_from_shards(encoder, book, inputs, plans, store, config.retry_failed)
            book.finish(prune_missing(collection, sources) if config.prune else 0)
        finally:
            collection.use_index_builder(None)
    store.clear()
    return book.report(), stats


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


def _no_work(collection: Collection, plan: ShardPlan, retry: bool) -> tuple[bool, ...]:
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
