"""What each ``xmodal`` command does; output goes to stdout, errors propagate to ``main``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from xmodal.cli.arguments import DEFAULT_MODEL, source_policy

if TYPE_CHECKING:  # heavy imports happen inside the commands, after argument parsing
    from xmodal.encoders import Encoder
    from xmodal.index.generations import CollectionInfo
    from xmodal.index.ledger import RunRecord
    from xmodal.pipelines.indexing import IndexReport
    from xmodal.pipelines.opening import IndexRequest
    from xmodal.pipelines.search import Retriever


def _open_encoder(args: argparse.Namespace, spec: dict | None) -> Encoder:
    from xmodal.encoders import load_encoder
    from xmodal.encoders.loading import check_recorded_source

    if not args.model:
        check_recorded_source((spec or {}).get("source"))
    model = args.model or (spec or {}).get("source") or DEFAULT_MODEL
    return load_encoder(model, device=args.device, precision=args.precision)


def cmd_index(args: argparse.Namespace) -> int:
    from xmodal.index import Collection
    from xmodal.pipelines.indexing import IndexConfig, index_paths
    from xmodal.pipelines.opening import exists, open_for_writing
    from xmodal.pipelines.sources import check_sources

    policy = source_policy(args)
    check_sources(args.sources, policy)  # a missing source fails before a collection is made
    spec = None
    if exists(args.collection):
        with Collection.open(args.collection) as current:
            spec = current.encoder_spec
    encoder = _open_encoder(args, spec)
    collection = open_for_writing(args.collection, encoder.spec.to_dict(), index_request(args))
    config = IndexConfig(
        batch_size=args.batch_size,
        workers=args.workers,
        decode_timeout=args.decode_timeout or IndexConfig.decode_timeout,
        commit_every=args.commit_every,
        prune=args.prune,
        retry_failed=args.retry_failed,
        sources=policy,
    )
    with collection:
        if args.ray is not None:
            from xmodal.cli.ray_index import index_on_ray

            report = index_on_ray(args, encoder, collection)
        else:
            report = index_paths(encoder, collection, args.sources, config)  # ends with a commit
    _print_report(report, args.json)
    return 0


def _print_report(report: IndexReport, as_json: bool) -> None:
    if as_json:
        failures = [dataclasses.asdict(f) for f in report.failures]
        print(json.dumps({**_report_dict(report), "failures": failures}, indent=2))
        return
    for failure in report.failures:
        print(f"failed: {failure.message}", file=sys.stderr)
    if report.resumed:
        print(f"resumed interrupted run {report.run}")
    print(report.stages_line())
    print(report.summary())


def cmd_reindex(args: argparse.Namespace) -> int:
    """Rebuild the index from the stored raw embeddings: no model, no image is read."""
    from xmodal.index import Collection
    from xmodal.index.choice import parse_size

    budget = parse_size(args.memory_budget) if args.memory_budget else None
    with Collection.open(args.collection, writable=True) as collection:
        info = collection.info()
        collection.set_index(
            args.index or info.index_key,
            budget if budget is not None else info.memory_budget,
            projection=args.projection,
        )
        collection.commit()
    return cmd_info(args)


def index_request(args: argparse.Namespace) -> IndexRequest:
    """--index, --memory-budget and --projection as a request for ``open_for_writing``."""
    from xmodal.index.choice import parse_size
    from xmodal.pipelines.opening import IndexRequest

    budget = parse_size(args.memory_budget) if args.memory_budget else None
    return IndexRequest(args.index, budget, args.projection)


def _report_dict(report: IndexReport) -> dict:
    keys = ("seen", "indexed", "unchanged", "failed", "skipped", "seconds", "images_per_s")
    extra = ("skipped_reasons", "reused", "pruned", "run", "resumed", "stages")
    return {key: getattr(report, key) for key in keys + extra}


def _retriever(args: argparse.Namespace) -> Retriever:
    """A retriever over ``args.collection``; ``serve --refresh-seconds`` follows new commits."""
    from xmodal.index import Collection
    from xmodal.pipelines.following import CollectionFollower
    from xmodal.pipelines.search import Retriever

    collection = Collection.open(args.collection)
    encoder = _open_encoder(args, collection.encoder_spec)
    refresh = getattr(args, "refresh_seconds", 0.0)  # only serve has it
    return Retriever(encoder, CollectionFollower(collection, refresh=refresh))


def cmd_search(args: argparse.Namespace) -> int:
    from xmodal.index.pathtext import display_path

    retriever = _retriever(args)
    result = retriever.search_result(
        args.text,
        args.image,
        negative=args.negative,
        image_weight=args.image_weight,
        k=args.k,
        threshold=args.threshold,
        where=args.where,
        mode=args.mode,
        keyword_weight=args.keyword_weight,
    )
    hits = result.hits
    if args.json:
        rows = [
            {
                "id": h.id,
                "score": round(h.score, 6),
                "path": display_path(h.record.path),
                "caption": h.record.caption,
                "tags": [{"label": t.label, "prob": round(t.prob, 6)} for t in h.tags],
            }
            for h in hits
        ]
        out = {"results": rows, "message": result.reason}
        print(json.dumps(out, indent=2, ensure_ascii=False))
        return 0
    if not hits:
        print(result.reason or "no results")
    for rank, hit in enumerate(hits, 1):
        caption = f"  {hit.record.caption}" if hit.record.caption else ""
        tags = "  [" + ", ".join(t.label for t in hit.tags) + "]" if hit.tags else ""
        print(f"{rank:3d}  {hit.score:.4f}  {display_path(hit.record.path)}{caption}{tags}")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    from xmodal.index import Collection
    from xmodal.pipelines.maintenance import remove_paths

    with Collection.open(args.collection, writable=True) as collection:
        removed = remove_paths(collection, args.paths)
        collection.commit()
    print(f"removed {removed} item{'' if removed == 1 else 's'}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import os

    from xmodal.app import AppConfig, serve
    from xmodal.errors import XmodalError

    token = args.auth_token or os.environ.get("XMODAL_AUTH_TOKEN") or None
    try:
        config = AppConfig(
            max_upload_bytes=max(1, round(args.max_upload_mb * 2**20)),
            auth_token=token,
            cors_origins=tuple(args.cors_origin or ()),
        )
    except ValueError as exc:
        raise XmodalError(f"serve: {exc}") from None
    retriever = _retriever(args)
    url = f"http://{args.host}:{args.port}/"
    access = f"; open {url}?token=YOUR_TOKEN once in a browser" if token else ""
    print(f"serving the search UI and API on {url} (API docs at {url}docs{access}; Ctrl-C stops)")
    name = args.collection.resolve().name or "xmodal"
    return _serving(
        serve, retriever, host=args.host, port=args.port, config=config, index_name=name
    )


def _serving(serve: Callable[..., None], retriever: Retriever, **options: object) -> int:
    """Serve until Ctrl-C, which is how a server is stopped: say so, not "interrupted"."""
    try:
        serve(retriever, **options)
    except KeyboardInterrupt:
        print("xmodal: server stopped", file=sys.stderr)
        return 130
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from xmodal.index import Collection

    with Collection.open(args.collection) as collection:
        info = collection.info()
        last = collection.last_run()
    if args.json:
        data = dataclasses.asdict(info)
        data["last_run"] = dataclasses.asdict(last) if last is not None else None
        print(json.dumps(data, indent=2, default=str))
        return 0
    spec = info.encoder_spec
    print(f"collection  {info.directory}")
    revision = str(spec.get("revision"))[:12]
    print(f"model       {spec.get('model_id')} @ {revision} (dim {spec.get('dim')})")
    print(f"items       {info.count}")
    print(f"index       {info.index_key}")
    if info.index_factory and info.index_factory != info.index_key:
        print(f"factory     {info.index_factory}")
    if info.search_params:
        params = ", ".join(f"{k}={v}" for k, v in info.search_params.items())
        print(f"search      {params}")
    if info.recall_at_10 is not None:
        sample = info.tuning_sample_size or 0
        how = f"measured on {sample} sample queries" if sample else "exact search"
        print(f"recall@10   {info.recall_at_10:.3f} ({how})")
    if info.projection != "none":
        print(f"projection  {_projection_line(info)}")
    if info.index_bytes is not None:
        print(f"index size  {info.index_bytes} bytes")
    print(f"segments    {_segments_line(info)}")
    print(f"generation  {info.generation}")
    if last is not None:
        print(f"last run    {_run_line(last)}")
    return 0


def cmd_compact(args: argparse.Namespace) -> int:
    from xmodal.index import Collection

    with Collection.open(args.collection, writable=True) as collection:
        before = collection.generation
        generation = collection.compact(full=args.full)
        info = collection.info()
    done = "compacted" if generation != before else "nothing to compact"
    print(f"{done}: segments {_segments_line(info)}, generation {generation}")
    return 0


def _segments_line(info: CollectionInfo) -> str:
    """E.g. '3 (120000 + 20480 + 2048 rows; 17 deleted rows awaiting a merge)'."""
    sizes = " + ".join(str(size) for size in info.segment_sizes[:8])
    if len(info.segment_sizes) > 8:
        sizes += f" + ... ({len(info.segment_sizes) - 8} more)"
    text = f"{info.segments}" + (f" ({sizes} rows" if sizes else "")
    if info.deleted_rows:
        text += f"; {info.deleted_rows} deleted rows awaiting a merge"
    return text + (")" if sizes else "")


def _run_line(run: RunRecord) -> str:
    """E.g. '3, finished 2026-11-26T17:20: seen 300 = indexed 290 + unchanged 0 + ...'."""
    from xmodal.index.ledger import STATUSES

    c = run.counts
    state = f"finished {run.ended}" if run.finished else "interrupted (re-run to resume)"
    counts = " + ".join(f"{key} {c.get(key, 0)}" for key in STATUSES)
    return f"{run.id}, {state}: seen {c.get('seen', 0)} = {counts}"


def _projection_line(info: CollectionInfo) -> str:
    """E.g. 'pca:128 (512 -> 128 dims, 91.2% of variance, recall@10 0.934 on 1000 queries)'."""
    if info.projection_out_dim is None:
        return f"{info.projection} (not fitted yet: commit items first)"
    parts = [f"{info.projection_in_dim} -> {info.projection_out_dim} dims"]
    parts.append(f"{100 * (info.projection_explained_variance or 0.0):.1f}% of variance")
    if info.projection_whiten:
        parts.append("whitened")
    if info.projection_recall_at_10 is not None:
        recall, sample = info.projection_recall_at_10, info.projection_sample_queries
        parts.append(f"recall@10 {recall:.3f} vs full dim on {sample} queries")
    return f"{info.projection} ({', '.join(parts)})"


def cmd_demo(args: argparse.Namespace) -> int:
    from xmodal.demo.run import DemoOptions, build_demo, model_line

    print(model_line(), flush=True)
    result, retriever = build_demo(DemoOptions(directory=args.dir))
    print(f"model       {result.model_dir}")
    print(f"world       {result.world_dir} (held-out images the model never saw)")
    print(f"collection  {result.collection_dir}")
    print(f"indexing    {result.report.summary()}")
    print(
        f"quality     text-to-image precision@{result.k} = {result.precision_at_k:.3f} "
        f"over {result.n_queries} held-out queries such as 'a green square'"
    )
    for hit in retriever.search("a green square", k=3):
        print(f"            {hit.score:.3f}  {hit.record.caption}  ({Path(hit.record.path).name})")
    if args.no_serve:
        return 0
    from xmodal.app import serve

    print(f"serving the search UI on http://{args.host}:{args.port} (Ctrl-C to stop)")
    return _serving(serve, retriever, host=args.host, port=args.port)
