"""Sources: folders walked recursively, and the policy (hidden entries, links) that governs them."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from shared_helpers import ODD_IMAGES, shared
from source_helpers import PREPARER, png_bytes, relative, traced_peaks

from xmodal.errors import XmodalError
from xmodal.pipelines.maintenance import file_hash
from xmodal.pipelines.sources import Item, Skipped, SourcePolicy, iter_inputs, iter_items
from xmodal.pipelines.workers import prepare_one


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


def test_every_entry_of_a_folder_is_accounted_for(tmp_path: Path) -> None:
    (tmp_path / ".cache" / "deep").mkdir(parents=True)
    for name in [".cache/a.jpg", ".cache/deep/b.jpg", ".dot.jpg", "notes.md", "p.jpg", "q.png"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "p.txt").write_text("sidecar of p")  # consumed as a caption, not an input
    found = list(iter_inputs([tmp_path]))
    assert relative(found, tmp_path) == [
        ("hidden", ".cache"),  # counted once, not walked
        ("hidden", ".dot.jpg"),
        ("not-an-image", "notes.md"),
        ("item", "p.jpg"),
        ("item", "q.png"),
    ]
    assert found[3].caption == "sidecar of p"
    with_hidden = relative(
        list(iter_inputs([tmp_path], SourcePolicy(include_hidden=True))), tmp_path
    )
    assert ("item", ".cache/deep/b.jpg") in with_hidden and ("item", ".dot.jpg") in with_hidden


def test_a_missing_source_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "ok.jpg").write_bytes(b"x")
    with pytest.raises(XmodalError, match="no such file or folder: .*nowhere"):
        list(iter_items([tmp_path / "nowhere"]))
    checked_first = iter_inputs([tmp_path / "ok.jpg", tmp_path / "nowhere"])
    with pytest.raises(XmodalError, match="nowhere"):
        next(checked_first)  # every argument is checked before the first input


def test_symlinked_folder_loops_terminate(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "img.jpg").write_bytes(b"x")
    (tmp_path / "a" / "loop").symlink_to(tmp_path, target_is_directory=True)
    assert len(list(iter_items([tmp_path]))) == 1
    assert relative(list(iter_inputs([tmp_path])), tmp_path) == [
        ("item", "a/img.jpg"),
        ("link-inside-root", "a/loop"),
    ]


def test_links_out_of_the_root_are_skipped_unless_followed(tmp_path: Path) -> None:
    outside, root = tmp_path / "outside", tmp_path / "root"
    (outside / "sub").mkdir(parents=True)
    root.mkdir()
    (outside / "far.jpg").write_bytes(b"x")
    (outside / "sub" / "back").symlink_to(outside, target_is_directory=True)  # a loop out there
    (outside / "sub" / "home").symlink_to(root, target_is_directory=True)  # and one back in
    (root / "own.jpg").write_bytes(b"y")
    (root / "alias.jpg").symlink_to(root / "own.jpg")
    (root / "far.jpg").symlink_to(outside / "far.jpg")
    (root / "ext").symlink_to(outside, target_is_directory=True)
    (root / "gone.jpg").symlink_to(root / "deleted.jpg")
    assert relative(list(iter_inputs([root])), root) == [
        ("item", "alias.jpg"),  # a link inside the root: an input under its own name
        ("outside-root", "ext"),
        ("outside-root", "far.jpg"),
        ("item", "gone.jpg"),  # dangling: decoding says why it fails
        ("item", "own.jpg"),
    ]
    followed = relative(list(iter_inputs([root], SourcePolicy(follow_links=True))), root)
    assert followed == [
        ("item", "alias.jpg"),
        ("item", "far.jpg"),
        ("item", "gone.jpg"),
        ("item", "own.jpg"),
        ("item", "ext/far.jpg"),
        ("already-walked", "ext/sub/back"),
        ("link-inside-root", "ext/sub/home"),
    ]
    gone = next(i for i in iter_items([root]) if i.uri.endswith("gone.jpg"))
    failed = prepare_one(gone.source, PREPARER)
    assert failed.pixels is None and failed.reason == "unreadable"
    assert "no such file" in failed.message


def test_zero_byte_and_unopenable_files_become_failures(tmp_path: Path) -> None:
    (tmp_path / "empty.jpg").write_bytes(b"")
    os.mkfifo(tmp_path / "pipe.jpg")  # stat works, reading would block: never opened
    (tmp_path / "good.png").write_bytes(png_bytes())
    items = list(iter_items([tmp_path]))
    assert [Path(i.uri).name for i in items] == ["empty.jpg", "good.png", "pipe.jpg"]
    prepared = {Path(i.uri).name: prepare_one(i.source, PREPARER) for i in items}
    assert prepared["empty.jpg"].reason == "empty"
    assert prepared["pipe.jpg"].reason == "unreadable"
    assert "not a regular file" in prepared["pipe.jpg"].message
    assert prepared["good.png"].pixels.shape == (3, 8, 8)
    assert file_hash(tmp_path / "pipe.jpg") is None


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads chmod-000 files: nothing to refuse")
def test_a_file_without_read_permission_becomes_a_failure(tmp_path: Path) -> None:
    locked = tmp_path / "locked.png"
    locked.write_bytes(png_bytes())
    locked.chmod(0)
    try:
        (item,) = iter_items([tmp_path])
        failed = prepare_one(item.source, PREPARER)
        assert failed.reason == "unreadable" and "permission denied" in failed.message
    finally:
        locked.chmod(0o600)


def test_a_folder_that_cannot_be_listed_is_accounted_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / "x.jpg").write_bytes(b"x")
    (tmp_path / "open.jpg").write_bytes(b"x")
    scandir = os.scandir

    def refusing(path):  # what chmod 000 does to a non-root user
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refusing)
    assert relative(list(iter_inputs([tmp_path])), tmp_path) == [
        ("item", "open.jpg"),
        ("unreadable-folder", "locked"),
    ]


def test_the_odd_images_folder_is_accounted_for_completely() -> None:
    shared(ODD_IMAGES)
    found = list(iter_inputs([ODD_IMAGES]))
    names = [Path(x.uri).name for x in found]
    assert sorted(names) == sorted(p.name for p in ODD_IMAGES.iterdir())  # each exactly once
    manifest = [json.loads(line) for line in (ODD_IMAGES / "manifest.jsonl").open()]
    items = {Path(x.uri).name for x in found if isinstance(x, Item)}
    assert items == {row["file"] for row in manifest}
    assert [(Path(x.uri).name, x.reason) for x in found if isinstance(x, Skipped)] == [
        ("manifest.jsonl", "not-an-image")
    ]


def test_non_utf8_file_names_are_walked_and_decoded(tmp_path: Path) -> None:
    raw = os.path.join(os.fsencode(tmp_path), b"caf\xe9.png")
    with open(raw, "wb") as handle:
        handle.write(png_bytes())
    (item,) = iter_items([tmp_path])
    assert item.uri == os.fsdecode(raw) and "\udce9" in item.uri
    assert prepare_one(item.source, PREPARER).pixels is not None
    assert file_hash(item.uri) == hashlib.blake2b(png_bytes(), digest_size=16).hexdigest()


def test_folders_stream_one_directory_at_a_time(tmp_path: Path) -> None:
    for folder in range(20):
        (tmp_path / f"d{folder:02d}").mkdir()
        for i in range(200):
            (tmp_path / f"d{folder:02d}" / f"img_{i:04d}_with_a_longish_name.jpg").touch()
    count, streamed, listed = traced_peaks([tmp_path])
    assert count == 4000
    assert listed > 6 * streamed  # one folder's 200 entries at a time, not all 4000 items


def test_a_large_folder_listing_keeps_names_not_direntries(tmp_path: Path) -> None:
    # A folder of a million photos is listed whole (sorted), so each entry's cost counts: a
    # DirEntry per file held ~350 bytes; names alone hold well under half of that.
    files = 20_000
    for i in range(files):
        (tmp_path / f"IMG_{i:07d}.jpg").touch()
    count, streamed, _ = traced_peaks([tmp_path])
    assert count == files
    assert streamed / files < 150
