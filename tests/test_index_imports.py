"""xmodal.index stays model-free: numpy, faiss, sqlite3 and the standard library only."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import xmodal.index

ALLOWED_THIRD_PARTY = {"numpy", "faiss"}
ALLOWED_XMODAL = ("xmodal.errors", "xmodal.index")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_index_imports_only_numpy_faiss_and_stdlib():
    package = Path(xmodal.index.__file__).parent
    offenders = {}
    for path in sorted(package.glob("*.py")):
        for name in _imports(path):
            top = name.split(".")[0]
            if name == "__future__" or top in sys.stdlib_module_names:
                continue
            if top in ALLOWED_THIRD_PARTY or name.startswith(ALLOWED_XMODAL):
                continue
            offenders.setdefault(path.name, []).append(name)
    assert offenders == {}
