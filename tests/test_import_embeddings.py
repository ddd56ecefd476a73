"""`xmodal import`: collections built from clip-retrieval or `xmodal embed` output, no images."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from xmodal.cli import main
from xmodal.index import Collection
from xmodal.pipelines.importing import clean_rows

DIM = 16  # the tiny CLIP model's


def write_part(root: Path, n: int, vectors: np.ndarray, meta_rows: int | None = None) -> list[str]:
    """img_emb/img_emb_N.npy + metadata/metadata_N.parquet (with extra columns); the paths."""
    (root / "img_emb").mkdir(parents=True, exist_ok=True)
    (root / "metadata").mkdir(exist_ok=True)
    np.save(root / "img_emb" / f"img_emb_{n}.npy", vectors)
    rows = len(vectors) if meta_rows is None else meta_rows
    paths = [f"/photos/{n}/{i}.jpg" for i in range(rows)]
    table = pa.table(
        {
            "image_path": paths,
            "caption": [f"photo {i} of part {n}" for i in range(rows)],
            "exif": [json.dumps({"row": i}) for i in range(rows)],
            "width": list(range(rows)),
        }
    )
    pq.write_table(table, root / "metadata" / f"metadata_{n}.parquet")
    return paths


def unit(rows: np.ndarray) -> np.ndarray:
    rows = rows.astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def random_parts(root: Path, sizes: list[int], seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Parts alternating float16 (normalised, as clip-retrieval writes) and float32 (scaled)."""
    rng = np.random.default_rng(seed)
    vectors, paths = [], []
    for n, size in enumerate(sizes):
        rows = rng.standard_normal((size, DIM)).astype(np.float32)
        rows = unit(rows).astype(np.float16) if n % 2 == 0 else rows * 3
        paths += write_part(root, n, rows)
        vectors.append(rows)
    (root / "text_emb").mkdir(exist_ok=True)
    np.save(root / "text_emb" / "text_emb_0.npy", np.ones((2, 3), np.float32))  # ignored
    return np.concatenate([unit(v) for v in vectors]), paths


def run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def import_argv(sources: list[Path], collection: Path, model: Path, *extra: str) -> list[str]:
    return ["import", *map(str, sources), "-c", str(collection), "--model", str(model), *extra]


def contents(directory: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    with Collection.open(directory) as col:
        ids, rows = col.raw_embeddings()
        return np.array(ids), np.array(rows, np.float32), col.get_records(ids)


def test_clean_rows_refuses_what_cannot_be_a_unit_vector_and_scales_the_rest():
    rows = np.array([[3, 4], [np.nan, 1], [0, 0], [0.6, 0.8], [np.inf, 0]], np.float32)
    clean = clean_rows(rows)
    assert clean.kept.tolist() == [0, 3]
    assert clean.refused == {1: "not-finite", 2: "zero-norm", 4: "not-finite"}
    assert clean.normalised == 1  # (0.6, 0.8) was a unit row already
    np.testing.assert_allclose(clean.vectors, [[0.6, 0.8], [0.6, 0.8]], rtol=1e-6)


def test_clip_retrieval_parts_import_with_exact_rows_records_and_search(
    tmp_path, tiny_clip_dir, capsys
):
    expected, paths = random_parts(tmp_path / "emb", [30, 25, 20])
    col = tmp_path / "col"
    code, out, err = run(import_argv([tmp_path / "emb"], col, tiny_clip_dir), capsys)
    assert code == 0, err
    assert out.splitlines()[-1].startswith(
        "parts 3: imported 3, already imported 0, failed 0; rows added 75, normalised 25, "
        "refused 0 in "
    )
    ids, stored, records = contents(col)
    assert [records[i].path for i in ids] == paths
    assert records[ids[31]].caption == "photo 1 of part 1"
    np.testing.assert_allclose(stored, expected, atol=1e-3)  # stored as float16
    queries = unit(np.random.default_rng(1).standard_normal((5, DIM)))
    with Collection.open(col) as reader:
        hits = reader.search(queries, k=10)
    exact = queries @ expected.T  # the index holds the float32 rows; raw ones are float16
    for row, found in zip(exact, hits, strict=True):
        assert [h.id for h in found] == ids[np.argsort(-row, kind="stable")[:10]].tolist()
        np.testing.assert_allclose([h.score for h in found], np.sort(row)[::-1][:10], atol=1e-5)


def test_importing_the_same_parts_again_adds_nothing(tmp_path, tiny_clip_dir, capsys):
    random_parts(tmp_path / "emb", [10, 10])
    col = tmp_path / "col"
    assert run(import_argv([tmp_path / "emb"], col, tiny_clip_dir), capsys)[0] == 0
    before = contents(col)
    code, out, _ = run(import_argv([tmp_path / "emb"], col, tiny_clip_dir, "--json"), capsys)
    report = json.loads(out)
    assert (code, report["already_imported"], report["imported"], report["rows_added"]) == (
        0, 2, 0, 0,
    )  # fmt: skip
    after = contents(col)
    assert after[0].tolist() == before[0].tolist() and after[2] == before[2]


def test_import_takes_the_index_choice_like_index_does(tmp_path, tiny_clip_dir, capsys):
    """--index / --memory-budget make a new collection so; on an existing one a different key
    rebuilds at the import's commit (``pipelines.opening``)."""
    random_parts(tmp_path / "emb", [40, 40])
    col = tmp_path / "col"
    argv = import_argv([tmp_path / "emb"], col, tiny_clip_dir)
    assert run([*argv, "--index", "flat", "--memory-budget", "1GB"], capsys)[0] == 0
    with Collection.open(col) as reader:
        info = reader.info()
    assert (info.index_key, info.memory_budget, info.count) == ("flat", 10**9, 80)
    random_parts(tmp_path / "more", [20], seed=5)
    more = import_argv([tmp_path / "more"], col, tiny_clip_dir, "--index", "IVF2,Flat")
    assert run(more, capsys)[0] == 0
    with Collection.open(col) as reader:
        info = reader.info()
    assert (info.index_key, info.index_factory, info.segments, info.count) == (
        "IVF2,Flat",
        "IVF2,Flat",
        1,
        80,
    )  # fmt: skip (its 20 rows replace /photos/0/0-19.jpg: same paths)
    code, _, err = run([*argv, "--index", "IVFx"], capsys)
    assert code != 0 and "unknown index key 'IVFx'" in err


def test_a_dimension_that_is_not_the_models_is_refused_before_a_collection_is_made(
    tmp_path, tiny_clip_dir, capsys
):
    write_part(tmp_path / "emb", 0, unit(np.ones((4, 32))).astype(np.float16))
    col = tmp_path / "col"
    code, out, err = run(import_argv([tmp_path / "emb"], col, tiny_clip_dir), capsys)
    part = tmp_path / "emb" / "img_emb" / "img_emb_0.npy"
    assert (code, out) == (1, "")
    assert err == (
        f"xmodal: error: {part.resolve()} holds rows of dim 32, but model "
        f"{tiny_clip_dir.name!r} makes dim 16; pass the model that computed these embeddings\n"
    )
    assert not col.exists()


def test_bad_rows_are_refused_alone_and_a_part_with_a_row_count_mismatch_fails_alone(
    tmp_path, tiny_clip_dir, capsys
):
    rows = unit(np.random.default_rng(2).standard_normal((8, DIM)))
    rows[3, 5] = np.nan
    rows[6] = 0.0
    write_part(tmp_path / "emb", 0, rows)
    write_part(tmp_path / "emb", 1, rows[:5], meta_rows=4)
    col = tmp_path / "col"
    code, out, err = run(import_argv([tmp_path / "emb"], col, tiny_clip_dir), capsys)
    first = (tmp_path / "emb" / "img_emb" / "img_emb_0.npy").resolve()
    second = (tmp_path / "emb" / "img_emb" / "img_emb_1.npy").resolve()
    meta = (tmp_path / "emb" / "metadata" / "metadata_1.parquet").resolve()
    assert code == 0
    assert err.splitlines() == [
        f"failed: {second} has 5 rows but {meta} has 4",
        f"refused: row 3 of {first} (not-finite)",
        f"refused: row 6 of {first} (zero-norm)",
    ]
    assert "parts 2: imported 1, already imported 0, failed 1; rows added 6, normalised 0, " \
        "refused 2 in " in out  # fmt: skip
    ids, _, records = contents(col)
    assert [records[i].path for i in ids] == [f"/photos/0/{i}.jpg" for i in (0, 1, 2, 4, 5, 7)]
    with Collection.open(col) as reader:
        entry = reader.ledger_for([f"{first}#3"])[f"{first}#3"]
        assert (entry.status, entry.reason) == ("skipped", "not-finite")
        assert reader.ledger_for([str(second)])[str(second)].status == "failed"


def test_embed_output_imports_and_searches_like_an_indexed_collection(
    tmp_path, tiny_clip_dir, captioned_photos, capsys
):
    from xmodal.encoders import load_encoder
    from xmodal.pipelines.search import Retriever

    photos = [str(p) for p in captioned_photos[:6]]
    model = ["--model", str(tiny_clip_dir), "--precision", "fp32", "--device", "cpu"]
    out = tmp_path / "features"
    assert main(["embed", *photos, "-o", str(out), "--workers", "0", *model]) == 0
    assert main(["import", str(out), "-c", str(tmp_path / "imported"), *model]) == 0
    assert main(["index", *photos, "-c", str(tmp_path / "indexed"), "--workers", "0", *model]) == 0
    capsys.readouterr()
    encoder = load_encoder(tiny_clip_dir, device="cpu", precision="fp32")
    for query in ("a photo of a dog", "city street at night"):
        found = [
            [(h.record.path, h.score) for h in Retriever(encoder, col).search(text=query, k=6)]
            for col in map(Collection.open, (tmp_path / "imported", tmp_path / "indexed"))
        ]
        assert [p for p, _ in found[0]] == [p for p, _ in found[1]]
        np.testing.assert_allclose([s for _, s in found[0]], [s for _, s in found[1]], atol=1e-3)


def test_embed_output_of_another_model_is_refused(tmp_path, tiny_clip_dir, capsys):
    out = tmp_path / "features"
    out.mkdir()
    np.save(out / "image_embeddings.npy", unit(np.ones((2, DIM))))
    pq.write_table(pa.table({"uri": ["a", "b"]}), out / "image_metadata.parquet")
    model = {"model_id": "other", "revision": "local-0000"}
    files = ["image_embeddings.npy", "image_metadata.parquet"]
    manifest = {
        "model": model,
        "representation": "embedding",
        "outputs": {"image": {"files": files}},
    }
    (out / "embed.json").write_text(json.dumps(manifest))
    code, _, err = run(import_argv([out], tmp_path / "col", tiny_clip_dir), capsys)
    assert code == 1
    assert err.startswith(
        f"xmodal: error: {out.resolve()} was embedded with model 'other' (revision local-0000), "
        f"but --model is {tiny_clip_dir.name!r} (revision local-"
    )


def _interrupted_committed(col: Path) -> bool:
    """A chunk that ends inside a part has been committed (its ledger row says where)."""
    if not (col / "manifest.json").is_file():
        return False
    try:
        with Collection.open(col) as reader:
            return any(e.reason == "interrupted" for e in reader.ledger(status="failed"))
    except Exception:  # a generation switched under the reader: look again
        return False


def test_an_import_killed_after_a_commit_resumes_to_the_clean_result(
    tmp_path, tiny_clip_dir, capsys
):
    _, paths = random_parts(tmp_path / "emb", [300] * 8, seed=3)
    args = ["--commit-every", "40", "--device", "cpu"]
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    assert run(import_argv([tmp_path / "emb"], clean, tiny_clip_dir, *args), capsys)[0] == 0
    command = [sys.executable, "-m", "xmodal.cli"]
    child = subprocess.Popen(
        [*command, *import_argv([tmp_path / "emb"], killed, tiny_clip_dir, *args)]
    )
    deadline = time.monotonic() + 120
    while not _interrupted_committed(killed) and child.poll() is None:
        assert time.monotonic() < deadline, "no commit observed in 120 s"
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL
    with Collection.open(killed) as reader:
        assert not reader.last_run().finished and 0 < reader.count < len(paths)
    code, out, _ = run(import_argv([tmp_path / "emb"], killed, tiny_clip_dir, *args), capsys)
    assert code == 0 and out.startswith("resumed interrupted run 1\n")
    assert "parts 8: imported 8, already imported 0, failed 0; rows added 2400" in out
    for got, want in zip(contents(killed), contents(clean), strict=True):
        assert got.tolist() == want.tolist() if isinstance(got, np.ndarray) else got == want
    with Collection.open(killed) as a, Collection.open(clean) as b:
        assert a.ledger() == b.ledger()
        assert a.last_run().counts == b.last_run().counts
