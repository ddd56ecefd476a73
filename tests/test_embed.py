"""Representations against a manual transformers forward, and the `xmodal embed` outputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from xmodal.cli import main
from xmodal.errors import XmodalError
from xmodal.index.projection import Projection

TEXTS = ["a red circle", "blue", "a large green triangle on a dark background"]


def _images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.fixture(scope="module", params=["clip", "siglip"])
def family(request, tiny_clip_dir, tiny_siglip_dir):
    from transformers import AutoModel

    from xmodal.encoders import load_encoder

    directory = tiny_clip_dir if request.param == "clip" else tiny_siglip_dir
    encoder = load_encoder(directory, device="cpu", precision="fp32")
    reference = AutoModel.from_pretrained(directory, use_safetensors=True).eval()
    return request.param, encoder, reference


def _manual_image(reference, pixels: torch.Tensor, representation: str) -> np.ndarray:
    out = reference.vision_model(pixel_values=pixels, output_hidden_states=True)
    if representation == "pooled":
        return out.pooler_output.numpy()
    layer = int(representation.split(":")[1])
    return out.hidden_states[layer].mean(dim=1).numpy()


def _manual_text(name, encoder, reference, representation: str) -> np.ndarray:
    tokenizer = encoder.processor.tokenizer
    padding = "max_length" if name == "siglip" else True
    length = encoder.spec.text_max_length
    tokens = tokenizer(TEXTS, padding=padding, max_length=length, truncation=True,
                       return_attention_mask=True, return_tensors="pt")  # fmt: skip
    mask = tokens["attention_mask"]
    # The model sees what its tokenizer returns: SigLIP's (input_ids only) has no mask.
    inputs = {k: v for k, v in tokens.items() if k in tokenizer.model_input_names}
    out = reference.text_model(**inputs, output_hidden_states=True)
    if representation == "pooled":
        if name == "siglip":  # the input of SigLIP's text head (its projection)
            return out.last_hidden_state[:, -1, :].numpy()
        return out.pooler_output.numpy()
    states = out.hidden_states[int(representation.split(":")[1])]
    real = mask.unsqueeze(-1).float()
    return ((states * real).sum(1) / real.sum(1)).numpy()


@pytest.mark.parametrize("representation", ["pooled", "hidden:0", "hidden:1", "hidden:-1"])
def test_representations_match_a_manual_forward(family, representation):
    name, encoder, reference = family
    images = _images(3)
    pixels = torch.from_numpy(np.stack([encoder.preprocess(i) for i in images]))
    with torch.inference_mode():
        want_image = _manual_image(reference, pixels, representation)
        want_text = _manual_text(name, encoder, reference, representation)
    got_image = encoder.encode_images(images, representation=representation)
    got_text = encoder.encode_texts(TEXTS, representation=representation)
    hidden = reference.config.vision_config.hidden_size
    assert got_image.shape == (3, hidden) and got_image.dtype == np.float32
    assert got_text.shape == (3, reference.config.text_config.hidden_size)
    np.testing.assert_allclose(got_image, want_image, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got_text, want_text, rtol=1e-4, atol=1e-5)
    assert not np.allclose(np.linalg.norm(got_image, axis=1), 1.0)  # inner features: raw


def test_hidden_layers_differ_and_text_padding_is_ignored(family):
    name, encoder, _ = family
    first = encoder.encode_texts(TEXTS, representation="hidden:-1")
    last = encoder.encode_texts(TEXTS, representation="hidden:2")
    np.testing.assert_allclose(first, last, rtol=1e-5, atol=1e-6)  # 2 layers: -1 is 2
    alone = encoder.encode_texts(TEXTS[1:2], representation="hidden:1")
    batched = encoder.encode_texts(TEXTS, representation="hidden:1")[1:2]
    if name == "clip":  # padded to the longest: padding must not leak into the mean
        np.testing.assert_allclose(alone, batched, rtol=1e-4, atol=1e-5)
    assert not np.allclose(batched, encoder.encode_texts(TEXTS[1:2], representation="hidden:0"))


def test_embedding_stays_the_default(family):
    _, encoder, _ = family
    images = _images(2, seed=1)
    default = encoder.encode_images(images)
    np.testing.assert_array_equal(
        default, encoder.encode_images(images, representation="embedding")
    )
    np.testing.assert_allclose(np.linalg.norm(default, axis=1), 1.0, rtol=1e-5)
    assert default.shape == (2, encoder.spec.dim)


def test_bad_representations_say_what_to_use(family):
    _, encoder, _ = family
    with pytest.raises(XmodalError, match="use embedding, pooled or hidden:N"):
        encoder.encode_texts(TEXTS, representation="cls")
    with pytest.raises(XmodalError, match=r"has 2 layers, so N must be in \[-3, 2\]"):
        encoder.encode_images(_images(1), representation="hidden:3")


# -- xmodal embed ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory, captioned_photos) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for photo in captioned_photos[:6]:
        shutil.copy(photo, folder / photo.name)
    (folder / captioned_photos[0].with_suffix(".txt").name).write_text("a sidecar caption\n")
    (folder / "zz-broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated, not a JPEG")
    return folder


@pytest.fixture(scope="module")
def clip_encoder(tiny_clip_dir):
    from xmodal.encoders import load_encoder

    return load_encoder(tiny_clip_dir, device="cpu", precision="fp32")


def _embed(capsys, *args: str) -> dict:
    """`xmodal embed` in fp32, so its rows can be compared with clip_encoder's."""
    exact = ["--device", "cpu", "--precision", "fp32"]
    assert main(["embed", *args, *exact, "--workers", "0", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_npy_outputs_match_encode_images_and_account_for_failures(
    tmp_path, capsys, photo_dir, tiny_clip_dir, clip_encoder
):
    out = tmp_path / "out"
    report = _embed(capsys, str(photo_dir), "-o", str(out), "-m", str(tiny_clip_dir))
    vectors = np.load(out / "image_embeddings.npy")
    meta = pq.read_table(out / "image_metadata.parquet").to_pylist()
    assert vectors.shape == (6, clip_encoder.spec.dim) and vectors.dtype == np.float32
    assert [row["id"] for row in meta] == list(range(6))
    want = clip_encoder.encode_images([row["uri"] for row in meta])
    np.testing.assert_allclose(vectors, want, rtol=1e-5, atol=1e-6)
    assert sum(row["caption"] == "a sidecar caption" for row in meta) == 1
    assert all(row["width"] > 0 and row["height"] > 0 for row in meta)
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    broken = [f for f in failures if f["status"] == "failed"]
    assert [Path(f["uri"]).name for f in broken] == ["zz-broken.jpg"]
    assert report["embedded"] == 6 and report["failed"] == 1
    assert report["seen"] == report["embedded"] + report["failed"] + report["skipped"]
    manifest = json.loads((out / "embed.json").read_text())
    assert manifest["outputs"]["image"]["dim"] == clip_encoder.spec.dim
    assert manifest["counts"]["failed"] == 1 and manifest["normalized"] is True
    assert not list(out.glob(".*.tmp"))


def test_float16_parquet_with_pca(tmp_path, capsys, photo_dir, tiny_clip_dir, clip_encoder):
    out = tmp_path / "out"
    args = ["--format", "parquet", "--dtype", "float16", "--pca", "3"]
    _embed(capsys, str(photo_dir), "-o", str(out), "-m", str(tiny_clip_dir), *args)
    assert sorted(p.name for p in out.iterdir()) == [
        "embed.json", "failures.jsonl", "image_embeddings.parquet", "image_pca.npz"
    ]  # fmt: skip
    table = pq.read_table(out / "image_embeddings.parquet")
    assert table.column_names == ["id", "uri", "caption", "width", "height", "embedding"]
    rows = np.array(table.column("embedding").to_pylist())
    assert rows.shape == (6, 3) and str(table.schema.field("embedding").type.value_type) == (
        "halffloat"
    )
    raw = clip_encoder.encode_images(table.column("uri").to_pylist())
    projected = Projection.load(out / "image_pca.npz").transform(raw)
    np.testing.assert_allclose(rows, projected, atol=2e-3)


def test_texts_from_captions_and_a_file(tmp_path, capsys, photo_dir, tiny_clip_dir, clip_encoder):
    texts = tmp_path / "texts.txt"
    texts.write_text("a red circle\n\nblue\n")
    out = tmp_path / "out"
    report = _embed(capsys, str(photo_dir), "-o", str(out), "-m", str(tiny_clip_dir),
                    "--modality", "text", "--texts", str(texts), "--dtype", "float16")  # fmt: skip
    meta = pq.read_table(out / "text_metadata.parquet").to_pylist()
    assert [row["text"] for row in meta] == ["a sidecar caption", "a red circle", "blue"]
    assert meta[2]["uri"] == f"{texts.resolve()}#3"
    vectors = np.load(out / "text_embeddings.npy")
    assert vectors.dtype == np.float16 and report["texts"] == 3
    want = clip_encoder.encode_texts([row["text"] for row in meta])
    np.testing.assert_allclose(vectors.astype(np.float32), want, atol=2e-3)
    assert not (out / "image_embeddings.npy").exists()


@pytest.mark.parametrize("representation", ["pooled", "hidden:1"])
def test_both_modalities_in_an_inner_representation(
    tmp_path, capsys, photo_dir, tiny_siglip_dir, representation
):
    out = tmp_path / "out"
    _embed(capsys, str(photo_dir), "-o", str(out), "-m", str(tiny_siglip_dir),
           "--modality", "both", "--layer", representation)  # fmt: skip
    image, text = np.load(out / "image_embeddings.npy"), np.load(out / "text_embeddings.npy")
    assert image.shape == (6, 32) and text.shape == (1, 32)
    manifest = json.loads((out / "embed.json").read_text())
    assert manifest["representation"] == representation and manifest["normalized"] is False


def test_output_folder_rules(tmp_path, capsys, photo_dir, tiny_clip_dir):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    args = [str(photo_dir), "-o", str(foreign), "-m", str(tiny_clip_dir), "--workers", "0"]
    assert main(["embed", *args]) == 1
    assert "holds files that are not `xmodal embed` outputs (notes.txt)" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "keep me"
    out = tmp_path / "out"
    _embed(capsys, str(photo_dir), "-o", str(out), "-m", str(tiny_clip_dir), "--format", "parquet")
    _embed(capsys, str(photo_dir), "-o", str(out), "-m", str(tiny_clip_dir))  # replaces it
    assert sorted(p.name for p in out.iterdir()) == [
        "embed.json", "failures.jsonl", "image_embeddings.npy", "image_metadata.parquet"
    ]  # fmt: skip
    assert main(["embed", *args[:1], "-o", str(out), "--pca", "pca:x"]) == 1
    assert "projection 'pca:x' is not understood" in capsys.readouterr().err
    assert main(["embed", *args[:1], "-o", str(out), "--texts", "t.txt"]) == 1
    assert "add --modality text or --modality both" in capsys.readouterr().err


def test_pca_larger_than_the_rows_allow(tmp_path, capsys, photo_dir, tiny_clip_dir):
    args = [str(photo_dir), "-o", str(tmp_path / "o"), "-m", str(tiny_clip_dir), "--pca", "9"]
    assert main(["embed", *args, "--workers", "0"]) == 1
    assert "6 image rows of dim 16 allow at most 5 axes" in capsys.readouterr().err


def test_interrupted_output_is_replaced(tmp_path, capsys, photo_dir, tiny_clip_dir):
    out = tmp_path / "out"
    out.mkdir()
    (out / "image_embeddings.npy").write_bytes(b"half a file")  # no embed.json: unfinished
    (out / ".image_raw.npy.tmp").write_bytes(b"temp")
    report = _embed(capsys, str(photo_dir), "-o", str(out), "-m", str(tiny_clip_dir))
    assert np.load(out / "image_embeddings.npy").shape[0] == report["embedded"] == 6
    assert not list(out.glob(".*"))


def test_tar_shard_members_are_embedded(tmp_path, capsys, captioned_photos, clip_encoder):
    import tarfile

    shard = tmp_path / "shard-000.tar"
    caption = tmp_path / "c.txt"
    caption.write_text("first sample")
    with tarfile.open(shard, "w") as tar:  # WebDataset layout: a sample's members side by side
        for number, photo in enumerate(captioned_photos[:3]):
            tar.add(photo, arcname=f"{number:05d}.jpg")
            if number == 0:
                tar.add(caption, arcname="00000.txt")
    out = tmp_path / "out"
    model = clip_encoder.spec.source
    report = _embed(capsys, str(shard), "-o", str(out), "-m", model, "--modality", "both")
    assert report["embedded"] == 3 and report["texts"] == 1
    vectors = np.load(out / "image_embeddings.npy")
    np.testing.assert_allclose(
        vectors, clip_encoder.encode_images(captioned_photos[:3]), rtol=1e-5, atol=1e-6
    )
    meta = pq.read_table(out / "image_metadata.parquet").to_pylist()
    assert meta[0]["uri"].endswith("shard-000.tar::00000.jpg")
    assert meta[0]["caption"] == "first sample"


def test_texts_only_account_for_every_input(tmp_path, capsys, photo_dir, tiny_clip_dir):
    """With --modality text an input gives a row when it has a caption; the others are skipped
    as no-caption (and listed in failures.jsonl), so seen = embedded + failed + skipped."""
    out = tmp_path / "out"
    report = _embed(capsys, str(photo_dir), "-o", str(out), "-m", str(tiny_clip_dir),
                    "--modality", "text", "--precision", "fp32")  # fmt: skip
    assert (report["seen"], report["embedded"], report["failed"], report["skipped"]) == (7, 1, 0, 6)
    assert report["texts"] == 1
    counts = json.loads((out / "embed.json").read_text())["counts"]
    assert counts["seen"] == counts["embedded"] + counts["failed"] + counts["skipped"]
    dropped = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert {(d["status"], d["reason"]) for d in dropped} == {("skipped", "no-caption")}
    assert len(dropped) == 6


@pytest.mark.parametrize(
    ("options", "unit"),
    [
        (["--layer", "pooled", "--pca", "2"], True),  # a projection re-normalises its rows
        (["--layer", "pooled"], False),
        (["--modality", "both", "--dtype", "float16"], True),
    ],
    ids=["pooled-pca", "pooled", "embedding-fp16"],
)
def test_normalized_says_what_the_stored_rows_are(
    tmp_path, capsys, photo_dir, tiny_clip_dir, options, unit
):
    out = tmp_path / "out"
    _embed(capsys, str(photo_dir), "-o", str(out), "-m", str(tiny_clip_dir),
           "--precision", "fp32", *options)  # fmt: skip
    manifest = json.loads((out / "embed.json").read_text())
    norms = [
        np.linalg.norm(np.load(path).astype(np.float32), axis=1)
        for path in sorted(out.glob("*_embeddings.npy"))
    ]
    measured = all(np.allclose(n, 1.0, atol=2e-3) for n in norms)
    assert manifest["normalized"] is measured is unit
    assert {o["normalized"] for o in manifest["outputs"].values()} == {unit}
