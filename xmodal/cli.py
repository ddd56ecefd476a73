"""The ``xmodal`` command: argparse -> pipelines. The only place that exits."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from xmodal.errors import XmodalError

if TYPE_CHECKING:  # heavy imports happen inside the commands, after argument parsing
    from xmodal.encoders import Encoder
    from xmodal.pipelines.indexing import IndexReport
    from xmodal.pipelines.search import Retriever

log = logging.getLogger("xmodal")

DEFAULT_MODEL = "openai/clip-vit-base-patch32"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.verbose:  # before transformers is imported: no advisory notices, no load bars
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.run(args) or 0)
    except XmodalError as exc:
        print(f"xmodal: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("xmodal: interrupted; committed work is kept", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xmodal", description="Cross-modal (image <-> text) search over your images."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _index_parser(sub)
    _search_parser(sub)
    _serve_parser(sub)
    _info_parser(sub)
    _demo_parser(sub)
    return parser


def _model_args(parser: argparse.ArgumentParser, default_help: str) -> None:
    parser.add_argument("--model", "-m", help=f"hub id or local model directory ({default_help})")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default auto)")
    parser.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16", "fp16"],
        help="auto: bf16 on GPUs and CPUs with native bf16, else fp32",
    )


def _collection_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--collection", required=True, type=Path, help="collection dir")


def _index_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("index", help="embed image files and folders into a collection")
    p.add_argument("sources", nargs="+", help="image files or folders (searched recursively)")
    _collection_arg(p)
    _model_args(p, f"default: the collection's model, or {DEFAULT_MODEL} for a new one")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--workers", type=int, help="decoding processes (default: chosen for the device; 0: inline)"
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(run=cmd_index)


def _search_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="search a collection by text and/or image")
    p.add_argument("text", nargs="?", help="text query")
    _collection_arg(p)
    p.add_argument("--image", type=Path, help="image query (alone or mixed with the text)")
    p.add_argument("--negative", help="text to steer away from")
    p.add_argument("--image-weight", type=float, default=0.5, help="text+image mix (default 0.5)")
    p.add_argument("-k", type=int, default=10, help="number of results (default 10)")
    p.add_argument("--threshold", type=float, help="drop hits scoring below this")
    p.add_argument("--json", action="store_true", help='print {"results": [...]} as JSON')
    _model_args(p, "default: the collection's model")
    p.set_defaults(run=cmd_search)


def _serve_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the search UI for a collection")
    _collection_arg(p)
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=7860)
    _model_args(p, "default: the collection's model")
    p.set_defaults(run=cmd_serve)


def _info_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="describe a collection")
    _collection_arg(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_info)


def _demo_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="offline demo: train a tiny model, index a synthetic world")
    p.add_argument("--dir", type=Path, help="where the demo world and collection go")
    p.add_argument("--no-serve", action="store_true", help="build, report and exit")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    p.set_defaults(run=cmd_demo)


def _open_encoder(args: argparse.Namespace, spec: dict | None) -> Encoder:
    from xmodal.encoders import load_encoder

    model = args.model or (spec or {}).get("source") or DEFAULT_MODEL
    return load_encoder(model, device=args.device, precision=args.precision)


def cmd_index(args: argparse.Namespace) -> int:
    from xmodal.index import Collection
    from xmodal.pipelines.indexing import IndexConfig, index_paths

    existing = (args.collection / "manifest.json").is_file()
    spec = None
    if existing:
        with Collection.open(args.collection) as current:
            spec = current.encoder_spec
    encoder = _open_encoder(args, spec)
    if existing:
        collection = Collection.open(args.collection, writable=True)
    else:
        collection = Collection.create(args.collection, encoder.spec.to_dict())
    config = IndexConfig(batch_size=args.batch_size, workers=args.workers)
    with collection:
        report = index_paths(encoder, collection, args.sources, config)
    if args.json:
        failures = [f.__dict__ for f in report.failures]
        print(json.dumps({**_report_dict(report), "failures": failures}, indent=2))
    else:
        for failure in report.failures:
            print(f"failed: {failure.message}", file=sys.stderr)
        print(report.summary())
    return 0


def _report_dict(report: IndexReport) -> dict:
    keys = ("seen", "indexed", "unchanged", "failed", "seconds", "images_per_s")
    return {key: getattr(report, key) for key in keys}


def _retriever(args: argparse.Namespace) -> Retriever:
    from xmodal.index import Collection
    from xmodal.pipelines.search import Retriever

    collection = Collection.open(args.collection)
    return Retriever(_open_encoder(args, collection.encoder_spec), collection)


def cmd_search(args: argparse.Namespace) -> int:
    retriever = _retriever(args)
    hits = retriever.search(
        args.text,
        args.image,
        negative=args.negative,
        image_weight=args.image_weight,
        k=args.k,
        threshold=args.threshold,
    )
    if args.json:
        rows = [
            {
                "id": h.id,
                "score": round(h.score, 6),
                "path": h.record.path,
                "caption": h.record.caption,
            }
            for h in hits
        ]
        print(json.dumps({"results": rows}, indent=2, ensure_ascii=False))
        return 0
    if not hits:
        print("no results")
    for rank, hit in enumerate(hits, 1):
        caption = f"  {hit.record.caption}" if hit.record.caption else ""
        print(f"{rank:3d}  {hit.score:.4f}  {hit.record.path}{caption}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from xmodal.app import serve

    retriever = _retriever(args)
    print(f"serving the search UI on http://{args.host}:{args.port} (Ctrl-C to stop)")
    serve(retriever, host=args.host, port=args.port)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from xmodal.index import Collection

    with Collection.open(args.collection) as collection:
        info = collection.info()
    data = info.to_dict() if hasattr(info, "to_dict") else dict(info.__dict__)
    if args.json:
        print(json.dumps(data, indent=2, default=str))
        return 0
    spec = data.get("encoder_spec") or {}
    print(f"collection  {data.get('directory')}")
    revision = str(spec.get("revision"))[:12]
    print(f"model       {spec.get('model_id')} @ {revision} (dim {spec.get('dim')})")
    print(f"items       {data.get('count')}")
    print(f"index       {data.get('index_key')}")
    print(f"generation  {data.get('generation')}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from xmodal.demo.run import DemoOptions, build_demo

    print("xmodal demo: preparing the model (trained once, about 90 s, then cached) ...")
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
    serve(retriever, host=args.host, port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
