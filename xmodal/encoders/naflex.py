"""SigLIP 2 NaFlex preprocessing: aspect-preserving patch sequences under a patch budget.

A NaFlex image processor resizes each image so that its sides are multiples of ``patch_size``,
its aspect ratio is kept and it holds at most ``max_num_patches`` patches; cuts it into patches
(row-major, each flattened as ``(patch_y, patch_x, channel)``); and pads the sequence to
``max_num_patches`` rows. The model then needs ``pixel_attention_mask`` (real rows first) and
``spatial_shapes`` (patch rows, patch columns) beside the patches.

The batch pipeline moves one numpy array per image between processes and stacks them, so a
NaFlex image travels *packed*: an array of ``(1 + max_num_patches, patch_dim)`` whose first row
starts with the spatial shape and whose other rows are the padded patches. Every image of one
model packs to the same shape, so packed images stack into a batch like fixed-size pixels do;
:func:`unpack` turns a stacked batch back into the three model inputs (the mask follows from the
shape, since padding always comes last).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from xmodal.images import load_image


def naflex_size(height: int, width: int, patch_size: int, max_num_patches: int) -> tuple[int, int]:
    """The (height, width) transformers' Siglip2ImageProcessor resizes an image to.

    A binary search for the largest scale whose patch-rounded size fits the budget; a copy of
    ``get_image_size_for_max_num_patches`` (same arithmetic, so the same sizes), kept here so
    decoding workers need not import transformers.
    """

    def scaled(scale: float, size: int) -> int:
        return int(max(patch_size, math.ceil(size * scale / patch_size) * patch_size))

    low, high, eps = 1e-6, 100.0, 1e-5
    while (high - low) >= eps:
        scale = (low + high) / 2
        patches = (scaled(scale, height) / patch_size) * (scaled(scale, width) / patch_size)
        if patches <= max_num_patches:
            low = scale
        else:
            high = scale
    return scaled(low, height), scaled(low, width)


def pack(patches: np.ndarray, spatial: tuple[int, int], max_num_patches: int) -> np.ndarray:
    """Real patches (n, patch_dim) and their (rows, columns) -> one packed float32 array."""
    out = np.zeros((1 + max_num_patches, patches.shape[1]), dtype=np.float32)
    out[0, :2] = spatial
    out[1 : 1 + len(patches)] = patches
    return out


def unpack(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A stacked batch of packed images -> (pixel_values, pixel_attention_mask, spatial_shapes)."""
    spatial = batch[:, 0, :2].astype(np.int64)
    pixels = batch[:, 1:]
    mask = np.arange(pixels.shape[1])[None, :] < (spatial[:, 0] * spatial[:, 1])[:, None]
    return pixels, mask.astype(np.int32), spatial


def pack_processor_output(out: Any, index: int = 0) -> np.ndarray:
    """Pack image ``index`` of a NaFlex image processor's output (processor fallback path)."""
    pixels = np.asarray(out["pixel_values"][index], dtype=np.float32)
    rows, cols = (int(v) for v in np.asarray(out["spatial_shapes"][index]))
    return pack(pixels[: rows * cols], (rows, cols), pixels.shape[0])


@dataclass(frozen=True)
class NaflexPipeline:
    """Siglip2ImageProcessor's recipe without its per-image numpy round trips; picklable."""

    patch_size: int
    max_num_patches: int
    resample: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    rescale_factor: float = 1 / 255
    draft: bool = False  # the target size depends on each image, so no reduced-size decode

    def summary(self) -> dict[str, Any]:
        return {
            "resample": Image.Resampling(self.resample).name.lower(),
            "patch_size": self.patch_size,
            "max_num_patches": self.max_num_patches,
            "mean": list(self.mean),
            "std": list(self.std),
        }

    def draft_size(self) -> None:
        return None

    def load(self, source: Any) -> Image.Image:
        return load_image(source)

    def __call__(self, image: Image.Image) -> np.ndarray:
        """RGB PIL image -> packed (1 + max_num_patches, patch_size**2 * 3) float32 array."""
        p = self.patch_size
        height, width = naflex_size(image.height, image.width, p, self.max_num_patches)
        image = image.resize((width, height), resample=self.resample)
        pixels = np.asarray(image, dtype=np.float32)
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        pixels = (pixels * np.float32(self.rescale_factor) - mean) / std
        rows, cols = height // p, width // p
        patches = pixels.reshape(rows, p, cols, p, 3).transpose(0, 2, 1, 3, 4)
        return pack(patches.reshape(rows * cols, -1), (rows, cols), self.max_num_patches)


def naflex_from_processor(
    image_processor: Any, call_kwargs: dict[str, Any] | None = None
) -> NaflexPipeline | None:
    """A NaflexPipeline equal to ``image_processor`` called with ``call_kwargs``, or None.

    ``call_kwargs`` are the defaults the model's processor passes on every call
    (``Siglip2Processor.images_kwargs``: patch_size 16, max_num_patches 256); they win over the
    image processor's own settings, as they do in transformers.
    """
    settings = {**vars(image_processor), **(call_kwargs or {})}
    get = lambda name, default=None: settings.get(name, getattr(image_processor, name, default))  # noqa: E731
    if not get("max_num_patches"):
        return None
    if not (get("do_resize") and get("do_rescale") and get("do_normalize")):
        return None
    if get("do_convert_rgb") is False:
        return None
    resample = get("resample")
    resample = int(getattr(resample, "value", resample) if resample is not None else 2)
    mean, std = get("image_mean"), get("image_std")
    return NaflexPipeline(
        patch_size=int(get("patch_size")),
        max_num_patches=int(get("max_num_patches")),
        resample=resample,
        mean=tuple(float(v) for v in mean),  # type: ignore[arg-type]
        std=tuple(float(v) for v in std),  # type: ignore[arg-type]
        rescale_factor=float(get("rescale_factor", 1 / 255)),
    )
