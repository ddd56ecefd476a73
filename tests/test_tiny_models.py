"""Tiny CLIP and SigLIP directories built in code load like real checkpoints, offline."""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from PIL import Image
from transformers import AutoModel, AutoProcessor, AutoTokenizer

from xmodal.demo.evaluate import features
from xmodal.demo.tiny import save_tiny_clip, save_tiny_siglip
from xmodal.demo.tokenizer import build_clip_tokenizer, train_bpe


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory):
    return save_tiny_clip(tmp_path_factory.mktemp("clip"), seed=0)


@pytest.fixture(scope="module")
def siglip_dir(tmp_path_factory: pytest.TempPathFactory):
    return save_tiny_siglip(tmp_path_factory.mktemp("siglip"), seed=0)


def _load(directory):
    model = AutoModel.from_pretrained(directory, use_safetensors=True).eval()
    return model, AutoProcessor.from_pretrained(directory)


@pytest.mark.parametrize("which", ["clip_dir", "siglip_dir"])
def test_safetensors_only(which: str, request: pytest.FixtureRequest) -> None:
    directory = request.getfixturevalue(which)
    names = {p.name for p in directory.iterdir()}
    assert "model.safetensors" in names
    assert not any(n.endswith((".bin", ".pt", ".pth", ".pkl")) for n in names)
    vocabulary = "spiece.model" if which == "siglip_dir" else "tokenizer.json"
    assert {"config.json", vocabulary, "tokenizer_config.json"} <= names


def test_clip_features_have_projection_dim(clip_dir) -> None:
    model, processor = _load(clip_dir)
    assert type(model).__name__ == "CLIPModel"
    images = [Image.new("RGB", (50, 40), (200, 10, 10)), Image.new("RGB", (32, 32), "blue")]
    with torch.inference_mode():
        pixels = processor(images=images, return_tensors="pt")["pixel_values"]
        assert pixels.shape == (2, 3, 32, 32)
        image = features(model.get_image_features(pixel_values=pixels))
        tokens = processor(text=["a red circle", "blue"], padding=True, return_tensors="pt")
        text = features(model.get_text_features(**tokens))
    assert image.shape == (2, 16) and text.shape == (2, 16)
    assert torch.isfinite(image).all() and torch.isfinite(text).all()


def test_clip_special_ids_match_config(clip_dir) -> None:
    model, processor = _load(clip_dir)
    tokenizer = processor.tokenizer
    config = model.config.text_config
    assert config.eos_token_id == tokenizer.eos_token_id != 2
    assert config.bos_token_id == tokenizer.bos_token_id
    assert config.pad_token_id == tokenizer.pad_token_id
    assert config.vocab_size == len(tokenizer)
    ids = tokenizer("a small red circle")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == "a small red circle"


def test_clip_pools_at_the_first_eos(clip_dir) -> None:
    """Padding after the EOS must not change a caption's embedding."""
    model, processor = _load(clip_dir)
    tokenizer = processor.tokenizer
    short = tokenizer(["a red circle"], return_tensors="pt")
    padded = tokenizer(["a red circle"], padding="max_length", max_length=20, return_tensors="pt")
    assert padded["input_ids"].shape[1] == 20
    with torch.inference_mode():
        a = features(model.get_text_features(**short))
        b = features(model.get_text_features(**padded))
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_clip_truncates_long_text(clip_dir) -> None:
    _, processor = _load(clip_dir)
    long_text = "a very small and very red circle " * 20
    tokens = processor(
        text=[long_text, "short"], padding=True, truncation=True, return_tensors="pt"
    )
    assert tokens["input_ids"].shape[1] == 32
    assert int(tokens["input_ids"][0, -1]) == processor.tokenizer.eos_token_id


def test_siglip_pads_to_max_length_and_loads(siglip_dir) -> None:
    model, processor = _load(siglip_dir)
    assert type(model).__name__ == "SiglipModel"
    tokens = processor(
        text=["a red circle", "x " * 200],
        padding="max_length",
        truncation=True,
        return_tensors="pt",
    )
    assert tokens["input_ids"].shape == (2, 64)
    assert int(tokens["input_ids"][0, 3]) == processor.tokenizer.eos_token_id
    with torch.inference_mode():
        text = features(model.get_text_features(**tokens))
        pixels = processor(images=[Image.new("RGB", (70, 20), "green")], return_tensors="pt")
        assert pixels["pixel_values"].shape == (1, 3, 32, 32)  # fixed square resize, no crop
        image = features(model.get_image_features(**pixels))
    assert text.shape == (2, 32) and image.shape == (1, 32)
    assert AutoTokenizer.from_pretrained(siglip_dir).model_max_length == 64


def test_siglip_image_processor_is_siglip_style(siglip_dir) -> None:
    config = json.loads((siglip_dir / "processor_config.json").read_text())["image_processor"]
    assert config["size"] == {"height": 32, "width": 32}
    assert config["image_mean"] == [0.5, 0.5, 0.5] and config["image_std"] == [0.5, 0.5, 0.5]


def test_same_seed_same_weights(tmp_path) -> None:
    a = _load(save_tiny_clip(tmp_path / "a", seed=3))[0]
    b = _load(save_tiny_clip(tmp_path / "b", seed=3))[0]
    c = _load(save_tiny_clip(tmp_path / "c", seed=4))[0]
    weight = "visual_projection.weight"
    torch.testing.assert_close(a.state_dict()[weight], b.state_dict()[weight])
    assert not torch.equal(a.state_dict()[weight], c.state_dict()[weight])


def test_tokenizer_covers_every_byte() -> None:
    """No text maps to the unknown token (which CLIP would mistake for the EOS)."""
    tokenizer = build_clip_tokenizer(["a small red circle"])
    ids = tokenizer("Ünïcode ☃ and emoji 🙂, tabs\tand 123!")["input_ids"]
    assert ids.count(tokenizer.eos_token_id) == 1
    assert len(train_bpe(["abc"], vocab_size=600).vocab) <= 600
