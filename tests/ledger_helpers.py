"""Helpers for the ledger, resume and crash tests: preparers that misbehave, state snapshots,
and a pre-imported process that forks `xmodal` runs so each killed run starts in milliseconds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xmodal.errors import ImageDecodeError
from xmodal.index import Collection


@dataclass(frozen=True)
class CrashingPreparer:
    """Wraps a real preparer; loading a file named in ``exits`` / ``segfaults`` kills the worker."""

    inner: object
    exits: frozenset[str] = frozenset()
    segfaults: frozenset[str] = frozenset()

    def load(self, source):
        name = Path(str(source)).name
        if name in self.exits:
            os._exit(3)
        if name in self.segfaults:
            os.kill(os.getpid(), signal.SIGSEGV)
        return self.inner.load(source)

    def preprocess(self, image):
        return self.inner.preprocess(image)

    def __call__(self, source):
        return self.preprocess(self.load(source))


class CountingPreparer:
    """In-process preparer that counts loads and fails named files with a given reason."""

    def __init__(self, inner, failing: dict[str, str] | None = None) -> None:
        self.inner = inner
        self.failing = dict(failing or {})
        self.loads = 0

    def load(self, source):
        self.loads += 1
        reason = self.failing.get(Path(str(source)).name)
        if reason is not None:
            raise ImageDecodeError(reason, "refused by the test", str(source))
        return self.inner.load(source)

    def preprocess(self, image):
        return self.inner.preprocess(image)


class WithPreparer:
    """An encoder whose preparer is replaced (everything else is the wrapped encoder's)."""

    def __init__(self, inner, preparer) -> None:
        self._inner = inner
        self.preparer = preparer

    def __getattr__(self, name):
        return getattr(self._inner, name)


def snapshot(directory: Path) -> dict:
    """Everything a resumed run must reproduce: ids, raw vector bytes, catalog rows, ledger."""
    with Collection.open(directory) as col:
        ids, rows = col.raw_embeddings()
        records = col.get_records(ids)
        vectors = {int(i): np.asarray(row).tobytes() for i, row in zip(ids, rows, strict=True)}
        runs = [(r.id, r.finished, r.sources, r.commit_every, r.counts) for r in col.runs()]
        return {
            "count": col.count,
            "ids": sorted(vectors),
            "vectors": vectors,
            "records": records,
            "ledger": col.ledger(),
            "runs": runs,
        }


ZYGOTE = textwrap.dedent(
    """
    import json, os, sys, time
    from xmodal.cli import main
    from xmodal.encoders import load_encoder
    from xmodal.index import Collection
    from xmodal.pipelines.accounting import RunBook
    import xmodal.index, xmodal.pipelines.indexing  # noqa: F401

    HOLD_SITES = {"add": (Collection, "add"), "commit": (RunBook, "_commit")}

    def hold_after(site, calls, marker):
        # After the calls-th call of the site returns: create the marker, then block until a
        # signal arrives (SIGINT raises KeyboardInterrupt out of the sleep, as at any Ctrl-C).
        owner, name = HOLD_SITES[site]
        real, seen = getattr(owner, name), [0]
        def held(*args, **kwargs):
            result = real(*args, **kwargs)
            seen[0] += 1
            if seen[0] == calls:
                open(marker, "x").close()
                time.sleep(300)  # bounded: the test signals within its own timeout
            return result
        setattr(owner, name, held)

    # Loading once pays the lazy imports here rather than in every run (it encodes nothing).
    load_encoder(sys.argv[1], device="cpu", precision="fp32")
    print("ready", flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            sys.stdin.close()
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            code = 1
            try:
                if request["hold"]:
                    hold_after(*request["hold"])
                code = main(request["argv"])
            finally:
                sys.stderr.flush()
                os._exit(code)
        print(f"pid {pid}", flush=True)
        _, status = os.waitpid(pid, 0)
        print(f"status {os.waitstatus_to_exitcode(status)}", flush=True)
    """
)


@dataclass(frozen=True)
class Hold:
    """Where a forked run stops for its signal: after its ``calls``-th ``site`` call returned.

    ``site`` is "add" (rows staged in the collection, not committed) or "commit" (a chunk and
    its ledger entries committed). The run creates ``marker`` there and blocks, so a signal sent
    once the marker exists always lands mid-run, at a known point, with no clock involved.
    """

    site: str
    calls: int
    marker: Path


class Zygote:
    """A process that imported xmodal once and forks one ``xmodal`` CLI run per request."""

    def __init__(self, workdir: Path, model: Path) -> None:
        script = workdir / "zygote.py"
        script.write_text(ZYGOTE)
        # One thread: a tiny model gains nothing from more, and idle OpenMP threads spinning on
        # a busy machine made every run several times slower.
        env = os.environ | {
            "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
            "OMP_NUM_THREADS": "1",
        }
        self.proc = subprocess.Popen(
            [sys.executable, str(script), str(model)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.proc.stdout.readline() == "ready\n"

    def start(self, argv: list[str], hold: Hold | None = None) -> int:
        """Fork a run of ``xmodal ARGV`` (held at ``hold``, if given); returns its pid."""
        held = [hold.site, hold.calls, str(hold.marker)] if hold else None
        request = {"argv": [str(a) for a in argv], "hold": held}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line.startswith("pid "), line
        return int(line.split()[1])

    def wait(self) -> int:
        """Exit code of the last run (negative: killed by that signal)."""
        line = self.proc.stdout.readline()
        assert line.startswith("status "), line
        return int(line.split()[1])

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@dataclass(frozen=True)
class StallingPreparer:
    """Wraps a real preparer; loading a file named in ``stalls`` first opens ``fifo`` for
    reading, which blocks until a writer opens it: a read from a mount that stopped answering."""

    inner: object
    fifo: str
    stalls: frozenset[str] = frozenset()

    def load(self, source):
        if Path(str(source)).name in self.stalls:
            with open(self.fifo, "rb") as handle:
                handle.read()
        return self.inner.load(source)

    def preprocess(self, image):
        return self.inner.preprocess(image)


class CountingEncoder:
    """An encoder that counts the images it encodes (everything else is the wrapped one's)."""

    def __init__(self, inner) -> None:
        self._inner = inner
        self.encoded = 0

    def encode_pixels(self, pixels, *args, **kwargs):
        self.encoded += len(pixels)
        return self._inner.encode_pixels(pixels, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._inner, name)
