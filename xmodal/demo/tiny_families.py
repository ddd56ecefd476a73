"""Tiny random-init SigLIP 2, Chinese-CLIP, AltCLIP and ALIGN checkpoints, saved like real ones.

Each builder returns a random-init model (seeded) and the processor the real checkpoints ship, so
``AutoModel`` / ``AutoProcessor`` load the saved directory through the family's own classes:

============== ============== ================================= ================================
family         model class    image processor                   tokenizer (as loaded)
============== ============== ================================= ================================
siglip2        SiglipModel    SiglipImageProcessor, fixed size  GemmaTokenizer
siglip2-naflex Siglip2Model   Siglip2ImageProcessor (NaFlex)    Siglip2Tokenizer (Gemma, lower)
chinese_clip   ChineseCLIP    ChineseCLIPImageProcessor         BertTokenizer (WordPiece)
altclip        AltCLIPModel   CLIPImageProcessor                XLMRobertaTokenizer (Unigram)
align          AlignModel     EfficientNetImageProcessor        BertTokenizer (WordPiece)
============== ============== ================================= ================================

Real fixed-resolution SigLIP 2 checkpoints (e.g. ``google/siglip2-base-patch16-224``) are
``model_type: siglip`` with SigLIP 2's Gemma tokenizer; only the NaFlex ones are ``siglip2``.
ALIGN's EfficientNet processor maps pixels to [-1, 1] with ``rescale_offset``, as
``kakaobrain/align-base`` does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import (
    AlignConfig,
    AlignModel,
    AlignProcessor,
    AltCLIPConfig,
    AltCLIPModel,
    AltCLIPProcessor,
    ChineseCLIPConfig,
    ChineseCLIPImageProcessor,
    ChineseCLIPModel,
    ChineseCLIPProcessor,
    EfficientNetImageProcessor,
    Siglip2Config,
    Siglip2ImageProcessor,
    Siglip2Model,
    Siglip2Processor,
    SiglipImageProcessor,
    SiglipModel,
    SiglipProcessor,
)

from xmodal.demo.tiny import (
    BICUBIC,
    CLIP_MEAN,
    CLIP_STD,
    TinySizes,
    clip_image_processor,
    siglip_config,
)
from xmodal.demo.tokenizers_families import (
    build_gemma_tokenizer,
    build_wordpiece_tokenizer,
    build_xlmr_tokenizer,
)

BILINEAR = 2  # PIL.Image.Resampling.BILINEAR, SigLIP 2's resample
# Siglip2Processor passes patch_size=16 and max_num_patches=256 on every call, over the image
# processor's own settings, so a NaFlex checkpoint uses these whatever its config says.
NAFLEX_PATCH = 16
NAFLEX_MAX_PATCHES = 256
ALIGN_TEXT_POSITIONS = 64  # AlignProcessor pads to max_length 64


def _tower(sizes: TinySizes) -> dict[str, int]:
    return {
        "hidden_size": sizes.hidden,
        "intermediate_size": sizes.hidden * 4,
        "num_hidden_layers": sizes.layers,
        "num_attention_heads": sizes.heads,
    }


def _vit(sizes: TinySizes) -> dict[str, int]:
    return {**_tower(sizes), "image_size": sizes.image_size, "patch_size": sizes.patch_size}


def _siglip2_image_processor(image_size: int) -> SiglipImageProcessor:
    half = [0.5, 0.5, 0.5]
    return SiglipImageProcessor(
        size={"height": image_size, "width": image_size},
        resample=BILINEAR,
        image_mean=half,
        image_std=half,
    )


def build_siglip2(sizes: TinySizes, texts: Sequence[str], seed: int) -> tuple[object, object]:
    """Fixed-resolution SigLIP 2: a ``SiglipModel`` with the Gemma tokenizer (pad 0, EOS 1)."""
    tokenizer = build_gemma_tokenizer(texts, model_max_length=sizes.max_text_positions)
    config = siglip_config(sizes, tokenizer)
    torch.manual_seed(seed)
    model = SiglipModel(config).eval()
    image_processor = _siglip2_image_processor(sizes.image_size)
    return model, SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer)


def build_siglip2_naflex(
    sizes: TinySizes, texts: Sequence[str], seed: int
) -> tuple[object, object]:
    """SigLIP 2 NaFlex: aspect-preserving patch sequences of at most NAFLEX_MAX_PATCHES."""
    tokenizer = build_gemma_tokenizer(texts, model_max_length=sizes.max_text_positions)
    text = {
        **_tower(sizes),
        "vocab_size": len(tokenizer),
        "max_position_embeddings": sizes.max_text_positions,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": None,
    }
    vision = {**_tower(sizes), "patch_size": NAFLEX_PATCH, "num_patches": 16}
    torch.manual_seed(seed)
    model = Siglip2Model(Siglip2Config(text_config=text, vision_config=vision)).eval()
    image_processor = Siglip2ImageProcessor(
        patch_size=NAFLEX_PATCH,
        max_num_patches=NAFLEX_MAX_PATCHES,
        resample=BILINEAR,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    return model, Siglip2Processor(image_processor=image_processor, tokenizer=tokenizer)


def _bert_text(sizes: TinySizes, tokenizer: object, positions: int) -> dict[str, int]:
    return {
        **_tower(sizes),
        "vocab_size": len(tokenizer),  # type: ignore[arg-type]
        "max_position_embeddings": positions,
        "pad_token_id": tokenizer.pad_token_id,  # type: ignore[attr-defined]
    }


def build_chinese_clip(sizes: TinySizes, texts: Sequence[str], seed: int) -> tuple[object, object]:
    """Chinese-CLIP: a BERT text tower ([CLS] + projection) beside a CLIP ViT."""
    tokenizer = build_wordpiece_tokenizer(texts, model_max_length=sizes.max_text_positions)
    text = _bert_text(sizes, tokenizer, sizes.max_text_positions)
    config = ChineseCLIPConfig(
        text_config=text, vision_config=_vit(sizes), projection_dim=sizes.projection_dim
    )
    torch.manual_seed(seed)
    model = ChineseCLIPModel(config).eval()
    # OFA-Sys checkpoints resize to a square without cropping.
    image_processor = ChineseCLIPImageProcessor(
        size={"height": sizes.image_size, "width": sizes.image_size},
        do_center_crop=False,
        resample=BICUBIC,
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
    )
    return model, ChineseCLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def build_altclip(sizes: TinySizes, texts: Sequence[str], seed: int) -> tuple[object, object]:
    """AltCLIP: an XLM-R text tower ([CLS] + projection) beside a CLIP ViT."""
    tokenizer = build_xlmr_tokenizer(texts, model_max_length=sizes.max_text_positions)
    # RoBERTa positions start after the padding id, so the table holds two more than the text.
    text = {
        **_bert_text(sizes, tokenizer, sizes.max_text_positions + 2),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "project_dim": sizes.hidden,
    }
    config = AltCLIPConfig(
        text_config=text, vision_config=_vit(sizes), projection_dim=sizes.projection_dim
    )
    torch.manual_seed(seed)
    model = AltCLIPModel(config).eval()
    image_processor = clip_image_processor(sizes.image_size)
    return model, AltCLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def build_align(sizes: TinySizes, texts: Sequence[str], seed: int) -> tuple[object, object]:
    """ALIGN: a BERT text tower ([CLS] + projection) beside a two-stage EfficientNet.

    The image embedding is the EfficientNet's pooled output, so its last stage has
    ``projection_dim`` channels.
    """
    tokenizer = build_wordpiece_tokenizer(texts, model_max_length=ALIGN_TEXT_POSITIONS)
    vision = {
        "image_size": sizes.image_size,
        "width_coefficient": 1.0,
        "depth_coefficient": 1.0,
        "kernel_sizes": [3, 3],
        "in_channels": [32, 16],  # the stem has round_filters(32) channels
        "out_channels": [16, sizes.projection_dim],
        "strides": [2, 2],
        "num_block_repeats": [1, 1],
        "expand_ratios": [1, 2],
        "depthwise_padding": [],
    }
    config = AlignConfig(
        text_config=_bert_text(sizes, tokenizer, ALIGN_TEXT_POSITIONS),
        vision_config=vision,
        projection_dim=sizes.projection_dim,
    )
    torch.manual_seed(seed)
    model = AlignModel(config).eval()
    image_processor = EfficientNetImageProcessor(
        size={"height": sizes.image_size, "width": sizes.image_size},
        resample=BILINEAR,
        do_center_crop=False,
        rescale_factor=1 / 127.5,
        rescale_offset=True,
        do_normalize=False,
        include_top=False,
    )
    return model, AlignProcessor(image_processor=image_processor, tokenizer=tokenizer)
