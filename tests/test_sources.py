"""Sources end to end: every kind indexed into one collection, the CLI's source options, and
stored path text."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from source_helpers import make_shard, png_bytes, write_table

from xmodal.errors import XmodalError
from xmodal.images import load_image
from xmodal.pipelines.maintenance import prune_missing, remove_paths
from xmodal.pipelines.sources import Span, locate


def test_every_source_kind_indexes_end_to_end_with_non_utf8_names(
    tmp_path: Path, tiny_clip_dir: Path
) -> None:
    from xmodal.encoders import load_encoder
    from xmodal.index import Collection
    from xmodal.index.filters import Clause, Filter
    from xmodal.pipelines.indexing import IndexConfig, index_paths
    from xmodal.pipelines.search import Retriever

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
        retriever = Retriever(encoder, col)
        for uri, data in [(member, png_bytes(2)), (odd_uri, png_bytes(0))]:
            item_id = next(i for i, r in records.items() if r.path == uri)
            shown = retriever.load_thumbnail(item_id)  # the app shows tar members and odd names
            assert np.array_equal(np.asarray(shown), np.asarray(load_image(data)))
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


def test_locate_finds_a_member_in_its_shard_and_notices_a_rewrite(tmp_path: Path) -> None:
    shard = make_shard(tmp_path / "s.tar", [("a/0.png", png_bytes(0)), ("a/1.png", png_bytes(1))])
    base = str(shard.resolve())
    span = locate(f"{base}::a/1.png")
    assert isinstance(span, Span) and span.read() == png_bytes(1)
    assert locate(str(tmp_path / "plain.jpg")) == str(tmp_path / "plain.jpg")
    make_shard(shard, [("a/0.png", png_bytes(0))])  # rewritten without the member
    os.utime(shard, ns=(1, 1))  # a new version even within the same clock tick
    with pytest.raises(XmodalError, match=r"a/1.png is no longer a member of .*s.tar"):
        locate(f"{base}::a/1.png")
