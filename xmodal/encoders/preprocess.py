"""Image preprocessing that reproduces a Hugging Face image processor, faster.

``PixelPipeline`` is a small picklable value built from the model's own processor config, so it
can run in decoding workers. It does exactly what transformers' PIL backend does (PIL resize on
uint8, integer centre crop, rescale, normalise) without the per-image numpy round trips, and it
can ask the JPEG decoder for a reduced-size decode when a photo is much larger than the model
input. Processor configs it does not understand fall back to the processor itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from xmodal.encoders.naflex import NaflexPipeline, pack_processor_output
from xmodal.images import load_image

DRAFT_MARGIN = 2  # >= 2x the model input: 0.99999 cosine of a full decode on ViT-B/32

ImageInput = str | os.PathLike | bytes | Image.Image


@dataclass(frozen=True)
class PixelPipeline:
    """Resize -> centre crop -> rescale -> normalise, as the model's processor defines it.

    ``shortest_edge`` resizes keeping aspect ratio (CLIP family); ``resize_hw`` resizes to a
    fixed (height, width) (SigLIP family). ``draft`` allows reduced-size JPEG decoding: the DCT
    scale is chosen so the decoded image stays at least twice the resize target, which keeps
    the result within 0.999 cosine of a full decode.
    """

    resample: int
    shortest_edge: int | None
    resize_hw: tuple[int, int] | None
    crop_hw: tuple[int, int] | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    rescale_factor: float = 1 / 255
    draft: bool = False

    def summary(self) -> dict[str, Any]:
        return {
            "resample": Image.Resampling(self.resample).name.lower(),
            "shortest_edge": self.shortest_edge,
            "resize": list(self.resize_hw) if self.resize_hw else None,
            "crop": list(self.crop_hw) if self.crop_hw else None,
            "mean": list(self.mean),
            "std": list(self.std),
        }

    @property
    def output_hw(self) -> tuple[int, int]:
        if self.crop_hw:
            return self.crop_hw
        if self.resize_hw:
            return self.resize_hw
        raise ValueError("pipeline has neither crop nor fixed resize")

    def draft_size(self) -> tuple[int, int] | None:
        if not self.draft:
            return None
        side = self.shortest_edge or max(self.resize_hw or (0, 0))
        return (DRAFT_MARGIN * side, DRAFT_MARGIN * side)

    def load(self, source: ImageInput) -> Image.Image:
        return load_image(source, draft_size=self.draft_size())

    def __call__(self, image: Image.Image) -> np.ndarray:
        """RGB PIL image -> float32 array (3, H, W) ready for the vision tower."""
        image = image.resize(self._resize_target(image.size), resample=self.resample)
        if self.crop_hw:
            image = _center_crop(image, self.crop_hw)
        pixels = np.asarray(image, dtype=np.float32)
        scale = np.float32(self.rescale_factor)
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        pixels = (pixels * scale - mean) / std
        return np.ascontiguousarray(pixels.transpose(2, 0, 1))

    def _resize_target(self, size: tuple[int, int]) -> tuple[int, int]:
        width, height = size
        if self.resize_hw:
            return self.resize_hw[1], self.resize_hw[0]
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = self.shortest_edge, int(self.shortest_edge * long / short)
        return (new_short, new_long) if width <= height else (new_long, new_short)


def _center_crop(image: Image.Image, crop_hw: tuple[int, int]) -> Image.Image:
    crop_h, crop_w = crop_hw
    width, height = image.size
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    if top < 0 or left < 0:
        # Smaller than the crop: pad with black around it, as transformers does.
        canvas = Image.new("RGB", (max(width, crop_w), max(height, crop_h)))
        canvas.paste(image, (max(-left, 0), max(-top, 0)))
        return _center_crop(canvas, crop_hw)
    return image.crop((left, top, left + crop_w, top + crop_h))


def pipeline_from_processor(image_processor: Any) -> PixelPipeline | None:
    """Build a PixelPipeline equivalent to ``image_processor``, or None if it does more.

    Only the plain resize/crop/rescale/normalise recipe is reproduced; anything else
    (padding, patching, tiling, letterboxing) returns None and the caller uses the processor.
    """
    get = lambda name, default=None: getattr(image_processor, name, default)  # noqa: E731
    if not (get("do_resize") and get("do_rescale") and get("do_normalize")):
        return None
    if get("do_pad") or get("do_convert_rgb") is False or get("max_num_patches"):
        return None
    if get("rescale_offset") or get("include_top"):
        return None  # EfficientNet (ALIGN): pixels * scale - 1, or a second division by std
    size = _as_dict(get("size"))
    shortest = size.get("shortest_edge")
    if size.get("longest_edge") or size.get("max_height"):
        return None
    resize_hw = (size["height"], size["width"]) if size.get("height") else None
    if not shortest and not resize_hw:
        return None
    crop = _as_dict(get("crop_size")) if get("do_center_crop") else {}
    crop_hw = (crop["height"], crop["width"]) if crop.get("height") else None
    if shortest and not crop_hw:
        return None  # variable output size: cannot be batched
    resample = get("resample")
    resample = int(getattr(resample, "value", resample) if resample is not None else 2)
    return PixelPipeline(
        resample=resample,
        shortest_edge=int(shortest) if shortest else None,
        resize_hw=resize_hw,
        crop_hw=crop_hw,
        mean=_triple(get("image_mean")),
        std=_triple(get("image_std")),
        rescale_factor=float(get("rescale_factor", 1 / 255)),
    )


def _as_dict(size: Any) -> dict[str, Any]:
    """Normalise the processor's size field (dict, SizeDict or int) to a plain dict."""
    if size is None:
        return {}
    if isinstance(size, int):
        return {"shortest_edge": size}
    keys = ("height", "width", "shortest_edge", "longest_edge", "max_height", "max_width")
    if isinstance(size, dict):
        return {k: size[k] for k in keys if size.get(k) is not None}
    return {k: getattr(size, k) for k in keys if getattr(size, k, None) is not None}


def _triple(values: Any) -> tuple[float, float, float]:
    if isinstance(values, int | float):
        return (float(values),) * 3
    values = tuple(float(v) for v in values)
    return values if len(values) == 3 else (values[0],) * 3


@dataclass(frozen=True)
class Preparer:
    """Decode + preprocess for one model; picklable, so batch workers can run it.

    Uses the fast :class:`PixelPipeline` (or :class:`NaflexPipeline`) when the processor's recipe
    is reproducible and the model's own image processor otherwise, called with ``call_kwargs``,
    the defaults the model's processor passes on every call. NaFlex outputs come packed
    (:mod:`xmodal.encoders.naflex`) whichever path made them.
    """

    pipeline: PixelPipeline | NaflexPipeline | None
    image_processor: Any = None
    call_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """``xmodal-fast`` (reduced-size decode), ``xmodal-exact`` or ``processor``."""
        if self.pipeline is None:
            return "processor"
        return "xmodal-fast" if self.pipeline.draft else "xmodal-exact"

    def load(self, source: ImageInput) -> Image.Image:
        draft = self.pipeline.draft_size() if self.pipeline is not None else None
        return load_image(source, draft_size=draft)

    def preprocess(self, image: Image.Image) -> np.ndarray:
        if self.pipeline is not None:
            return self.pipeline(image)
        out = self.image_processor(images=[image], return_tensors="np", **self.call_kwargs)
        if "spatial_shapes" in out:
            return pack_processor_output(out)
        return np.asarray(out["pixel_values"][0], dtype=np.float32)

    def __call__(self, source: ImageInput) -> np.ndarray:
        return self.preprocess(self.load(source))
