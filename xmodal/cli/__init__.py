"""The ``xmodal`` command: argparse -> pipelines. The only place that exits.

``parser.py`` defines the arguments, ``commands.py`` runs them; heavy imports (torch, FAISS,
Gradio) happen inside the commands, after the arguments parsed.

Exit codes: 0 done; 1 an error, reported as one ``xmodal: error: ...`` line (an XmodalError, or
an OSError as ``<strerror>: <filename>``); 2 bad arguments (argparse); 130 interrupted (Ctrl-C);
141 (128 + SIGPIPE, what ``yes | head`` reports) when whoever reads stdout closed it early,
e.g. ``xmodal search ... --json | head``: the rest of the output is dropped quietly.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from xmodal.cli.parser import build_parser
from xmodal.errors import XmodalError

__all__ = ["EXIT_BROKEN_PIPE", "build_parser", "main"]

EXIT_BROKEN_PIPE = 141


def main(argv: Sequence[str] | None = None) -> int:
    try:
        try:
            return _run(argv)
        finally:  # a closed pipe shows here, not in the interpreter's final flush
            sys.stdout.flush()
    except BrokenPipeError:
        _drop_stdout()
        return EXIT_BROKEN_PIPE
    except XmodalError as exc:
        print(f"xmodal: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"xmodal: error: {os_error_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("xmodal: interrupted; committed work is kept", file=sys.stderr)
        return 130


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if not args.verbose:  # before transformers is imported: no advisory notices, no load bars
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    return int(args.run(args) or 0)


def os_error_line(exc: OSError) -> str:
    """``No such file or directory: /proc/foo``: what the OS said and about which file."""
    reason, name = exc.strerror or str(exc), exc.filename
    if name is None:
        return reason
    return f"{reason}: {os.fsdecode(name) if isinstance(name, bytes) else name}"


def _drop_stdout() -> None:
    """Point stdout at devnull, so the interpreter's last flush of the buffered rest cannot
    raise again (the pattern of the Python docs, signal module, "Note on SIGPIPE")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout without a file descriptor (captured in tests)
        pass
