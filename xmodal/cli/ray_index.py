"""``xmodal index --ray [ADDRESS]``: the options of the distributed path and the call into it."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from xmodal.cli.arguments import source_policy

if TYPE_CHECKING:
    from xmodal.encoders import Encoder
    from xmodal.index import Collection
    from xmodal.pipelines.accounting import IndexReport

LOCAL = "local"


def add_ray_args(p: argparse.ArgumentParser) -> None:
    """The Ray options of ``xmodal index``."""
    p.add_argument(
        "--ray",
        nargs="?",
        const=LOCAL,
        metavar="ADDRESS",
        help="embed on a Ray cluster: no ADDRESS starts one on this machine; 'auto' joins the "
        "cluster started here with 'ray start'; or ray://HEAD:10001 (needs xmodal[ray])",
    )
    p.add_argument(
        "--ray-actors",
        type=int,
        default=1,
        metavar="N",
        help="embedding actors, each holding one model (default 1; one per GPU on GPU nodes)",
    )
    p.add_argument(
        "--ray-gpus",
        type=float,
        default=0.0,
        metavar="G",
        help="GPUs per embedding actor (default 0: actors run on CPUs)",
    )
    p.add_argument(
        "--ray-batch-size",
        type=int,
        metavar="N",
        help="rows per decode task and per model call on Ray (default: --batch-size)",
    )
    p.add_argument(
        "--ray-shard-size",
        type=int,
        default=1024,
        metavar="N",
        help="inputs per embedding shard, the unit a re-run skips (default 1024)",
    )


def index_on_ray(args: argparse.Namespace, encoder: Encoder, collection: Collection) -> IndexReport:
    """Run ``index_with_ray`` with the command's options; prints the shard counts."""
    from xmodal.pipelines.distributed import RayIndexConfig, index_with_ray

    config = RayIndexConfig(
        address=None if args.ray == LOCAL else args.ray,
        actors=args.ray_actors,
        gpus_per_actor=args.ray_gpus,
        batch_size=args.ray_batch_size or args.batch_size,
        shard_size=args.ray_shard_size,
        commit_every=args.commit_every,
        device=args.device,
        precision=args.precision,
        prune=args.prune,
        retry_failed=args.retry_failed,
        policy=source_policy(args),
    )
    report, stats = index_with_ray(encoder, collection, args.sources, config)
    if not args.json:
        print(f"shards: {stats.shards} ({stats.computed} computed, {stats.reused} from before)")
    return report
