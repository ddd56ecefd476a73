"""The arguments of every ``xmodal`` command."""

from __future__ import annotations

import argparse
from pathlib import Path

from xmodal.cli import curation, embed, eval, importing, probe, tagging
from xmodal.cli.arguments import (
    DEFAULT_MODEL,
    decode_args,
    index_choice_args,
    model_args,
    source_args,
)
from xmodal.cli.commands import (
    cmd_compact,
    cmd_demo,
    cmd_index,
    cmd_info,
    cmd_reindex,
    cmd_remove,
    cmd_search,
    cmd_serve,
)
from xmodal.cli.ray_index import add_ray_args


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xmodal", description="Cross-modal (image <-> text) search over your images."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--version", action=_Version, help="print the installed version (xmodal X.Y.Z) and exit"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _index_parser(sub)
    _reindex_parser(sub)
    _remove_parser(sub)
    _search_parser(sub)
    _serve_parser(sub)
    _info_parser(sub)
    _compact_parser(sub)
    _demo_parser(sub)
    embed.add_parser(sub)
    probe.add_parser(sub)
    eval.add_parser(sub)
    curation.add_parser(sub)
    tagging.add_parser(sub)
    importing.add_parser(sub)
    return parser


class _Version(argparse.Action):
    """``--version``: the installed distribution's version, else the package's own."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        import importlib.metadata

        import xmodal

        try:
            version = importlib.metadata.version("xmodal")
        except importlib.metadata.PackageNotFoundError:  # run from a source tree
            version = xmodal.__version__
        print(f"xmodal {version}")
        parser.exit()


def _collection_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--collection", required=True, type=Path, help="collection dir")


def _index_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("index", help="embed image files and folders into a collection")
    p.add_argument(
        "sources",
        nargs="+",
        help="image files, folders (searched recursively), @LIST files (one path a line), "
        ".tar shards (WebDataset layout) or .parquet/.csv/.jsonl tables of paths",
    )
    _collection_arg(p)
    model_args(p, f"default: the collection's model, or {DEFAULT_MODEL} for a new one")
    source_args(p)
    decode_args(p)
    index_choice_args(p)
    p.add_argument(
        "--prune",
        action="store_true",
        help="afterwards remove items under the sources whose files no longer exist",
    )
    p.add_argument(
        "--commit-every",
        type=int,
        default=2048,
        metavar="N",
        help="commit every N inputs (default 2048): an interrupted run redoes at most N",
    )
    p.add_argument(
        "--retry-failed",
        action="store_true",
        help="decode inputs that failed before even if their size and mtime are unchanged",
    )
    add_ray_args(p)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(run=cmd_index)


def _reindex_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reindex", help="rebuild and re-tune a collection's index from its stored embeddings"
    )
    _collection_arg(p)
    index_choice_args(p)
    p.add_argument("--json", action="store_true", help="print the collection info as JSON")
    p.set_defaults(run=cmd_reindex)


def _remove_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("remove", help="remove files, or all items under folders, from a collection")
    p.add_argument("paths", nargs="+", help="indexed files or folders (the files need not exist)")
    _collection_arg(p)
    p.set_defaults(run=cmd_remove)


def _search_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="search a collection by text and/or image")
    p.add_argument("text", nargs="?", help="text query")
    _collection_arg(p)
    p.add_argument("--image", type=Path, help="image query (alone or mixed with the text)")
    p.add_argument("--negative", help="text to steer away from")
    p.add_argument("--image-weight", type=float, default=0.5, help="text+image mix (default 0.5)")
    p.add_argument("-k", type=int, default=10, help="number of results (default 10)")
    p.add_argument("--threshold", type=float, help="drop hits scoring below this")
    p.add_argument(
        "--where",
        action="append",
        metavar="EXPR",
        help="keep only matching items; repeatable, all must hold. Clauses joined by ' and ': "
        "path:GLOB, path^=PREFIX, path=PATH, ext:jpg,png, size/width/height OP N, "
        "mtime OP ISO-DATE|EPOCH with OP one of > >= < <= = !=, tag:LABEL (see xmodal tag) "
        "(e.g. --where 'path:~/Pictures/2023/* and width>=1024')",
    )
    p.add_argument(
        "--mode",
        choices=["vector", "keyword", "hybrid"],
        default="vector",
        help="vector (embeddings; default), keyword (words in captions and file names, SQLite "
        "FTS5: plain words match any, or FTS5 syntax) or hybrid (both, reciprocal rank fusion)",
    )
    p.add_argument(
        "--keyword-weight",
        type=float,
        default=0.5,
        metavar="W",
        help="hybrid: weight of the keyword list in the fusion, 0..1 (default 0.5)",
    )
    p.add_argument("--json", action="store_true", help='print {"results": [...]} as JSON')
    model_args(p, "default: the collection's model")
    p.set_defaults(run=cmd_search, exit_at_once=True)


def _serve_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the search UI and HTTP API for a collection")
    _collection_arg(p)
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument(
        "--refresh-seconds",
        type=float,
        default=2.0,
        metavar="N",
        help="look for a newer committed generation at most every N seconds and serve it "
        "without a restart (default 2; 0 = serve the generation opened at start)",
    )
    p.add_argument(
        "--auth-token",
        metavar="TOKEN",
        help="require this token (8+ characters) on every page and API request; prefer the "
        "XMODAL_AUTH_TOKEN environment variable, which other users cannot see in ps",
    )
    p.add_argument(
        "--max-upload-mb", type=float, default=20.0, help="largest query image (default 20)"
    )
    p.add_argument(
        "--cors-origin",
        action="append",
        metavar="ORIGIN",
        help="let pages from this origin call the API (e.g. a hosted clip-retrieval front end); "
        "repeatable",
    )
    model_args(p, "default: the collection's model")
    p.set_defaults(run=cmd_serve)


def _info_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="describe a collection")
    _collection_arg(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_info, exit_at_once=True)


def _compact_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compact", help="merge a collection's segments (fewer, larger segments)")
    _collection_arg(p)
    p.add_argument("--full", action="store_true", help="merge everything into one segment")
    p.set_defaults(run=cmd_compact)


def _demo_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="offline demo: train a tiny model, index a synthetic world")
    p.add_argument("--dir", type=Path, help="where the demo world and collection go")
    p.add_argument("--no-serve", action="store_true", help="build, report and exit")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    p.set_defaults(run=cmd_demo)
