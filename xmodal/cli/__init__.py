"""The ``xmodal`` command: argparse -> pipelines. The only place that exits.

``parser.py`` defines the arguments, ``commands.py`` runs them; heavy imports (torch, FAISS,
Gradio) happen inside the commands, after the arguments parsed.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from xmodal.cli.parser import build_parser
from xmodal.errors import XmodalError

__all__ = ["build_parser", "main"]


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
