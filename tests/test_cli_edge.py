"""The CLI's edge: one-line errors for OS failures, quiet exits on closed pipes, --version,
and nothing created when a run cannot start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import xmodal
from xmodal.cli import EXIT_BROKEN_PIPE, main


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def small_collection(
    tmp_path_factory: pytest.TempPathFactory, tiny_clip_dir: Path, captioned_photos: list[Path]
) -> Path:
    col = tmp_path_factory.mktemp("edge") / "col"
    photos = [str(p) for p in captioned_photos[:6]]
    assert (
        main(["index", *photos, "-c", str(col), "--model", str(tiny_clip_dir), "--workers", "0"])
        == 0
    )
    return col


def _into_closed_pipe(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI with stdout a pipe whose reader has already gone (``| head`` that quit)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [sys.executable, "-m", "xmodal.cli", *argv],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
        )
    finally:
        os.close(write_end)


@pytest.mark.parametrize(
    "argv",
    [
        ("search", "a photo", "-k", "5", "--json", "--precision", "fp32"),
        ("info", "--json"),
        ("reindex", "--json"),
    ],
    ids=["search", "info", "reindex"],
)
def test_a_reader_that_closes_early_ends_the_command_quietly(
    small_collection: Path, argv: tuple[str, ...]
) -> None:
    done = _into_closed_pipe(*argv, "-c", str(small_collection))
    assert "Traceback" not in done.stderr
    assert (done.returncode, done.stderr) == (EXIT_BROKEN_PIPE, "")


def test_version_into_a_closed_pipe_is_quiet_too() -> None:
    done = _into_closed_pipe("--version")
    assert (done.returncode, done.stderr) == (EXIT_BROKEN_PIPE, "")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"xmodal {xmodal.__version__}\n"


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("/proc/xmodal-no-such-dir", "No such file or directory: /proc/xmodal-no-such-dir"),
        ("/etc/hostname/col", "Not a directory: /etc/hostname/col"),
    ],
)
def test_os_errors_are_one_line(
    target: str,
    message: str,
    tiny_clip_dir: Path,
    captioned_photos: list[Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Paths even root cannot create: under /proc (no such entry) and under a regular file."""
    if not Path("/etc/hostname").is_file():
        pytest.skip("needs /etc/hostname to be a regular file")
    photo = captioned_photos[0]
    code, out, err = run(capsys, "index", photo, "-c", target, "--model", tiny_clip_dir)
    assert (code, out, err) == (1, "", f"xmodal: error: {message}\n")


def test_a_missing_source_creates_no_collection(
    tmp_path: Path, tiny_clip_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    col = tmp_path / "new.xmodal"
    missing = tmp_path / "does-not-exist"
    code, out, err = run(capsys, "index", missing, "-c", col, "--model", tiny_clip_dir)
    assert (code, out) == (1, "")
    assert err == f"xmodal: error: no such file or folder: {missing}\n"
    assert not col.exists()


@pytest.mark.parametrize("cached", [True, False], ids=["cached", "not-cached"])
def test_demo_says_whether_it_trains_or_uses_the_cached_model(
    cached: bool,
    tmp_path: Path,
    demo_model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from xmodal.demo import run as demo_run
    from xmodal.demo.train import DEMO_MODEL_NAME
    from xmodal.errors import XmodalError

    monkeypatch.setenv("XMODAL_CACHE", str(tmp_path))
    target = tmp_path / DEMO_MODEL_NAME
    if cached:
        target.symlink_to(demo_model_dir, target_is_directory=True)

    def stop(*args: object, **kwargs: object) -> None:
        raise XmodalError("stopped before any work")

    monkeypatch.setattr(demo_run, "build_demo", stop)
    code, out, _ = run(capsys, "demo", "--no-serve", "--dir", tmp_path / "world")
    expected = (
        f"xmodal demo: using the cached demo model at {target}\n"
        if cached
        else f"xmodal demo: training the demo model once (2,000 steps, about a minute on 2 cores), "
        f"cached at {target} ...\n"
    )
    assert (code, out) == (1, expected)


SEARCH_NEEDS_NONE_OF = ("gradio", "fastapi", "uvicorn", "ray", "matplotlib", "sklearn", "pyarrow")


def test_search_imports_nothing_a_query_does_not_need(small_collection: Path, tmp_path: Path):
    """Start-up is most of a search's time: the app, Ray, plotting, scikit-learn and Arrow stay
    out of it (torch and transformers, which encode the query, are the rest)."""
    listing = tmp_path / "modules.txt"
    script = (
        "import sys\n"
        "from xmodal.cli import main\n"
        "code = main(sys.argv[2:])\n"
        "open(sys.argv[1], 'w').write('\\n'.join(sorted(sys.modules)))\n"
        "sys.exit(code)\n"
    )
    argv = ["search", "-c", str(small_collection), "a photo", "-k", "5", "--precision", "fp32"]
    done = subprocess.run(
        [sys.executable, "-c", script, str(listing), *argv],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 5  # five hits printed
    loaded = {name.split(".")[0] for name in listing.read_text().split()}
    assert {"torch", "transformers", "faiss"} <= loaded  # the listing is the real one
    assert loaded.isdisjoint(SEARCH_NEEDS_NONE_OF), sorted(loaded & set(SEARCH_NEEDS_NONE_OF))


@pytest.mark.parametrize("command", ["search", "info"])
def test_read_only_commands_that_end_the_process_at_once_flush_their_output_first(
    small_collection: Path, command: str
) -> None:
    """From its own command line, search/info end with os._exit (no interpreter teardown): every
    byte written must still arrive, and the exit code too."""
    query = ["a photo", "-k", "5", "--precision", "fp32"] if command == "search" else []
    argv = [command, "-c", str(small_collection), *query, "--json"]
    done = subprocess.run(
        [sys.executable, "-m", "xmodal.cli", *argv], capture_output=True, text=True, timeout=300
    )
    assert (done.returncode, done.stderr) == (0, "")
    data = json.loads(done.stdout)
    assert len(data["results"]) == 5 if command == "search" else data["count"] == 6
    failed = subprocess.run(
        [sys.executable, "-m", "xmodal.cli", command, "-c", str(small_collection / "nope"), *query],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert failed.returncode == 1
    assert failed.stderr.startswith("xmodal: error: not an xmodal collection:")
