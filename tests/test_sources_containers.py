"""Sources: @file lists, tar shards and tables (Parquet, CSV, JSON Lines)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest
from source_helpers import PREPARER, make_shard, png_bytes, relative, traced_peaks, write_table

from xmodal.errors import XmodalError
from xmodal.pipelines.maintenance import file_hash
from xmodal.pipelines.sources import Item, Skipped, SourcePolicy, Span, iter_inputs, iter_items
from xmodal.pipelines.workers import prepare_one


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
