"""The CLI end to end: index -> search (text, image, --json) -> info, errors as one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xmodal.cli import main
from xmodal.encoders import load_encoder
from xmodal.index import Collection


@pytest.fixture()
def photo_folder(tmp_path: Path, captioned_photos: list[Path]) -> Path:
    """A folder of 20 real photos, one nested, one with a caption, plus two bad files."""
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    for i, photo in enumerate(captioned_photos[:20]):
        target = folder / ("nested" if i % 5 == 0 else "") / photo.name
        shutil.copy(photo, target)
    (folder / captioned_photos[1].with_suffix(".txt").name).write_text("a captioned photo\n")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.png").write_text("this is not an image")
    return folder


# Indexing and querying in fp32, for the tests that compare the CLI's scores with numbers.
EXACT = ("--device", "cpu", "--precision", "fp32")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_index_search_json_and_rerun(
    photo_folder: Path, tmp_path: Path, tiny_clip_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    col = tmp_path / "col"
    code, out, err = run(
        capsys, "index", photo_folder, "-c", col, "--model", tiny_clip_dir, "--workers", "1", *EXACT
    )
    assert code == 0, err
    assert "seen 22: indexed 20, unchanged 0, failed 2" in out and "images/s" in out
    assert (
        "empty.jpg" in err and "[empty]" in err and "notes.png" in err and "[not-an-image]" in err
    )

    code, out, err = run(capsys, "search", "-c", col, "a photo", "-k", "5", "--json", *EXACT)
    assert code == 0, err
    results = json.loads(out)["results"]
    assert len(results) == 5
    assert set(results[0]) == {"id", "score", "path", "caption", "tags"}
    assert results[0]["tags"] == []  # never tagged
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
    assert {r["caption"] for r in results} <= {None, "a captioned photo"}

    # The scores are the encoder's own cosine similarities, brute force.
    encoder = load_encoder(tiny_clip_dir, device="cpu", precision="fp32")
    query = encoder.encode_texts(["a photo"])[0]
    with Collection.open(col) as collection:
        stored = collection.get_records(range(100))
    paths = {r.path: i for i, r in stored.items()}
    for record in stored.values():  # full image sizes, not the sizes of reduced decodes
        assert (record.width, record.height) == Image.open(record.path).size
    vectors = encoder.encode_images(sorted(paths))
    expected = sorted((vectors @ query).tolist(), reverse=True)[:5]
    np.testing.assert_allclose([r["score"] for r in results], expected, atol=1e-4)

    code, out, _ = run(capsys, "index", photo_folder, "-c", col, "--json", "--workers", "0")
    summary = json.loads(out)
    assert (summary["seen"], summary["indexed"], summary["unchanged"], summary["failed"]) == (
        22,
        0,
        20,
        2,
    )
    assert {f["reason"] for f in summary["failures"]} == {"empty", "not-an-image"}


def test_image_query_finds_the_same_photo(
    photo_folder: Path, tmp_path: Path, tiny_clip_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    col = tmp_path / "col"
    argv = ["index", photo_folder, "-c", col, "--model", tiny_clip_dir, "--workers", "0", *EXACT]
    assert run(capsys, *argv)[0] == 0
    query = next(photo_folder.glob("*.jpg"))
    code, out, _ = run(capsys, "search", "-c", col, "--image", query, "-k", "1", "--json", *EXACT)
    assert code == 0
    hit = json.loads(out)["results"][0]
    assert Path(hit["path"]) == query.resolve() and hit["score"] == pytest.approx(1.0, abs=1e-4)


def test_info_and_errors_are_one_line(
    photo_folder: Path, tmp_path: Path, tiny_clip_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    col = tmp_path / "col"
    run(capsys, "index", photo_folder, "-c", col, "--model", tiny_clip_dir, "--workers", "0")
    code, out, _ = run(capsys, "info", "-c", col, "--json")
    info = json.loads(out)
    assert (
        code == 0 and info["count"] == 20 and info["encoder_spec"]["model_id"] == tiny_clip_dir.name
    )
    code, out, _ = run(capsys, "info", "-c", col)
    assert code == 0 and "recall@10   1.000 (exact search)" in out  # Flat: nothing sampled
    assert "seen 22 = indexed 20 + unchanged 0 + failed 2 + skipped 0" in out  # 2 broken files

    code, out, err = run(capsys, "search", "-c", tmp_path / "missing", "dog")
    assert code == 1 and err.startswith("xmodal: error: not an xmodal collection")
    code, _, err = run(capsys, "search", "-c", col)
    assert code == 1 and "empty query" in err
    code, _, err = run(capsys, "index", tmp_path / "nowhere", "-c", col)
    assert code == 1 and "no such file or folder" in err
    code, _, err = run(capsys, "search", "-c", col, "dog", "--model", "xmodal-test/uncached")
    assert code == 1 and "--model /path/to/model-dir" in err and err.count("\n") == 1


def test_demo_model_retrieves_the_right_class(
    demo_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from xmodal.demo.run import DemoOptions, build_demo

    result, retriever = build_demo(
        DemoOptions(directory=tmp_path / "demo", model_dir=demo_model_dir, n_images=360)
    )
    assert result.report.indexed == 360 and result.report.failed == 0
    assert result.precision_at_k >= 0.9
    hits = retriever.search("a green square", k=5)
    assert all("green square" in (h.record.caption or "") for h in hits)
    code, out, _ = run(
        capsys, "search", "-c", result.collection_dir, "a small red circle", "-k", "3", "--json"
    )
    assert code == 0
    assert all("small red circle" in r["caption"] for r in json.loads(out)["results"])


def test_reindex_rebuilds_from_stored_embeddings_without_the_model(
    photo_folder: Path, tmp_path: Path, tiny_clip_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    col = tmp_path / "col"
    run(capsys, "index", photo_folder, "-c", col, "--model", tiny_clip_dir, "--workers", "0")
    query = next(photo_folder.glob("*.jpg"))
    before = json.loads(run(capsys, "search", "-c", col, "--image", query, "--json")[1])
    shutil.move(tiny_clip_dir, tmp_path / "model-away")  # reindex must not need it
    try:
        code, out, err = run(capsys, "reindex", "-c", col, "--index", "HNSW16", "--json")
    finally:
        shutil.move(tmp_path / "model-away", tiny_clip_dir)
    assert code == 0, err
    info = json.loads(out)
    assert info["index_factory"] == "HNSW16" and info["count"] == 20
    assert info["recall_at_10"] >= 0.95 and "efSearch" in info["search_params"]
    after = json.loads(run(capsys, "search", "-c", col, "--image", query, "--json")[1])
    assert [r["path"] for r in after["results"]][:3] == [r["path"] for r in before["results"]][:3]
    code, _, err = run(capsys, "reindex", "-c", tmp_path / "missing")
    assert code == 1 and "not an xmodal collection" in err
