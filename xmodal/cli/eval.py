"""``xmodal eval``: zero-shot retrieval recall of a model, its projections, indexes and codes."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from xmodal.cli.arguments import model_args

_MANAGED = {"auto", "flat", "hnsw", "ivf-flat", "ivf-pq"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="measure text<->image retrieval recall@1/5/10 on a captioned image set",
        description="Recall as in the CLIP paper and CLIP_benchmark, for exact search, each "
        "projection, each index and each quantisation, in one table.",
    )
    p.add_argument(
        "dataset", help="captions.jsonl (or its folder), Karpathy split JSON, or CSV image,caption"
    )
    model_args(p)
    p.add_argument("--images", type=Path, help="folder the image paths are relative to")
    p.add_argument("--split", default="test", help="Karpathy split to use (default test; all)")
    p.add_argument("--format", choices=["jsonl", "karpathy", "csv"], help="default: by suffix")
    p.add_argument("--limit", type=int, help="use only the first N images (quick runs)")
    p.add_argument(
        "--projection",
        action="append",
        metavar="SPEC",
        help="pca:N or pca:F[:whiten]; comma-separated or repeated (e.g. pca:256,pca:128)",
    )
    p.add_argument(
        "--index",
        action="append",
        metavar="KEY",
        help="auto (default), flat, hnsw, ivf-flat, ivf-pq (comma-separated) or one FAISS "
        "factory string per --index",
    )
    p.add_argument("--memory-budget", metavar="SIZE", help="for index choice (default: half RAM)")
    p.add_argument(
        "--quantisation",
        "--quantization",
        action="append",
        metavar="LIST",
        help="fp16, int8, pq, pq:M, binary (comma-separated or repeated)",
    )
    p.add_argument(
        "--sparse",
        action="append",
        metavar="LIST",
        help="sparse:K rows: keep each stored vector's K largest-magnitude coordinates, "
        "renormalised; K*4 bytes (fp16 values + uint16 indices); comma-separated or repeated "
        "(e.g. sparse:16,sparse:64)",
    )
    p.add_argument(
        "--rescore",
        type=int,
        default=10,
        metavar="F",
        help="re-score F*k PQ/binary candidates in full precision (default 10; 0: off)",
    )
    p.add_argument("--cache-dir", type=Path, help="embedding cache (default ~/.cache/xmodal/eval)")
    p.add_argument("--workers", type=int, help="image decoding processes (default: by device)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--plot", type=Path, metavar="FILE", help="write a PNG (needs matplotlib)")
    p.set_defaults(run=cmd_eval)


def _listed(values: list[str] | None) -> tuple[str, ...]:
    return tuple(part.strip() for v in values or [] for part in v.split(",") if part.strip())


def _index_keys(values: list[str] | None) -> tuple[str, ...]:
    """Comma lists of managed keys are split; a FAISS factory string (with commas) is kept."""
    keys: list[str] = []
    for value in values or ["auto"]:
        parts = [p.strip() for p in value.split(",")]
        keys.extend(parts if all(p in _MANAGED for p in parts) else [value.strip()])
    return tuple(keys)


def cmd_eval(args: argparse.Namespace) -> int:
    from xmodal.encoders import load_encoder
    from xmodal.index.choice import parse_size
    from xmodal.pipelines.evaluation import EvalConfig, embed_dataset, evaluate, load_dataset
    from xmodal.pipelines.evaluation.report import summary, to_dict

    config = EvalConfig(
        projections=_listed(args.projection),
        indexes=_index_keys(args.index),
        quantisations=_listed(args.quantisation),
        sparsities=_listed(args.sparse),
        rescore=args.rescore,
        memory_budget=parse_size(args.memory_budget) if args.memory_budget else None,
    )
    dataset = load_dataset(args.dataset, images_dir=args.images, split=args.split, fmt=args.format)
    dataset = dataset.limited(args.limit)
    repeats = dataset.caption_repeats()
    if repeats is not None:
        print(
            f"xmodal: warning: captions repeat: {repeats[0]} distinct out of {repeats[1]} "
            "captions (the same text under different images); ties count against the query",
            file=sys.stderr,
        )
    encoder = load_encoder(args.model, device=args.device, precision=args.precision)
    embedded = embed_dataset(dataset, encoder, cache_dir=args.cache_dir, workers=args.workers)
    report = evaluate(embedded, config)
    if args.plot:
        from xmodal.pipelines.evaluation.plot import write_plot

        write_plot(report, args.plot)
    if args.json:
        print(json.dumps(to_dict(report), indent=2))
    else:
        print(summary(report))
        if args.plot:
            print(f"plot written to {args.plot}")
    return 0
