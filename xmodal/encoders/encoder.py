"""The Encoder: one pretrained dual encoder, numpy rows out."""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from xmodal.encoders.hardware import PRECISIONS, resolve
from xmodal.encoders.loading import resolve_model
from xmodal.encoders.logits import ZeroShotHead, zero_shot_head
from xmodal.encoders.naflex import NaflexPipeline, naflex_from_processor, unpack
from xmodal.encoders.preprocess import (
    ImageInput,
    PixelPipeline,
    Preparer,
    pipeline_from_processor,
)
from xmodal.encoders.representation import (
    EMBEDDING,
    Representation,
    check_supported,
    image_features,
    parse_representation,
    text_features,
    tower_width,
)
from xmodal.encoders.spec import EncoderSpec
from xmodal.errors import ModelLoadError, XmodalError

log = logging.getLogger(__name__)

# Families trained on text padded to the full context; shorter padding changes their output.
_PAD_TO_MAX_LENGTH = {"siglip", "siglip2"}


class Encoder:
    """A loaded image/text dual encoder.

    Every ``encode_*`` method returns float32 rows in input order: by default the shared-space
    embedding, L2-normalised; ``representation`` selects a tower's inner features instead
    (:mod:`xmodal.encoders.representation`). No torch tensor crosses this boundary. Build one
    with :func:`load_encoder`.
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        spec: EncoderSpec,
        pixels: PixelPipeline | NaflexPipeline | None,
    ) -> None:
        self.model = model
        self.processor = processor
        self.spec = spec
        image_processor = None if pixels else processor.image_processor
        self.preparer = Preparer(pixels, image_processor, processor_call_kwargs(processor))
        # NaFlex inputs travel packed (patches + spatial shape in one array): see encoders.naflex
        names = getattr(processor.image_processor, "model_input_names", ())
        self._packed = "spatial_shapes" in names
        self._device = torch.device(spec.device)
        self._dtype = PRECISIONS[spec.precision]
        self._text_keys = set(inspect.signature(model.get_text_features).parameters)

    def zero_shot_head(self) -> ZeroShotHead:
        """The model's learned logit scale (and SigLIP bias) for zero-shot probabilities."""
        return zero_shot_head(self.model, self.spec.model_type)

    # -- images -------------------------------------------------------------------------
    def load(self, source: ImageInput) -> Image.Image:
        """Decode ``source`` with the shared policy (reduced-size JPEG decode when allowed)."""
        return self.preparer.load(source)

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """RGB image -> float32 array, exactly as the model expects it.

        (3, H, W) pixels; for NaFlex models a packed (1 + max_num_patches, patch_dim) array of
        patches and their spatial shape. Arrays of one model always have the same shape.
        """
        return self.preparer.preprocess(image)

    def feature_dim(
        self, representation: str | Representation = EMBEDDING, modality: str = "image"
    ) -> int:
        """Width of the rows ``representation`` gives for ``modality`` ("image" or "text")."""
        chosen = parse_representation(representation)
        if chosen.kind == "embedding":
            return self.spec.dim
        check_supported(self.model, chosen, modality)
        return tower_width(self.model, modality)

    def encode_pixels(
        self, batch: np.ndarray, *, representation: str | Representation = EMBEDDING
    ) -> np.ndarray:
        """A stacked batch of :meth:`preprocess` arrays -> (n, dim) rows."""
        chosen = parse_representation(representation)
        if len(batch) == 0:
            return np.zeros((0, self.feature_dim(chosen, "image")), dtype=np.float32)
        with torch.inference_mode():
            inputs = self._pixel_inputs(np.ascontiguousarray(batch, dtype=np.float32))
            if chosen.kind == "embedding":
                return _normalised(self.model.get_image_features(**inputs), self.spec.precision)
            check_supported(self.model, chosen, "image")
            return image_features(self.model, inputs, chosen).cpu().numpy()

    def _pixel_inputs(self, batch: np.ndarray) -> dict[str, torch.Tensor]:
        """The vision tower's keyword inputs for a stacked batch, on the model's device."""
        if not self._packed:
            return {"pixel_values": torch.from_numpy(batch).to(self._device, self._dtype)}
        pixels, mask, spatial = unpack(batch)
        return {
            "pixel_values": torch.from_numpy(pixels).to(self._device, self._dtype),
            "pixel_attention_mask": torch.from_numpy(mask).to(self._device),
            "spatial_shapes": torch.from_numpy(spatial).to(self._device),
        }

    def encode_images(
        self,
        images: Sequence[ImageInput],
        *,
        batch_size: int = 32,
        progress: bool | None = None,
        threads: int | None = None,
        representation: str | Representation = EMBEDDING,
    ) -> np.ndarray:
        """Decode, preprocess and embed images; decoding overlaps with model compute.

        Decoding and preprocessing run in a thread pool (PIL releases the GIL while it decodes
        and resizes) one batch ahead of the model.
        """
        chosen = parse_representation(representation)
        out = np.zeros((len(images), self.feature_dim(chosen, "image")), dtype=np.float32)
        if threads is None:  # on a CPU the model needs the cores; one decoder thread suffices
            threads = 1 if self._device.type == "cpu" else min(8, os.cpu_count() or 1)
        bar = tqdm(total=len(images), unit="img", disable=_quiet(progress, len(images), batch_size))
        with ThreadPoolExecutor(threads) as pool, bar:
            for start, pixels in self._prefetch(images, batch_size, pool):
                out[start : start + len(pixels)] = self.encode_pixels(pixels, representation=chosen)
                bar.update(len(pixels))
        return out

    def _prefetch(
        self, images: Sequence[ImageInput], batch_size: int, pool: ThreadPoolExecutor
    ) -> Iterator[tuple[int, np.ndarray]]:
        prepare = self.preparer
        starts = range(0, len(images), batch_size)
        pending = None
        for start in starts:
            future = pool.map(prepare, images[start : start + batch_size])
            if pending is not None:
                yield pending[0], np.stack(list(pending[1]))
            pending = (start, future)
        if pending is not None:
            yield pending[0], np.stack(list(pending[1]))

    # -- texts --------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenise the way the model family was trained; long texts are truncated."""
        return self._tokenize(texts)[0]

    def _tokenize(self, texts: Sequence[str]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The model's inputs, and the mask of real (unpadded) tokens."""
        padding = "max_length" if self.spec.text_padding == "max_length" else True
        tokens = self.processor.tokenizer(
            list(texts),
            padding=padding,
            truncation=True,
            max_length=self.spec.text_max_length,
            return_attention_mask=True,
            return_tensors="pt",
        )
        inputs = {k: v for k, v in tokens.items() if k in self._text_keys}
        if "attention_mask" not in self.processor.tokenizer.model_input_names:
            inputs.pop("attention_mask", None)  # as the family was trained (SigLIP: no mask)
        return inputs, tokens["attention_mask"]

    def encode_texts(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = 256,
        progress: bool | None = None,
        representation: str | Representation = EMBEDDING,
    ) -> np.ndarray:
        """Embed texts. Batches are formed by length so padding stays short."""
        if isinstance(texts, str):
            raise TypeError("encode_texts takes a list of strings; wrap a single query in [ ]")
        chosen = parse_representation(representation)
        out = np.zeros((len(texts), self.feature_dim(chosen, "text")), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        bar = tqdm(total=len(texts), unit="text", disable=_quiet(progress, len(texts), batch_size))
        with bar, torch.inference_mode():
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                tokens, mask = self._tokenize([texts[i] for i in rows])
                tokens = {k: v.to(self._device) for k, v in tokens.items()}
                if chosen.kind == "embedding":
                    out[rows] = _normalised(
                        self.model.get_text_features(**tokens), self.spec.precision
                    )
                else:
                    out[rows] = text_features(self.model, tokens, mask, chosen).cpu().numpy()
                bar.update(len(rows))
        return out


def _quiet(progress: bool | None, n: int, batch_size: int) -> bool | None:
    if progress is None:
        return True if n <= 4 * batch_size else None  # None: tqdm shows it on a terminal only
    return not progress


def _normalised(output: Any, precision: str) -> np.ndarray:
    """Features from get_*_features (a tensor, or an output object in transformers 5).

    A row of zeros, inf or NaN is refused rather than stored: it is what a tower whose
    activations overflow or vanish in a reduced precision gives (a tiny ALIGN in fp16 on CPU
    returns zeros), and normalising it would hide that.
    """
    if not isinstance(output, torch.Tensor):
        pooled = getattr(output, "pooler_output", None)
        output = pooled if pooled is not None else output[0]
    features = output.float()
    if not bool(torch.isfinite(features).all()) or bool((features.abs().amax(dim=-1) == 0).any()):
        raise XmodalError(
            f"the model gave empty or non-finite embeddings in {precision}: its activations "
            "overflow or vanish at that precision; run it in fp32 or bf16 (--precision, or "
            "XMODAL_PRECISION)"
        )
    features = torch.nn.functional.normalize(features, dim=-1)
    return features.cpu().numpy()


def load_encoder(
    name_or_path: str | os.PathLike,
    device: str | None = None,
    precision: str | None = None,
    *,
    revision: str | None = None,
    fast_preprocessing: bool = True,
) -> Encoder:
    """Load a Hugging Face dual encoder (CLIP, SigLIP, SigLIP 2, Chinese-CLIP, AltCLIP, ...).

    ``name_or_path`` is a hub id or a local directory; weights load from safetensors only.
    ``device`` and ``precision`` left at None take ``$XMODAL_DEVICE`` / ``$XMODAL_PRECISION``,
    else ``auto``. ``precision="auto"`` picks bf16 on CUDA and on CPUs with native bf16
    (AMX/AVX-512 BF16), fp32 elsewhere. ``fast_preprocessing`` reproduces the processor with
    reduced-size JPEG decoding; turn it off to run the model's own processor on full-size decodes.
    """
    torch_device, chosen = resolve(device, precision)
    source = resolve_model(name_or_path, revision)
    model, processor = _load_model(source.directory, name_or_path)
    model.to(device=torch_device, dtype=PRECISIONS[chosen]).eval()
    pixels = _pixel_pipeline(processor, fast_preprocessing)
    spec = EncoderSpec(
        model_id=source.model_id,
        revision=source.revision,
        dim=_embedding_dim(model),
        model_type=model.config.model_type,
        source=str(source.directory) if source.revision.startswith("local-") else source.model_id,
        preprocessing=_preprocessing_summary(processor, pixels),
        text_max_length=_text_max_length(model, processor),
        text_padding="max_length" if model.config.model_type in _PAD_TO_MAX_LENGTH else "longest",
        device=str(torch_device),
        precision=chosen,
    )
    log.info("loaded %s (%s) on %s in %s", spec.model_id, spec.revision[:12], spec.device, chosen)
    return Encoder(model, processor, spec, pixels)


def processor_call_kwargs(processor: Any) -> dict[str, Any]:
    """Image settings the model's processor passes on every call (Siglip2Processor's patch
    size and budget); transformers lets them win over the image processor's own config."""
    return dict(getattr(processor, "images_kwargs", None) or {})


def _pixel_pipeline(processor: Any, fast: bool) -> PixelPipeline | NaflexPipeline | None:
    """xmodal's own pipeline for this processor, or None to run the processor itself."""
    image_processor = processor.image_processor
    naflex = naflex_from_processor(image_processor, processor_call_kwargs(processor))
    if naflex is not None:
        return naflex
    pixels = pipeline_from_processor(image_processor)
    if pixels is not None and fast:
        pixels = PixelPipeline(**{**pixels.__dict__, "draft": True})
    return pixels


def _load_model(directory: os.PathLike, name: str | os.PathLike) -> tuple[Any, Any]:
    from transformers import AutoModel, AutoProcessor
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # e.g. the "torchvision not installed" fallback notice
    hf_logging.disable_progress_bar()  # per-tensor "Loading weights" bars on every load
    try:
        model = AutoModel.from_pretrained(directory, use_safetensors=True, dtype=torch.float32)
        processor = AutoProcessor.from_pretrained(directory)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"could not load {name} as a Hugging Face model: {exc}") from exc
    missing = [m for m in ("get_image_features", "get_text_features") if not hasattr(model, m)]
    if missing or not hasattr(processor, "tokenizer") or not hasattr(processor, "image_processor"):
        raise ModelLoadError(
            f"{name} ({type(model).__name__}) is not an image-text dual encoder: xmodal needs "
            "get_image_features/get_text_features and a processor with a tokenizer and an image "
            "processor (CLIP, SigLIP, SigLIP 2, Chinese-CLIP, AltCLIP, ...)"
        )
    return model, processor


def _embedding_dim(model: Any) -> int:
    config = model.config
    for name in ("projection_dim", "embed_dim"):
        if getattr(config, name, None):
            return int(getattr(config, name))
    return int(config.text_config.hidden_size)


def _text_max_length(model: Any, processor: Any) -> int:
    positions = int(getattr(model.config.text_config, "max_position_embeddings", 77))
    limit = getattr(processor.tokenizer, "model_max_length", None)
    return min(positions, int(limit)) if limit and limit < 1_000_000 else positions


def _preprocessing_summary(
    processor: Any, pixels: PixelPipeline | NaflexPipeline | None
) -> dict[str, Any]:
    summary: dict[str, Any] = {"image_processor": type(processor.image_processor).__name__}
    if pixels is not None:
        summary.update(pixels.summary())
    summary["pipeline"] = Preparer(pixels).kind
    return summary
