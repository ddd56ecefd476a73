"""The ``xmodal`` command: argparse -> pipelines. The only place that exits.

``parser.py`` defines the arguments, ``commands.py`` runs them; heavy imports (torch, FAISS,
Gradio) happen inside the commands, after the arguments parsed.

Exit codes: 0 done; 1 an error, reported as one ``xmodal: error: ...`` line (an XmodalError, or
an OSError as ``<strerror>: <filename>``); 2 bad arguments (argparse); 130 interrupted (Ctrl-C);
141 (128 + SIGPIPE, what ``yes | head`` reports) when whoever reads stdout closed it early,
e.g. ``xmodal search ... --json | head``: the rest of the output is dropped quietly.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from xmodal.cli.parser import build_parser
from xmodal.errors import XmodalError

__all__ = ["EXIT_BROKEN_PIPE", "build_parser", "main"]

EXIT_BROKEN_PIPE = 141


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; ``argv`` None means this process's own command line.

    Then a read-only command (``search``, ``info``) ends the process itself once its output is
    flushed: tearing down torch and transformers at interpreter exit took 2-4 s, as long as
    the query, and such a command holds nothing to clean up (no file open for writing, no
    child process). Called with a list (tests, other programs) it always returns.
    """
    done: list[argparse.Namespace] = []
    code = _guarded(argv, done)
    if argv is None and done and getattr(done[0], "exit_at_once", False):
        _exit_now(code)
    return code


def _guarded(argv: Sequence[str] | None, done: list[argparse.Namespace]) -> int:
    try:
        try:
            return _run(argv, done)
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


def _run(argv: Sequence[str] | None, done: list[argparse.Namespace]) -> int:
    args = build_parser().parse_args(argv)
    if not args.verbose:  # before transformers is imported: no advisory notices, no load bars
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    code = int(args.run(args) or 0)
    done.append(args)
    return code


def _exit_now(code: int) -> NoReturn:
    """Flush what was written and end the process without the interpreter's teardown."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


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
