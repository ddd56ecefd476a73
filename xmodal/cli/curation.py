"""``xmodal duplicates`` and ``xmodal outliers``: reports over a collection; nothing is changed."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

_KEEP_RULES = ("largest", "oldest", "newest", "first")  # xmodal.pipelines.curation.KEEP_RULES
_WHERE_HELP = "consider only matching items; repeatable, all must hold (grammar as for search)"


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register both commands."""
    _duplicates_parser(sub)
    _outliers_parser(sub)


def _duplicates_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "duplicates",
        help="groups of exact (same bytes) and near-duplicate (cosine >= threshold) items",
        description="Groups are connected components of the links 'same content hash' and "
        "'cosine >= threshold', so they can chain; each member reports its cosine to the keeper. "
        "Nothing is deleted.",
    )
    p.add_argument("-c", "--collection", required=True, type=Path, help="collection dir")
    p.add_argument(
        "--threshold",
        type=float,
        default=0.95,
        help="cosine at or above which two items are near-duplicates, in (-1, 1] (default 0.95)",
    )
    p.add_argument("--where", action="append", metavar="EXPR", help=_WHERE_HELP)
    p.add_argument(
        "--keep",
        default="largest",
        choices=_KEEP_RULES,
        help="keeper of each group: largest (pixels, then bytes), oldest/newest (mtime), first "
        "(lowest id); ties go to the lowest id (default largest)",
    )
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help='print {"groups": [...]} as JSON')
    out.add_argument("--csv", type=Path, metavar="FILE", help="write one row per group member")
    p.add_argument(
        "--write-keep",
        type=Path,
        metavar="FILE",
        help="write the paths to keep (every considered item in no group, plus each group's "
        "keeper), one a line, for xmodal index/embed @FILE",
    )
    p.set_defaults(run=cmd_duplicates)


def _outliers_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "outliers",
        help="items furthest from their neighbours (score: 1 - mean cosine to the k nearest)",
    )
    p.add_argument("-c", "--collection", required=True, type=Path, help="collection dir")
    p.add_argument("--top", type=int, default=20, help="how many to list (default 20)")
    p.add_argument("--k", type=int, default=10, help="neighbours judging each item (default 10)")
    p.add_argument("--where", action="append", metavar="EXPR", help=_WHERE_HELP)
    p.add_argument("--json", action="store_true", help='print {"outliers": [...]} as JSON')
    p.set_defaults(run=cmd_outliers)


def cmd_duplicates(args: argparse.Namespace) -> int:
    from xmodal.index import Collection
    from xmodal.index.pathtext import display_path
    from xmodal.pipelines.curation import DuplicateConfig, check_threshold, find_duplicates, output

    check_threshold(args.threshold)  # before the collection is opened
    config = DuplicateConfig(threshold=args.threshold, keep=args.keep, where=args.where)
    with Collection.open(args.collection) as collection:
        report = find_duplicates(collection, config)
        if args.write_keep is not None:
            kept = output.write_keep_list(collection, report, args.write_keep)
    if args.json:
        print(json.dumps(output.duplicates_dict(report), indent=2, ensure_ascii=False))
        return 0
    if args.csv is not None:
        output.write_text_file(args.csv, output.duplicates_csv(report))
    else:
        _print_groups(report)
    print(report.summary())
    if args.write_keep is not None:
        print(f"{kept} paths to keep written to {display_path(str(args.write_keep))}")
    return 0


def _print_groups(report) -> None:  # noqa: ANN001 - types are imported lazily
    from xmodal.index.pathtext import display_path

    for number, group in enumerate(report.groups, 1):
        print(f"group {number} ({group.kind}, {len(group.members)} items)")
        for m in group.members:
            mark = "  keep" if m.id == group.keeper.id else ""
            print(f"  {m.score:.4f}  {m.id:>8}  {display_path(m.record.path)}{mark}")


def cmd_outliers(args: argparse.Namespace) -> int:
    from xmodal.index import Collection
    from xmodal.index.pathtext import display_path
    from xmodal.pipelines.curation import OutlierConfig, find_outliers
    from xmodal.pipelines.curation.outliers import check_counts
    from xmodal.pipelines.curation.output import outliers_dict

    check_counts(args.top, args.k)  # before the collection is opened
    config = OutlierConfig(top=args.top, k=args.k, where=args.where)
    with Collection.open(args.collection) as collection:
        report = find_outliers(collection, config)
    if args.json:
        print(json.dumps(outliers_dict(report), indent=2, ensure_ascii=False))
        return 0
    for rank, o in enumerate(report.outliers, 1):
        print(f"{rank:3d}  {o.score:.4f}  {o.id:>8}  {display_path(o.record.path)}")
        near = ", ".join(f"{n.id} ({n.score:.3f})" for n in o.neighbours)
        print(f"     nearest: {near}")
    print(report.summary())
    return 0
