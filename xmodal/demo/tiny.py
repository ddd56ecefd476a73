"""Tiny random-init dual encoders of every supported family, built in code and saved like real ones.

:func:`save_tiny` writes one of :data:`FAMILIES`; CLIP and SigLIP are built here, the other
families in :mod:`xmodal.demo.tiny_families`.

Each builder writes a directory that a plain
``AutoModel.from_pretrained(dir, use_safetensors=True)`` plus ``AutoProcessor.from_pretrained(dir)``
load offline: ``config.json``, ``model.safetensors`` (never a pickle), ``processor_config.json``
(transformers 5 keeps the image processor settings there) and the tokenizer files (CLIP's from
:mod:`xmodal.demo.tokenizer`, SigLIP's ``spiece.model`` from
:mod:`xmodal.demo.tokenizers_families`). A directory takes well under a second to build.

The text towers have few positions (32 for CLIP, 64 for SigLIP) so truncation is easy to test.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPProcessor,
    CLIPTokenizer,
    PreTrainedTokenizerBase,
    SiglipConfig,
    SiglipImageProcessor,
    SiglipModel,
    SiglipProcessor,
)

from xmodal.demo.tokenizer import build_clip_tokenizer
from xmodal.demo.tokenizers_families import build_siglip_tokenizer

logger = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
BICUBIC = 3  # PIL.Image.Resampling.BICUBIC, the resample real CLIP and SigLIP checkpoints name

# Words of the synthetic world (xmodal.demo.world) and common query words, so that demo
# captions tokenize into whole words.
DEFAULT_TEXTS: tuple[str, ...] = (
    "a small red circle",
    "a large orange square on a dark background",
    "a yellow triangle on a light background",
    "a picture of a small green shape that is a square",
    "a photo of a large blue circle",
    "an image of a purple triangle",
    "a red star, a pink heart, white black gray brown",
)


@dataclass(frozen=True)
class TinySizes:
    """Sizes of a tiny dual encoder (both towers share width, depth and head count)."""

    image_size: int = 32
    patch_size: int = 8
    hidden: int = 32
    layers: int = 2
    heads: int = 2
    projection_dim: int = 16
    max_text_positions: int = 32
    vocab_size: int = 1024


def clip_config(sizes: TinySizes, tokenizer: CLIPTokenizer) -> CLIPConfig:
    """A ``CLIPConfig`` of ``sizes`` whose special ids match ``tokenizer``.

    ``eos_token_id`` decides where CLIP pools the text tower (the first EOS), so it must be the
    tokenizer's; a value of 2 would switch transformers to the legacy highest-id rule.
    """
    tower = {
        "hidden_size": sizes.hidden,
        "intermediate_size": sizes.hidden * 4,
        "num_hidden_layers": sizes.layers,
        "num_attention_heads": sizes.heads,
        "projection_dim": sizes.projection_dim,
    }
    text = {
        **tower,
        "vocab_size": len(tokenizer),
        "max_position_embeddings": sizes.max_text_positions,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    vision = {**tower, "image_size": sizes.image_size, "patch_size": sizes.patch_size}
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=sizes.projection_dim)


def clip_image_processor(image_size: int) -> CLIPImageProcessor:
    """CLIP's preprocessing: bicubic shortest-edge resize, centre crop, CLIP mean/std."""
    return CLIPImageProcessor(
        do_resize=True,
        size={"shortest_edge": image_size},
        resample=BICUBIC,
        do_center_crop=True,
        crop_size={"height": image_size, "width": image_size},
        do_rescale=True,
        do_normalize=True,
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
        do_convert_rgb=True,
    )


def build_tiny_clip(
    sizes: TinySizes, *, seed: int = 0, texts: Sequence[str] | None = None
) -> tuple[CLIPModel, CLIPProcessor]:
    """A random-init ``CLIPModel`` (seeded) and its processor, not yet saved."""
    tokenizer = build_clip_tokenizer(
        list(texts or DEFAULT_TEXTS),
        vocab_size=sizes.vocab_size,
        model_max_length=sizes.max_text_positions,
    )
    config = clip_config(sizes, tokenizer)
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    processor = CLIPProcessor(
        image_processor=clip_image_processor(sizes.image_size), tokenizer=tokenizer
    )
    return model, processor


def save_model_dir(model: torch.nn.Module, processor: object, directory: str | Path) -> Path:
    """Write ``model`` (safetensors only) and ``processor`` into ``directory``; return it."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    processor.save_pretrained(path)  # type: ignore[attr-defined]
    return path


def save_tiny_clip(
    directory: str | Path,
    *,
    seed: int = 0,
    image_size: int = 32,
    patch_size: int = 8,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    projection_dim: int = 16,
    texts: Sequence[str] | None = None,
) -> Path:
    """Save a tiny random-init CLIP (model, image processor, tokenizer) to ``directory``."""
    sizes = TinySizes(image_size, patch_size, hidden, layers, heads, projection_dim)
    model, processor = build_tiny_clip(sizes, seed=seed, texts=texts)
    path = save_model_dir(model, processor, directory)
    logger.debug("saved tiny CLIP (%s) to %s", sizes, path)
    return path


def siglip_config(sizes: TinySizes, tokenizer: PreTrainedTokenizerBase) -> SiglipConfig:
    """A ``SiglipConfig`` of ``sizes``; its embedding dim is ``sizes.hidden`` (no projection)."""
    tower = {
        "hidden_size": sizes.hidden,
        "intermediate_size": sizes.hidden * 4,
        "num_hidden_layers": sizes.layers,
        "num_attention_heads": sizes.heads,
    }
    text = {
        **tower,
        "vocab_size": len(tokenizer),
        "max_position_embeddings": sizes.max_text_positions,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": None,
    }
    vision = {**tower, "image_size": sizes.image_size, "patch_size": sizes.patch_size}
    return SiglipConfig(text_config=text, vision_config=vision)


def save_tiny_siglip(
    directory: str | Path,
    *,
    seed: int = 0,
    image_size: int = 32,
    patch_size: int = 8,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    max_text_positions: int = 64,
    texts: Sequence[str] | None = None,
) -> Path:
    """Save a tiny random-init SigLIP checkpoint to ``directory``.

    Preprocessing is SigLIP's: a fixed bicubic resize to ``image_size`` square, mean/std 0.5.
    The tokenizer is a ``SiglipTokenizer`` over a locally trained ``spiece.model``, as the
    ``google/siglip-*`` checkpoints ship; it pads to ``max_text_positions`` when called with
    ``padding="max_length"``.
    """
    sizes = TinySizes(image_size, patch_size, hidden, layers, heads, hidden, max_text_positions)
    tokenizer = build_siglip_tokenizer(
        list(texts or DEFAULT_TEXTS),
        directory,
        vocab_size=sizes.vocab_size,
        model_max_length=max_text_positions,
    )
    config = siglip_config(sizes, tokenizer)
    torch.manual_seed(seed)
    model = SiglipModel(config).eval()
    image_processor = SiglipImageProcessor(
        do_resize=True,
        size={"height": image_size, "width": image_size},
        resample=BICUBIC,
        do_rescale=True,
        do_normalize=True,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    processor = SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer)
    path = save_model_dir(model, processor, directory)
    logger.debug("saved tiny SigLIP (%s) to %s", sizes, path)
    return path


# Every family xmodal supports, as save_tiny names them.
FAMILIES = ("clip", "siglip", "siglip2", "siglip2-naflex", "chinese_clip", "altclip", "align")


def save_tiny(family: str, directory: str | Path, *, seed: int = 0) -> Path:
    """Save a tiny random-init checkpoint of ``family`` (one of :data:`FAMILIES`).

    Models are seeded; tokenizers are trained locally on the demo words, general captions and
    :data:`xmodal.demo.tokenizers_families.MULTILINGUAL_TEXTS`.
    """
    from xmodal.demo import tiny_families
    from xmodal.demo.tokenizers_families import MULTILINGUAL_TEXTS

    texts = (*DEFAULT_TEXTS, *MULTILINGUAL_TEXTS)
    if family == "clip":
        return save_tiny_clip(directory, seed=seed, texts=texts)
    if family == "siglip":
        return save_tiny_siglip(directory, seed=seed, texts=texts)

    builders = {
        "siglip2": tiny_families.build_siglip2,
        "siglip2-naflex": tiny_families.build_siglip2_naflex,
        "chinese_clip": tiny_families.build_chinese_clip,
        "altclip": tiny_families.build_altclip,
        "align": tiny_families.build_align,
    }
    if family not in builders:
        raise ValueError(f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}")
    sizes = TinySizes(max_text_positions=64)
    model, processor = builders[family](sizes, texts, seed)
    path = save_model_dir(model, processor, directory)
    logger.debug("saved tiny %s (%s) to %s", family, sizes, path)
    return path
