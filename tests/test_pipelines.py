"""Pipeline pieces that need no model: sources, worker policy, the prepare stream."""

from __future__ import annotations

from pathlib import Path

import pytest

from xmodal.errors import XmodalError
from xmodal.pipelines import workers
from xmodal.pipelines.sources import iter_items


def test_decoding_workers_leave_cpu_cores_to_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workers, "usable_cores", lambda: 2)
    assert workers.default_workers("cpu") == 0
    assert workers.default_workers("cuda") == 2
    monkeypatch.setattr(workers, "usable_cores", lambda: 32)
    assert workers.default_workers("cpu") == 8
    assert workers.default_workers("cuda:0") == 16


def test_folders_are_walked_recursively_in_a_stable_order(tmp_path: Path) -> None:
    (tmp_path / "b" / "deeper").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    for name in ["b/deeper/z.jpg", "b/a.PNG", "c.webp", ".hidden/x.jpg", ".dot.jpg", "notes.txt"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "c.txt").write_text("a caption\n")
    items = list(iter_items([tmp_path]))
    names = [Path(i.uri).relative_to(tmp_path.resolve()).as_posix() for i in items]
    assert names == ["c.webp", "b/a.PNG", "b/deeper/z.jpg"]
    assert items[0].caption == "a caption" and items[1].caption is None
    assert all(i.size == 1 for i in items)
    explicit = list(iter_items([tmp_path / ".dot.jpg"]))
    assert len(explicit) == 1  # a file named explicitly is always taken


def test_a_missing_source_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(XmodalError, match="no such file or folder: .*nowhere"):
        list(iter_items([tmp_path / "nowhere"]))


def test_symlinked_folder_loops_terminate(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "img.jpg").write_bytes(b"x")
    (tmp_path / "a" / "loop").symlink_to(tmp_path, target_is_directory=True)
    assert len(list(iter_items([tmp_path]))) == 1
