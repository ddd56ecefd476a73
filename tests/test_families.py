"""Every dual-encoder family: a tiny checkpoint of each, parity with its own transformers path.

For each family xmodal's embeddings (images: the 298 shared photos; texts: multilingual and
over-long) match the family's reference path in transformers (its processor, with the padding the
family was trained with, then ``get_image_features`` / ``get_text_features``): min cosine >= 0.9999
in fp32 and >= 0.999 in bf16. The pixel pipeline each family gets is asserted, so a processor that
xmodal's own pipeline cannot reproduce visibly falls back to the processor.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from xmodal.demo.tiny import FAMILIES, save_tiny
from xmodal.demo.tokenizers_families import MULTILINGUAL_TEXTS
from xmodal.encoders import load_encoder
from xmodal.errors import XmodalError
from xmodal.images import load_image

# (model class, tokenizer class as transformers loads the real checkpoints' (google/siglip-*:
# SiglipTokenizer over spiece.model), xmodal's pixel pipeline by default).
# xmodal-fast: reduced-size JPEG decodes (none here: the photos come decoded, so the pixels are
# exact); NaFlex sizes depend on each image, so its own pipeline never drafts.
EXPECTED = {
    "clip": ("CLIPModel", "CLIPTokenizer", "xmodal-fast"),
    "siglip": ("SiglipModel", "SiglipTokenizer", "xmodal-fast"),
    "siglip2": ("SiglipModel", "GemmaTokenizer", "xmodal-fast"),
    "siglip2-naflex": ("Siglip2Model", "Siglip2Tokenizer", "xmodal-exact"),
    "chinese_clip": ("ChineseCLIPModel", "BertTokenizer", "xmodal-fast"),
    "altclip": ("AltCLIPModel", "XLMRobertaTokenizer", "xmodal-fast"),
    "align": ("AlignModel", "BertTokenizer", "processor"),  # EfficientNet's rescale_offset
}
# How each family's texts were padded in training; the rest use their processor's defaults.
TRAINED_PADDING = {
    "siglip": {"padding": "max_length", "max_length": 64},
    "siglip2": {"padding": "max_length", "max_length": 64},
    "clip": {"padding": True},
    "chinese_clip": {"padding": True},
    "altclip": {"padding": True},
}
LONG_TEXTS = [
    "a very long caption about a dog running on a beach at sunset " * 12,
    "一只猫坐在窗台上看着外面的雨" * 30,
    "قطة تجلس على النافذة " * 40,
    "🐶⚽🏖️" * 60,
]


@pytest.fixture(scope="session")
def family_dir(tmp_path_factory: pytest.TempPathFactory):
    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in built:
            built[family] = save_tiny(family, tmp_path_factory.mktemp(family), seed=0)
        return built[family]

    return get


@pytest.fixture(scope="module")
def photos(captioned_photos: list[Path]) -> list[Image.Image]:
    """The shared photos decoded once with xmodal's policy; both paths see the same pixels."""
    return [load_image(p) for p in captioned_photos]


@pytest.fixture(scope="module")
def texts(captions: dict[str, list[str]]) -> list[str]:
    english = [caps[0] for caps in list(captions.values())[:40]]
    return [*MULTILINGUAL_TEXTS, *LONG_TEXTS, *english, "", "x"]


def reference(directory: Path, family: str, images: list[Image.Image], texts: list[str]):
    """transformers' own path for the family: processor -> get_*_features, normalised."""
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(directory, use_safetensors=True).eval()
    processor = AutoProcessor.from_pretrained(directory)
    rows = []
    with torch.inference_mode():
        for start in range(0, len(images), 100):
            inputs = processor(images=images[start : start + 100], return_tensors="pt")
            rows.append(_unit(model.get_image_features(**inputs)))
        tokens = processor(
            text=texts, return_tensors="pt", truncation=True, **TRAINED_PADDING.get(family, {})
        )
        text_rows = _unit(model.get_text_features(**tokens))
    return np.concatenate(rows), text_rows


def _unit(output) -> np.ndarray:
    return torch.nn.functional.normalize(output.pooler_output.float(), dim=-1).numpy()


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float(np.min(np.sum(a * b, axis=1)))


@pytest.mark.parametrize("family", FAMILIES)
def test_save_tiny_loads_through_the_family_classes(family: str, family_dir) -> None:
    from transformers import AutoModel, AutoProcessor, AutoTokenizer

    directory = family_dir(family)
    names = {p.name for p in directory.iterdir()}
    assert {"config.json", "model.safetensors", "processor_config.json"} <= names
    # SigLIP checkpoints ship a SentencePiece model, the others a tokenizers-library file.
    vocabulary = "spiece.model" if family == "siglip" else "tokenizer.json"
    assert {vocabulary, "tokenizer_config.json"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pth", ".pkl")) for n in names)
    model_class, tokenizer_class, _ = EXPECTED[family]
    assert type(AutoModel.from_pretrained(directory, use_safetensors=True)).__name__ == model_class
    tokenizer = AutoTokenizer.from_pretrained(directory)
    assert type(tokenizer).__name__ == tokenizer_class
    assert type(AutoProcessor.from_pretrained(directory).tokenizer).__name__ == tokenizer_class
    for text in MULTILINGUAL_TEXTS:  # every script the tests query with is in the vocabulary
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.unk_token_id not in ids, (family, text)


def test_save_tiny_refuses_an_unknown_family(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown family 'blip'; choose one of clip, siglip"):
        save_tiny("blip", tmp_path)


@pytest.mark.parametrize("family", FAMILIES)
def test_parity_with_the_family_reference_in_every_precision(
    family: str, family_dir, photos: list[Image.Image], texts: list[str]
) -> None:
    directory = family_dir(family)
    ref_images, ref_texts = reference(directory, family, photos, texts)
    for precision, floor in (("fp32", 0.9999), ("bf16", 0.999), ("fp16", 0.999)):
        encoder = load_encoder(directory, device="cpu", precision=precision)
        assert encoder.spec.preprocessing["pipeline"] == EXPECTED[family][2]
        if (family, precision) == ("align", "fp16"):  # its image tower vanishes to zeros in fp16
            with pytest.raises(XmodalError, match="empty or non-finite embeddings in fp16"):
                encoder.encode_images(photos[:2])
        else:
            images = encoder.encode_images(photos, batch_size=100)
            assert min_cosine(images, ref_images) >= floor, (family, precision, "images")
        assert min_cosine(encoder.encode_texts(texts), ref_texts) >= floor, (family, precision)


@pytest.mark.parametrize("family", ["chinese_clip", "altclip", "align", "siglip2-naflex"])
def test_pooled_features_are_the_inputs_of_the_projection(family: str, family_dir) -> None:
    """``pooled`` stops just before the projection into the shared space."""
    encoder = load_encoder(family_dir(family), device="cpu", precision="fp32")
    model = encoder.model
    text = ["一只猫坐在窗台上", "a photo of a dog"]
    image = [Image.new("RGB", (90, 40), (200, 30, 30))]
    pooled_text = torch.from_numpy(encoder.encode_texts(text, representation="pooled"))
    pooled_image = torch.from_numpy(encoder.encode_images(image, representation="pooled"))
    with torch.inference_mode():
        if family == "siglip2-naflex":
            projected_text = model.text_model.head(pooled_text)
        else:
            projected_text = model.text_projection(pooled_text)
        projection = getattr(model, "visual_projection", torch.nn.Identity())
        projected_image = projection(pooled_image)
    unit = lambda x: torch.nn.functional.normalize(x, dim=-1).numpy()  # noqa: E731
    assert min_cosine(unit(projected_text), encoder.encode_texts(text)) >= 0.9999
    assert min_cosine(unit(projected_image), encoder.encode_images(image)) >= 0.9999


def test_align_refuses_hidden_layers_of_its_cnn(family_dir) -> None:
    encoder = load_encoder(family_dir("align"), device="cpu", precision="fp32")
    with pytest.raises(XmodalError) as error:
        encoder.encode_images([Image.new("RGB", (40, 40))], representation="hidden:1")
    assert str(error.value) == (
        "representation hidden:N is not defined for ALIGN images (its image tower is a CNN, "
        "with no token sequence to average); use 'embedding' or 'pooled'"
    )
    assert encoder.encode_texts(["a dog"], representation="hidden:-1").shape == (1, 32)


def test_spec_records_the_pipeline_settings(family_dir) -> None:
    spec = load_encoder(family_dir("siglip2-naflex"), device="cpu", precision="fp32").spec
    assert spec.preprocessing["patch_size"] == 16 and spec.preprocessing["max_num_patches"] == 256
    assert spec.text_padding == "max_length" and spec.text_max_length == 64
    assert json.loads(json.dumps(spec.to_dict()))["preprocessing"]["pipeline"] == "xmodal-exact"
