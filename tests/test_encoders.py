"""Encoders: parity with transformers' own path, precision, order, truncation, errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from xmodal.encoders import hardware, load_encoder
from xmodal.errors import ModelLoadError


def reference_images(model_dir: Path, paths: list[Path]) -> np.ndarray:
    """transformers' documented path: processor(images=...) -> model.get_image_features."""
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(model_dir).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    rows = []
    for start in range(0, len(paths), 64):
        images = [Image.open(p).convert("RGB") for p in paths[start : start + 64]]
        with torch.inference_mode():
            out = model.get_image_features(**processor(images=images, return_tensors="pt"))
        rows.append(torch.nn.functional.normalize(out.pooler_output, dim=-1).numpy())
    return np.concatenate(rows)


def reference_texts(model_dir: Path, texts: list[str], **tokenizer_kwargs: object) -> np.ndarray:
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(model_dir).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    tokens = processor(text=texts, return_tensors="pt", truncation=True, **tokenizer_kwargs)
    with torch.inference_mode():
        out = model.get_text_features(**tokens)
    return torch.nn.functional.normalize(out.pooler_output, dim=-1).numpy()


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float(np.min(np.sum(a * b, axis=1)))


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_fp32_images_match_transformers_on_real_photos(
    family: str, request: pytest.FixtureRequest, captioned_photos: list[Path]
) -> None:
    model_dir = request.getfixturevalue(f"tiny_{family}_dir")
    encoder = load_encoder(model_dir, device="cpu", precision="fp32", fast_preprocessing=False)
    ours = encoder.encode_images(captioned_photos)
    assert ours.dtype == np.float32 and ours.shape == (len(captioned_photos), encoder.spec.dim)
    assert min_cosine(ours, reference_images(model_dir, captioned_photos)) >= 0.9999


def test_fp32_texts_match_transformers_clip(
    tiny_clip_dir: Path, captions: dict[str, list[str]]
) -> None:
    texts = [c for caps in list(captions.values())[:60] for c in caps[:2]]
    ours = load_encoder(tiny_clip_dir, device="cpu", precision="fp32").encode_texts(texts)
    ref = reference_texts(tiny_clip_dir, texts, padding=True, max_length=32)
    assert min_cosine(ours, ref) >= 0.9999


def test_siglip_texts_are_padded_to_max_length(
    tiny_siglip_dir: Path, captions: dict[str, list[str]]
) -> None:
    encoder = load_encoder(tiny_siglip_dir, device="cpu", precision="fp32")
    assert encoder.spec.text_padding == "max_length"
    tokens = encoder.tokenize(["a dog", "a much longer caption about a dog on a beach"])
    assert tokens["input_ids"].shape == (2, encoder.spec.text_max_length)
    texts = [caps[0] for caps in list(captions.values())[:40]]
    ref = reference_texts(tiny_siglip_dir, texts, padding="max_length", max_length=64)
    assert min_cosine(encoder.encode_texts(texts), ref) >= 0.9999


@pytest.fixture(scope="module")
def vit_b32_dir(tmp_path_factory: pytest.TempPathFactory, tiny_clip_dir: Path) -> Path:
    """A random-init CLIP with openai/clip-vit-base-patch32's geometry (224 px, patch 32)."""
    from transformers import AutoProcessor, CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("vit-b32")
    config = CLIPConfig()
    config.text_config.vocab_size = 1024
    config.text_config.max_position_embeddings = 32
    CLIPModel(config).save_pretrained(directory)
    processor = AutoProcessor.from_pretrained(tiny_clip_dir)
    processor.image_processor = CLIPImageProcessor()
    processor.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def large_jpegs(
    tmp_path_factory: pytest.TempPathFactory, captioned_photos: list[Path]
) -> list[Path]:
    """Camera-sized JPEGs (4x the shared photos), where reduced-size decoding kicks in."""
    out = tmp_path_factory.mktemp("large")
    paths = []
    for photo in captioned_photos[:16]:
        image = Image.open(photo).convert("RGB")
        image = image.resize((image.width * 4, image.height * 4), Image.Resampling.BICUBIC)
        image.save(out / f"{photo.stem}.jpg", quality=92)
        paths.append(out / f"{photo.stem}.jpg")
    return paths


def test_fast_preprocessing_stays_within_0999_of_reference(
    vit_b32_dir: Path, large_jpegs: list[Path]
) -> None:
    encoder = load_encoder(vit_b32_dir, device="cpu", precision="fp32")
    assert encoder.spec.preprocessing["pipeline"] == "xmodal-fast"
    draft = encoder.load(large_jpegs[0])
    assert min(draft.size) < min(Image.open(large_jpegs[0]).size)  # really decoded smaller
    assert min(draft.size) >= 2 * 224
    ours = encoder.encode_images(large_jpegs)
    assert min_cosine(ours, reference_images(vit_b32_dir, large_jpegs)) >= 0.999


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_stays_within_0999_of_fp32(
    precision: str,
    tiny_clip_dir: Path,
    captioned_photos: list[Path],
    captions: dict[str, list[str]],
) -> None:
    """The documented bound, for every reduced precision, on CPU (fp16 matmuls run there too)."""
    photos = captioned_photos[:24]
    texts = [caps[0] for caps in list(captions.values())[:24]]
    fp32 = load_encoder(tiny_clip_dir, device="cpu", precision="fp32")
    reduced = load_encoder(tiny_clip_dir, device="cpu", precision=precision)
    assert reduced.spec.precision == precision
    assert next(reduced.model.parameters()).dtype == hardware.PRECISIONS[precision]
    assert min_cosine(reduced.encode_images(photos), fp32.encode_images(photos)) >= 0.999
    assert min_cosine(reduced.encode_texts(texts), fp32.encode_texts(texts)) >= 0.999


def test_auto_precision_follows_the_hardware(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(hardware, "cpu_has_fast_bf16", lambda: False)
    assert hardware.resolve_precision("auto", cpu) == "fp32"
    monkeypatch.setattr(hardware, "cpu_has_fast_bf16", lambda: True)
    assert hardware.resolve_precision("auto", cpu) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert hardware.resolve_precision("auto", cuda) == "bf16"
    assert hardware.resolve_precision("fp16", cpu) == "fp16"
    with pytest.raises(Exception, match="unknown precision 'fp8'"):
        hardware.resolve_precision("fp8", cpu)


def test_auto_precision_on_this_machine_matches_fp32(
    tiny_clip_dir: Path, captioned_photos: list[Path]
) -> None:
    auto = load_encoder(tiny_clip_dir, device="cpu", precision="auto")
    expected = "bf16" if hardware.cpu_has_fast_bf16() else "fp32"
    assert auto.spec.precision == expected
    fp32 = load_encoder(tiny_clip_dir, device="cpu", precision="fp32")
    photos = captioned_photos[:16]
    assert min_cosine(auto.encode_images(photos), fp32.encode_images(photos)) >= 0.999


def test_rows_are_normalised_and_in_input_order(
    tiny_clip_dir: Path, captioned_photos: list[Path]
) -> None:
    encoder = load_encoder(tiny_clip_dir, device="cpu", precision="fp32")
    photos = captioned_photos[:70]
    forward = encoder.encode_images(photos, batch_size=8)
    backward = encoder.encode_images(photos[::-1], batch_size=32)
    np.testing.assert_allclose(np.linalg.norm(forward, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(forward, backward[::-1], atol=1e-5)
    texts = ["a red bus", "two dogs playing in the snow on a sunny day", "x", "a cat"]
    together = encoder.encode_texts(texts)
    alone = np.stack([encoder.encode_texts([t])[0] for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert encoder.encode_texts([]).shape == (0, encoder.spec.dim)
    assert encoder.encode_images([]).shape == (0, encoder.spec.dim)


def test_long_texts_are_truncated_not_rejected(tiny_clip_dir: Path) -> None:
    encoder = load_encoder(tiny_clip_dir, device="cpu", precision="fp32")
    long_text = "a dog running along the beach " * 100
    tokens = encoder.tokenize([long_text])
    assert tokens["input_ids"].shape[1] == encoder.spec.text_max_length
    vectors = encoder.encode_texts([long_text, long_text + " and more words at the end"])
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-6)  # the tail was cut off


def test_spec_records_identity_and_preprocessing(tiny_clip_dir: Path) -> None:
    spec = load_encoder(tiny_clip_dir, device="cpu", precision="fp32").spec
    assert spec.model_id == tiny_clip_dir.name and spec.source == str(tiny_clip_dir.resolve())
    assert spec.revision.startswith("local-") and spec.dim == 16 and spec.model_type == "clip"
    assert spec.preprocessing["crop"] == [32, 32] and spec.preprocessing["resample"] == "bicubic"
    again = load_encoder(tiny_clip_dir, device="cpu", precision="fp32").spec
    assert again.identity() == spec.identity()


def test_uncached_hub_model_offline_gives_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as err:
        load_encoder("xmodal-test/not-a-cached-model")
    message = str(err.value)
    assert "xmodal-test/not-a-cached-model" in message
    assert "--model /path/to/model-dir" in message and "\n" not in message


def test_unreachable_hub_fails_fast_with_the_same_hint(tmp_path: Path) -> None:
    # A closed local port stands in for a hub that cannot be reached.
    code = (
        "from xmodal.encoders import load_encoder\n"
        "from xmodal.errors import ModelLoadError\n"
        "try:\n    load_encoder('xmodal-test/not-a-cached-model')\n"
        "except ModelLoadError as exc:\n    print('ERR', exc)\n"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_OFFLINE": "0",
        "HF_ENDPOINT": "http://127.0.0.1:9",
        "HF_HUB_ETAG_TIMEOUT": "5",
    }
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert "ERR model xmodal-test/not-a-cached-model is not in the local" in out.stdout, out.stderr
    assert "Traceback" not in out.stderr


def test_missing_directory_and_pickled_weights_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_encoder(str(tmp_path / "nope" / "model"))
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x02")
    with pytest.raises(ModelLoadError, match="safetensors only"):
        load_encoder(tmp_path)


def test_importing_xmodal_opens_no_socket() -> None:
    code = (
        "import socket\n"
        "def refuse(*a, **k):\n    raise SystemExit('network touched at import')\n"
        "socket.socket.connect = refuse\nsocket.getaddrinfo = refuse\n"
        "import xmodal, xmodal.cli, xmodal.encoders, xmodal.index, xmodal.images\n"
        "import xmodal.pipelines.indexing, xmodal.pipelines.search\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "ok", out.stderr
