"""``xmodal import``: build or extend a collection from embeddings computed elsewhere."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from xmodal.cli.arguments import index_choice_args, model_args

_SHOWN = 20  # refused rows listed on stderr; --json lists them all


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import",
        help="add embeddings computed elsewhere (clip-retrieval, xmodal embed) to a collection",
    )
    p.add_argument(
        "embeddings",
        nargs="+",
        metavar="EMBEDDINGS",
        help="folders of clip-retrieval inference output (img_emb/, metadata/) or of "
        "`xmodal embed` output (embed.json)",
    )
    p.add_argument("-c", "--collection", required=True, type=Path, help="collection dir")
    model_args(
        p,
        "the encoder that computed the embeddings, used for queries; default: the collection's "
        "model; required for a new collection",
    )
    p.add_argument(
        "--commit-every",
        type=int,
        default=65536,
        metavar="N",
        help="commit every N rows (default 65536): an interrupted import redoes at most N",
    )
    index_choice_args(p)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(run=cmd_import)


def cmd_import(args: argparse.Namespace) -> int:
    from xmodal.cli.commands import index_request
    from xmodal.errors import XmodalError
    from xmodal.pipelines.importing import ImportConfig, check_fit, import_embeddings
    from xmodal.pipelines.opening import exists, open_for_writing
    from xmodal.pipelines.sources.embeddings import open_embeddings

    if args.commit_every < 1:
        raise XmodalError(f"--commit-every must be at least 1, got {args.commit_every}")
    sets = [open_embeddings(source) for source in args.embeddings]  # layouts fail fast
    existing = exists(args.collection)
    if not existing and not args.model:
        raise XmodalError(
            "a new collection needs --model: the encoder that computed these embeddings, which "
            "queries will use"
        )
    spec = _encoder_spec(args, existing)
    check_fit(sets, spec)  # before a collection is made
    with open_for_writing(args.collection, spec, index_request(args)) as collection:
        report = import_embeddings(collection, spec, sets, ImportConfig(args.commit_every))
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    for failure in report.failures:
        print(f"failed: {failure.message}", file=sys.stderr)
    for row in report.refused[:_SHOWN]:
        print(f"refused: row {row.row} of {row.part} ({row.reason})", file=sys.stderr)
    if len(report.refused) > _SHOWN:
        print(
            f"... {len(report.refused) - _SHOWN} more refused rows (--json lists all)",
            file=sys.stderr,
        )
    if report.resumed:
        print(f"resumed interrupted run {report.run}")
    print(report.summary())
    return 0


def _encoder_spec(args: argparse.Namespace, existing: bool) -> dict:
    """The spec of --model (its revision hashes the weights), else of the collection's model."""
    from xmodal.cli.commands import _open_encoder
    from xmodal.index import Collection

    spec = None
    if existing:
        with Collection.open(args.collection) as current:
            spec = current.encoder_spec
    return _open_encoder(args, spec).spec.to_dict()
