"""``xmodal embed``: image and/or text features written to a folder, for training elsewhere."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from xmodal.cli.arguments import (
    decode_args,
    model_args,
    representation_arg,
    source_args,
    source_policy,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "embed", help="write image/text embeddings (or inner features) as .npy or parquet"
    )
    p.add_argument("sources", nargs="*", help="image files, folders, @lists, tar shards, tables")
    p.add_argument("-o", "--out", required=True, type=Path, help="output folder")
    model_args(p)

    source_args(p)
    p.add_argument(
        "--modality", default="image", choices=["image", "text", "both"], help="default image"
    )
    representation_arg(p)
    p.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    p.add_argument("--format", default="npy", choices=["npy", "parquet"], help="default npy")
    p.add_argument(
        "--pca",
        metavar="N",
        help="reduce to N dims (or a share of variance, e.g. 0.95; ':whiten' to whiten) with a "
        "PCA fitted on the produced rows; its parameters are saved as *_pca.npz",
    )
    p.add_argument(
        "--texts", metavar="FILE", help="texts to embed: one per line, or a csv/jsonl/parquet"
    )
    p.add_argument("--text-column", help="the texts file's column (default text/caption/...)")
    decode_args(p)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(run=cmd_embed)


def cmd_embed(args: argparse.Namespace) -> int:
    from xmodal.encoders import load_encoder
    from xmodal.encoders.representation import parse_representation
    from xmodal.pipelines.features.embed import EmbedConfig, check_config, embed_to_dir

    config = EmbedConfig(
        modality=args.modality,
        representation=str(parse_representation(args.representation)),
        dtype=args.dtype,
        format=args.format,
        pca=args.pca,
        texts_file=args.texts,
        text_column=args.text_column,
        batch_size=args.batch_size,
        workers=args.workers,
        decode_timeout=args.decode_timeout or EmbedConfig.decode_timeout,
        policy=source_policy(args),
    )
    check_config(config)  # before the model loads: argument mistakes fail fast
    encoder = load_encoder(args.model, device=args.device, precision=args.precision)
    report = embed_to_dir(encoder, args.sources, args.out, config)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    for dropped in report.first_failures:
        if dropped.status == "failed":
            print(f"failed: {dropped.message}", file=sys.stderr)
    if report.failed > len(report.first_failures):
        print(f"... all failures: {args.out / 'failures.jsonl'}", file=sys.stderr)
    print(report.summary())
    for output in report.outputs:
        print(f"{output.modality}: {output.rows} x {output.dim} -> {', '.join(output.files)}")
    return 0
