"""``xmodal tag`` (zero-shot tags stored in a collection) and ``xmodal classify`` (ad hoc)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from xmodal.cli.arguments import model_args


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Both commands: ``tag`` writes the collection, ``classify`` writes nothing."""
    p = sub.add_parser(
        "tag",
        help="zero-shot tag a collection's items with labels from a file (stored; --where tag:X)",
        description="Scores every untagged item's stored embedding against the labels (CLIP "
        "prompt ensembles) and stores its top labels. Only new items are scored on a re-run; "
        "changed labels, templates, --top or --min-prob re-tag every item.",
    )
    p.add_argument("-c", "--collection", required=True, type=Path, help="collection dir")
    _label_args(p, top=3, min_prob=0.1)
    model_args(p, "default: the collection's model")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(run=cmd_tag)
    p = sub.add_parser("classify", help="zero-shot classify image files against labels")
    p.add_argument("images", nargs="+", type=Path, help="image files")
    _label_args(p, top=None, min_prob=0.0)
    model_args(p)
    p.add_argument(
        "--json", action="store_true", help='print {"results": [{"path", "labels"}]} as JSON'
    )
    p.set_defaults(run=cmd_classify)


def _label_args(p: argparse.ArgumentParser, *, top: int | None, min_prob: float) -> None:
    p.add_argument("--labels", required=True, type=Path, help="label file, one label a line")
    p.add_argument(
        "--templates",
        default="default",
        metavar="default|single|FILE",
        help="prompt templates: default (the CLIP paper's 80 ImageNet templates, averaged), "
        "single ('a photo of a {}.') or a file with one template with {} a line",
    )
    p.add_argument(
        "--top",
        type=int,
        default=top,
        metavar="K",
        help=f"keep at most K labels per image (default {top or 'all'})",
    )
    p.add_argument(
        "--min-prob",
        type=float,
        default=min_prob,
        metavar="P",
        help=f"keep labels with probability >= P (default {min_prob:g})",
    )


def _settings(args: argparse.Namespace):
    from xmodal.pipelines.tagging import TagSettings, load_labels, load_templates

    labels = load_labels(args.labels)
    return TagSettings(labels, load_templates(args.templates), args.top, args.min_prob)


def cmd_tag(args: argparse.Namespace) -> int:
    from xmodal.cli.commands import _open_encoder
    from xmodal.index import Collection
    from xmodal.pipelines.tagging import tag_collection

    settings = _settings(args)  # a bad label file fails before the model loads
    with Collection.open(args.collection) as current:
        spec = current.encoder_spec
    encoder = _open_encoder(args, spec)
    with Collection.open(args.collection, writable=True) as collection:
        report = tag_collection(encoder, collection, settings)
    if args.json:
        print(json.dumps({**report.__dict__}, indent=2, ensure_ascii=False))
        return 0
    what = "every item again (new labels or settings)" if report.retagged_all else "new items"
    print(f"tagged {report.tagged} {what}; {report.already_tagged} were already tagged")
    for label, count in sorted(report.label_counts.items(), key=lambda pair: -pair[1]):
        print(f"  {label}: {count}")
    if report.untagged_below_bar:
        print(
            f"  {report.untagged_below_bar} items had no label with probability "
            f">= {args.min_prob:g}"
        )
    return 0


def cmd_classify(args: argparse.Namespace) -> int:
    from xmodal.encoders import load_encoder
    from xmodal.pipelines.tagging import classify_images

    settings = _settings(args)
    encoder = load_encoder(args.model, device=args.device, precision=args.precision)
    results = classify_images(encoder, [str(p) for p in args.images], settings)
    if args.json:
        rows = [
            {
                "path": r.path,
                "labels": [{"label": t.label, "prob": round(t.prob, 6)} for t in r.labels],
            }
            for r in results
        ]
        print(json.dumps({"results": rows}, indent=2, ensure_ascii=False))
        return 0
    for result in results:
        tags = ", ".join(f"{t.label} {t.prob:.3f}" for t in result.labels) or "(no label passed)"
        print(f"{result.path}: {tags}")
    return 0
