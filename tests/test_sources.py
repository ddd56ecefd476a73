"""Sources: folders, files, @lists, tar shards and tables, and the policy that governs them."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import SHARED_DATA
from xmodal.encoders.preprocess import PixelPipeline, Preparer
from xmodal.errors import XmodalError
from xmodal.pipelines.maintenance import file_hash, prune_missing, remove_paths
from xmodal.pipelines.sources import Item, Skipped, SourcePolicy, Span, iter_inputs, iter_items
from xmodal.pipelines.workers import prepare_one

ODD_IMAGES = SHARED_DATA / "odd-images"
PREPARER = Preparer(PixelPipeline(3, 8, None, (8, 8), (0.5,) * 3, (0.5,) * 3))


def png_bytes(seed: int = 0, size: tuple[int, int] = (12, 10)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def relative(found: list[Item | Skipped], root: Path) -> list[tuple[str, str]]:
    """(kind, path relative to root) of each input: kind is 'item' or the skip reason."""
    real = str(root.resolve())
    return [
        ("item" if isinstance(x, Item) else x.reason, os.path.relpath(x.uri, real)) for x in found
    ]


# ------------------------------------------------------------------------------------ folders
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
    if not ODD_IMAGES.is_dir():
        pytest.skip(f"odd images not found at {ODD_IMAGES}")
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


# -------------------------------------------------------------------------------------- lists
def test_a_file_list_names_files_and_folders(tmp_path: Path) -> None:
    (tmp_path / "imgs" / "sub").mkdir(parents=True)
    (tmp_path / "imgs" / "a.jpg").write_bytes(b"a")
    (tmp_path / "imgs" / "sub" / "b.jpg").write_bytes(b"bb")
    (tmp_path / "imgs" / "a.txt").write_text("caption a")
    listing = tmp_path / "lists" / "todo.txt"
    listing.parent.mkdir()
    listing.write_bytes(
        b"# photos to index\n\n../imgs/a.jpg\r\n  ../imgs/sub  \n../imgs/missing.jpg\n"
        b"https://example.com/x.jpg\n" + os.fsencode(str(tmp_path)) + b"/imgs/caf\xe9.jpg\n"
    )
    found = list(iter_inputs([f"@{listing}"]))
    assert relative(found, tmp_path) == [
        ("item", "imgs/a.jpg"),
        ("item", "imgs/sub/b.jpg"),
        ("item", "imgs/missing.jpg"),
        ("not-local", os.path.relpath("https://example.com/x.jpg", tmp_path.resolve())),
        ("item", "imgs/caf\udce9.jpg"),
    ]
    assert found[0].caption == "caption a" and found[1].size == 2
    assert found[2].size == 0  # missing: an input that fails in decoding, not a crash
    assert prepare_one(found[2].source, PREPARER).reason == "unreadable"
    with pytest.raises(XmodalError, match="no such file list: .*nolist.txt"):
        list(iter_inputs([f"@{tmp_path / 'nolist.txt'}"]))


# --------------------------------------------------------------------------------- tar shards
def make_shard(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as shard:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            shard.addfile(info, io.BytesIO(data))
    return path


class _Boom:
    """Unpickling this writes a marker file: proof that a member was unpickled."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "unpickled"))


def test_tar_shards_yield_members_with_captions_and_spans(tmp_path: Path) -> None:
    import pickle

    marker = tmp_path / "UNPICKLED"
    members = [
        ("s/000.jpg", png_bytes(0)),
        ("s/000.txt", b"a caption from txt\n"),
        ("s/001.png", png_bytes(1)),
        ("s/001.json", json.dumps({"caption": "from json", "w": 3}).encode()),
        ("s/001.pyd", pickle.dumps(_Boom(str(marker)))),
        ("s/002.jpg", b"\xff" * 4000),
        ("s/002.pickle", pickle.dumps(_Boom(str(marker)))),
        ("s/003.json", b'{"text": "no image here"}'),
        ("s/004.seg.png", png_bytes(4)),
        ("s/004.caption", b"from .caption"),
    ]
    shard = make_shard(tmp_path / "shard-000.tar", members)
    found = list(iter_inputs([shard], SourcePolicy(max_member_bytes=3000)))
    base = str(shard.resolve())
    assert [(type(x).__name__, x.uri) for x in found] == [
        ("Item", f"{base}::s/000.jpg"),
        ("Item", f"{base}::s/001.png"),
        ("Skipped", f"{base}::s/002.jpg"),
        ("Skipped", f"{base}::s/003"),
        ("Item", f"{base}::s/004.seg.png"),
    ]
    assert [x.reason for x in found if isinstance(x, Skipped)] == ["too-large", "no-image"]
    items = [x for x in found if isinstance(x, Item)]
    assert [i.caption for i in items] == ["a caption from txt", "from json", "from .caption"]
    for item, (_, data) in zip(items, [members[0], members[2], members[8]], strict=True):
        assert isinstance(item.source, Span) and item.source.read() == data
        assert item.size == len(data)
        assert file_hash(item.source) == hashlib.blake2b(data, digest_size=16).hexdigest()
        prepared = prepare_one(item.source, PREPARER)
        assert prepared.pixels is not None and prepared.uri == item.uri
    assert not marker.exists()  # pickled members were never loaded


def test_a_broken_member_fails_with_its_name(tmp_path: Path) -> None:
    shard = make_shard(tmp_path / "s.tar", [("x/bad.jpg", b"not a jpeg at all")])
    (item,) = iter_items([shard])
    failed = prepare_one(item.source, PREPARER)
    assert failed.pixels is None and failed.reason == "not-an-image"
    assert failed.message.startswith(f"{shard.resolve()}::x/bad.jpg: ")


def test_compressed_or_broken_shards_are_refused_up_front(tmp_path: Path) -> None:
    gz = tmp_path / "s.tar.gz"
    with tarfile.open(gz, "w:gz") as shard:
        info = tarfile.TarInfo("a.jpg")
        info.size = 1
        shard.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(XmodalError, match="compressed tar shards .*decompress it first"):
        list(iter_inputs([gz]))
    fake = tmp_path / "fake.tar"
    fake.write_bytes(b"hello" * 200)
    with pytest.raises(XmodalError, match="fake.tar: not a readable uncompressed tar shard"):
        list(iter_inputs([fake]))


# ------------------------------------------------------------------------------------- tables
def write_table(path: Path, rows: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    elif path.suffix == ".csv":
        pcsv.write_csv(pa.Table.from_pylist(rows), path)
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_tables_give_paths_and_captions(tmp_path: Path, suffix: str) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.jpg").write_bytes(b"aaa")
    rows = [
        {"id": 1, "Image": "img/a.jpg", "Caption": "first"},
        {"id": 2, "Image": str(tmp_path / "img" / "gone.jpg"), "Caption": ""},
        {"id": 3, "Image": "", "Caption": "no path"},
        {"id": 4, "Image": "https://example.com/c.jpg", "Caption": "remote"},
    ]
    table = write_table(tmp_path / f"meta{suffix}", rows)
    found = list(iter_inputs([table]))
    assert [(type(x).__name__, getattr(x, "reason", None)) for x in found] == [
        ("Item", None),
        ("Item", None),
        ("Skipped", "no-path"),
        ("Skipped", "not-local"),
    ]
    assert found[0].uri == str(tmp_path.resolve() / "img" / "a.jpg") and found[0].size == 3
    assert found[0].caption == "first" and found[1].caption is None and found[1].size == 0
    assert found[2].uri == f"{table.resolve()}#3"


def test_table_columns_can_be_named_and_are_checked(tmp_path: Path) -> None:
    rows = [{"where": "a.jpg", "label": "x", "path": "b.jpg", "caption": "y"}]
    table = write_table(tmp_path / "t.parquet", rows)
    (auto,) = iter_inputs([table])
    assert Path(auto.uri).name == "b.jpg" and auto.caption == "y"
    policy = SourcePolicy(path_column="where", caption_column="label")
    (named,) = iter_inputs([table], policy)
    assert Path(named.uri).name == "a.jpg" and named.caption == "x"
    with pytest.raises(XmodalError, match="no column 'nope' in the table; it has where, label"):
        list(iter_inputs([table], SourcePolicy(caption_column="nope")))
    bare = write_table(tmp_path / "bare.csv", [{"name": "a.jpg"}])
    with pytest.raises(XmodalError, match="bare.csv has no path column .*--path-column"):
        list(iter_inputs([bare]))


def test_a_binary_parquet_column_holds_non_utf8_names(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    raw = os.path.join(os.fsencode(tmp_path), b"caf\xe9.png")
    with open(raw, "wb") as handle:
        handle.write(png_bytes())
    pq.write_table(
        pa.table({"path": pa.array([b"caf\xe9.png"], pa.binary())}), tmp_path / "t.parquet"
    )
    (item,) = iter_items([tmp_path / "t.parquet"])
    assert item.uri == os.fsdecode(raw) and item.size == len(png_bytes())


def traced_peaks(sources: list) -> tuple[int, int, int]:
    """Inputs counted, and the peak traced memory of streaming them vs listing them all."""
    import tracemalloc

    peaks = []
    for consume in (lambda found: sum(1 for _ in found), lambda found: len(list(found))):
        tracemalloc.start()
        try:
            count = consume(iter_inputs(sources))
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    return count, peaks[0], peaks[1]


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_tables_stream_with_flat_memory(tmp_path: Path, suffix: str) -> None:
    rows = 20_000
    names = [f"photos/{i // 1000:03d}/img_{i:07d}_with_a_longish_name.jpg" for i in range(rows)]
    caption = "a fairly ordinary caption of about sixty characters in all"
    table = write_table(tmp_path / f"big{suffix}", [{"path": n, "caption": caption} for n in names])
    count, streamed, listed = traced_peaks([table])
    assert count == rows
    # Streaming holds one batch of rows (~0.9 MiB measured for Parquet, less for CSV and JSON
    # Lines); holding all 20k Items costs about 6 MiB. tracemalloc sees Python objects only.
    assert streamed < 1.5 * 2**20
    assert listed > 4 * streamed


@pytest.mark.slow
def test_folders_stream_one_directory_at_a_time(tmp_path: Path) -> None:
    for folder in range(20):
        (tmp_path / f"d{folder:02d}").mkdir()
        for i in range(200):
            (tmp_path / f"d{folder:02d}" / f"img_{i:04d}_with_a_longish_name.jpg").touch()
    count, streamed, listed = traced_peaks([tmp_path])
    assert count == 4000
    assert listed > 6 * streamed  # one folder's 200 entries at a time, not all 4000 items


# --------------------------------------------------------------------------------- end to end
def test_every_source_kind_indexes_end_to_end_with_non_utf8_names(
    tmp_path: Path, tiny_clip_dir: Path
) -> None:
    from xmodal.encoders import load_encoder
    from xmodal.index import Collection
    from xmodal.index.filters import Clause, Filter
    from xmodal.pipelines.indexing import IndexConfig, index_paths

    photos = tmp_path / "photos"
    photos.mkdir()
    odd = os.path.join(os.fsencode(photos), b"caf\xe9.png")
    with open(odd, "wb") as handle:
        handle.write(png_bytes(0))
    (photos / "plain.png").write_bytes(png_bytes(1))
    broken = os.path.join(os.fsencode(photos), b"\xff-broken.png")
    with open(broken, "wb") as handle:
        handle.write(b"not a png")
    shard = make_shard(tmp_path / "s.tar", [("k/0.png", png_bytes(2)), ("k/0.txt", b"tarred")])
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "t.png").write_bytes(png_bytes(3))
    table = write_table(tmp_path / "t.csv", [{"path": "more/t.png", "text": "tabled"}])
    encoder = load_encoder(tiny_clip_dir, device="cpu")
    config = IndexConfig(batch_size=2, workers=0, progress=False)
    with Collection.create(tmp_path / "c", encoder.spec.to_dict()) as col:
        report = index_paths(encoder, col, [str(photos), str(shard)], config)
        assert (report.seen, report.indexed, report.failed) == (4, 3, 1)
        assert index_paths(encoder, col, [str(table)], config).seen == 1
    odd_uri, member = os.fsdecode(odd), f"{shard.resolve()}::k/0.png"
    with Collection.open(tmp_path / "c") as col:
        ids, _ = col.raw_embeddings()
        records = col.get_records(ids)
        by_path = {r.path: r for r in records.values()}
        tabled = str((tmp_path / "more" / "t.png").resolve())
        assert set(by_path) == {odd_uri, member, tabled, str((photos / "plain.png").resolve())}
        assert by_path[member].caption == "tarred" and by_path[tabled].caption == "tabled"
        (failed,) = col.ledger(status="failed")
        assert failed.uri == os.fsdecode(broken) and failed.message.startswith(failed.uri)
        assert set(col.ledger_for([odd_uri, failed.uri])) == {odd_uri, failed.uri}
        (hit,) = col.search(encoder.encode_images([odd_uri]), k=1)[0]
        assert hit.record.path == odd_uri and hit.score > 0.99
        under = col.ids_where(Filter((Clause("path", "^=", str(photos.resolve()) + "/"),)))
        assert sorted(records[int(i)].path for i in under) == sorted(
            [odd_uri, str((photos / "plain.png").resolve())]
        )
    with Collection.open(tmp_path / "c", writable=True) as col:
        assert prune_missing(col, [shard]) == 0  # a member exists while its shard does
        shard.unlink()
        assert prune_missing(col, [shard]) == 1
        assert remove_paths(col, [photos]) == 2  # the odd name matched as a folder prefix
        col.commit()
        assert {r.path for r in col.get_records(col.raw_embeddings()[0]).values()} == {tabled}


def test_the_index_command_takes_the_source_options() -> None:
    from xmodal.cli.parser import build_parser

    args = build_parser().parse_args(
        ["index", "@list.txt", "-c", "c", "--hidden", "--follow-links", "--path-column", "file"]
        + ["--caption-column", "alt"]
    )
    assert (args.sources, args.hidden, args.follow_links) == (["@list.txt"], True, True)
    assert (args.path_column, args.caption_column) == ("file", "alt")
    defaults = build_parser().parse_args(["index", "x", "-c", "c"])
    assert not defaults.hidden and not defaults.follow_links and defaults.path_column is None


def test_stored_path_text_round_trips_every_string() -> None:
    from xmodal.index.pathtext import from_db, to_db

    odd = ["plain/a.jpg", "caf\udce9.jpg", "é\udc80\udcff", "\U0010ff7f\U0010ff80x", "\U0010ffff"]
    for text in odd:
        stored = to_db(text)
        stored.encode("utf-8")  # what SQLite needs
        assert from_db(stored) == text
    assert to_db("plain/a.jpg") == "plain/a.jpg"
    assert len(to_db("/p/caf\udce9/x.jpg")) == len("/p/caf\udce9/x.jpg")  # prefixes still match
    assert len({to_db(t) for t in odd}) == len(odd)
