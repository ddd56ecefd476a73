"""The README and docs/ cannot drift from the code: their commands are run or checked.

Convention: a fenced block is *runnable* when the line right before its opening fence is the
HTML comment ``<!-- runnable -->`` (invisible on GitHub). Runnable ``bash`` blocks run with
``bash -e`` and runnable ``python`` blocks are executed, in document order, in one temporary
folder per document (so a later block may use what an earlier one wrote; a page's python blocks
share one namespace), offline, on the demo model. Before running, these placeholders of the
docs are replaced:

    openai/clip-vit-base-patch32   the demo model directory (fixture ``demo_model_dir``)
    ~/Pictures                     a folder of demo-world JPEGs with .txt caption sidecars
    ~/datasets/world               that demo world (``captions.jsonl`` + ``images/``)
    ~/datasets/shapes              demo-world images filed in one folder per shape (probe)

``xmodal`` in a runnable block is this checkout's CLI (``python -m xmodal.cli``).

Blocks that cannot run here (a hub download, a server that runs until stopped, a Ray cluster)
stay unmarked, but every ``xmodal COMMAND ...`` line in any fenced block of the README and
docs/ is still checked: COMMAND must be a real subcommand and every ``--flag`` / ``-f`` on the
line (and its continuation lines) must be one of that subcommand's options. Every results file
the docs name must exist, and every ``benchmarks/results/*.json`` must record the machine it
ran on (CPU model, the CPU flags that decide bf16 speed, cores, torch version).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKER = "<!-- runnable -->"
SHELL_INFO = {"bash", "sh", "shell", "console", "text", ""}


@dataclass(frozen=True)
class Block:
    doc: Path
    line: int  # 1-based line of the opening fence
    info: str  # the fence's info string, e.g. "bash"
    code: str
    runnable: bool

    def __str__(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def fenced_blocks(doc: Path) -> list[Block]:
    lines = doc.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        opening = re.match(r"^(\s*)(`{3,})(.*)$", lines[i])
        if not opening:
            i += 1
            continue
        indent, fence, info = opening.group(1), opening.group(2), opening.group(3).strip()
        end = i + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        body = [line.removeprefix(indent) for line in lines[i + 1 : end]]
        runnable = i > 0 and lines[i - 1].strip() == MARKER
        blocks.append(Block(doc, i + 1, info, "\n".join(body) + "\n", runnable))
        i = end + 1
    return blocks


ALL_BLOCKS = [block for doc in DOCS for block in fenced_blocks(doc)]


def test_the_docs_exist_and_have_runnable_blocks() -> None:
    assert (ROOT / "docs").is_dir() and len(DOCS) > 5
    assert sum(b.runnable for b in ALL_BLOCKS) >= 8
    for block in ALL_BLOCKS:
        if block.runnable:
            assert block.info in ("bash", "python"), f"{block}: runnable blocks are bash or python"


# ----------------------------------------------------------------------------- CLI drift
def _subparsers() -> dict[str, argparse.ArgumentParser]:
    from xmodal.cli.parser import build_parser

    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def xmodal_commands(block: Block) -> list[tuple[str, str]]:
    """(subcommand, the command's text with continuation lines) for each ``xmodal`` line."""
    found: list[tuple[str, str]] = []
    lines = block.code.splitlines()
    i = 0
    while i < len(lines):
        line = re.sub(r"(^|\s)#.*$", "", lines[i])  # comments
        match = re.search(r"(?:^|[\s;&|(])xmodal\s+([a-z][\w-]*)", line)
        i += 1
        if not match:
            continue
        text = line[match.start(1) :]
        while i < len(lines) and (
            text.rstrip().endswith("\\")
            or (block.info not in ("bash", "sh", "python") and lines[i].startswith((" ", "\t")))
        ):
            if re.search(r"(?:^|\s)xmodal\s", lines[i]):
                break
            text = text.rstrip().removesuffix("\\") + " " + re.sub(r"(^|\s)#.*$", "", lines[i])
            i += 1
        found.append((match.group(1), text))
    return found


def _flags(text: str) -> list[str]:
    # Quoted arguments (search texts, --where expressions) are not flags.
    unquoted = re.sub(r"'[^']*'|\"[^\"]*\"", " ", text)
    return re.findall(r"(?<![\w/.:-])(--[a-zA-Z][\w-]*|-[a-zA-Z])(?![\w-])", unquoted)


def test_every_xmodal_command_in_the_docs_is_real_and_its_flags_exist() -> None:
    commands = _subparsers()
    checked, problems = 0, []
    for block in ALL_BLOCKS:
        if block.info not in SHELL_INFO:
            continue
        for name, text in xmodal_commands(block):
            if name not in commands:
                problems.append(f"{block}: 'xmodal {name}' is not a subcommand")
                continue
            options = commands[name]._option_string_actions
            problems += [
                f"{block}: 'xmodal {name}' has no option {flag}"
                for flag in _flags(text)
                if flag not in options
            ]
            checked += 1
    assert not problems, "\n".join(problems)
    assert checked >= 20
    documented = {name for block in ALL_BLOCKS for name, _ in xmodal_commands(block)}
    assert documented == set(commands), "every subcommand is documented with an example"


def test_the_flag_check_catches_drift() -> None:
    block = Block(ROOT / "README.md", 1, "bash", "xmodal index a -c b \\\n  --no-such-flag\n", True)
    ((name, text),) = xmodal_commands(block)
    assert name == "index" and "--no-such-flag" in _flags(text)
    assert "--no-such-flag" not in _subparsers()["index"]._option_string_actions
    quoted = "xmodal search -c c 'a -k b' --where 'width>=1024 and path:~/x-y/*'"
    assert _flags(quoted) == ["-c", "--where"]


# ----------------------------------------------------------------------------- results files
RESULTS = ROOT / "benchmarks" / "results"


def _named_results() -> set[str]:
    names: set[str] = set()
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for ref in re.findall(r"benchmarks/results/([\w.{},*-]+)", text):
            ref = ref.rstrip(".,)")
            braces = re.match(r"^(.*)\{([^}]*)\}(.*)$", ref)
            parts = braces.group(2).split(",") if braces else [""]
            for part in parts:
                name = f"{braces.group(1)}{part}{braces.group(3)}" if braces else ref
                names.add(name)
    return names


def test_every_results_file_the_docs_name_exists() -> None:
    names = _named_results()
    assert len(names) >= 8
    missing = [n for n in sorted(names) if not list(RESULTS.glob(n))]
    assert not missing, f"named in the docs but not in benchmarks/results: {missing}"


def test_every_relative_link_in_the_docs_resolves() -> None:
    broken = []
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text(encoding="utf-8")):
            path = target.split("#")[0]
            if path and "://" not in path and not (doc.parent / path).exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target}")
    assert not broken, broken


@pytest.mark.parametrize("path", sorted(RESULTS.glob("*.json")), ids=lambda p: p.name)
def test_every_results_file_records_the_machine(path: Path) -> None:
    machine = json.loads(path.read_text()).get("machine") or {}
    assert machine.get("cpu_model") and machine.get("cpu_cores")
    flags = machine.get("cpu_flags") or {}
    assert {"avx2", "avx512_bf16", "amx_bf16"} <= set(flags), f"{path.name}: CPU flags"
    assert (machine.get("versions") or {}).get("torch"), f"{path.name}: torch version"


# ----------------------------------------------------------------------------- running them
@pytest.fixture(scope="module")
def places(demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    from xmodal.demo.world import make_world, sample_world

    root = tmp_path_factory.mktemp("docs-data")
    world = root / "world"
    for item in make_world(world, 24, seed=7, image_format="jpg"):
        item.path.with_suffix(".txt").write_text(item.caption + "\n", encoding="utf-8")
    shapes = root / "shapes"
    for number, (attrs, image) in enumerate(sample_world(30, seed=8)):
        (shapes / attrs.shape).mkdir(parents=True, exist_ok=True)
        image.save(shapes / attrs.shape / f"{number:03d}.png")
    bin_dir = root / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "xmodal"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m xmodal.cli "$@"\n')
    shim.chmod(0o755)
    return {
        "openai/clip-vit-base-patch32": str(demo_model_dir),
        "~/Pictures": str(world / "images"),
        "~/datasets/world": str(world),
        "~/datasets/shapes": str(shapes),
        "bin": str(bin_dir),
    }


def substitute(code: str, places: dict[str, str]) -> str:
    for placeholder in sorted((p for p in places if p != "bin"), key=len, reverse=True):
        code = code.replace(placeholder, places[placeholder])
    return code


def run_block(block: Block, places: dict[str, str], folder: Path, namespace: dict) -> None:
    code = substitute(block.code, places)
    if block.info == "bash":
        env = {
            **os.environ,
            "PATH": places["bin"] + os.pathsep + os.environ["PATH"],
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "HF_HUB_OFFLINE": "1",
            "XMODAL_CACHE": str(folder / ".cache"),  # eval's embedding cache, not the user's
        }
        done = subprocess.run(
            ["bash", "-e", "-c", code], cwd=folder, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, f"{block} failed:\n{shlex.quote(code)}\n{done.stderr[-3000:]}"
    else:
        previous = Path.cwd()
        os.chdir(folder)
        try:
            exec(compile(code, str(block), "exec"), namespace)
        finally:
            os.chdir(previous)


RUNNABLE_DOCS = sorted({b.doc for b in ALL_BLOCKS if b.runnable}, key=str)


@pytest.mark.parametrize("doc", RUNNABLE_DOCS, ids=lambda p: p.name)
def test_the_runnable_blocks_run(doc: Path, places: dict[str, str], tmp_path: Path) -> None:
    namespace = {"__name__": "__docs__"}  # a page's python blocks share it, like a notebook
    for block in fenced_blocks(doc):
        if block.runnable:
            run_block(block, places, tmp_path, namespace)
