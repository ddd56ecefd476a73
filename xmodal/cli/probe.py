"""``xmodal probe``: a linear probe on a folder-per-class dataset, to judge features."""

from __future__ import annotations

import argparse
import json

from xmodal.cli.arguments import decode_args, follow_links_arg, model_args, representation_arg


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "probe", help="logistic-regression probe of the features of a folder-per-class dataset"
    )
    p.add_argument("dataset", help="a folder with one subfolder of images per class")
    model_args(p)
    representation_arg(p)
    p.add_argument("--test", metavar="DIR", help="a test split with the same class folders")
    p.add_argument(
        "--test-size", type=float, default=0.2, help="held-out share without --test (default 0.2)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    p.add_argument(
        "--C", type=float, default=1.0, help="inverse regularisation strength (default 1.0)"
    )
    follow_links_arg(p)
    decode_args(p)
    p.add_argument("--json", action="store_true", help="print the scores as JSON")
    p.set_defaults(run=cmd_probe)


def cmd_probe(args: argparse.Namespace) -> int:
    from xmodal.encoders import load_encoder
    from xmodal.encoders.representation import parse_representation
    from xmodal.pipelines.features.probe import ProbeConfig, run_probe

    config = ProbeConfig(
        representation=str(parse_representation(args.representation)),
        test_size=args.test_size,
        seed=args.seed,
        C=args.C,
        test_dir=args.test,
        batch_size=args.batch_size,
        workers=args.workers,
        decode_timeout=args.decode_timeout or ProbeConfig.decode_timeout,
        follow_links=args.follow_links,
    )
    encoder = load_encoder(args.model, device=args.device, precision=args.precision)
    report = run_probe(encoder, args.dataset, config)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.text.rstrip())
        print(report.summary())
    return 0
