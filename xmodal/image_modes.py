"""Mode conversion for the decoding policy (``xmodal.images``): any PIL mode in, 8-bit RGB out.

16-bit and float greyscale is scaled rather than clipped, alpha and transparency are composited
on white, CMYK goes through PIL's conversion and L*a*b* through LittleCMS.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image, ImageCms

__all__ = ["to_rgb"]

_WHITE = (255, 255, 255)


def to_rgb(image: Image.Image) -> Image.Image:
    """Every branch builds a new image, so the input is never returned or modified."""
    mode = image.mode
    if mode.startswith("I") or mode == "F":
        return _high_depth_to_rgb(image)
    if mode == "LAB":
        return ImageCms.applyTransform(image, _lab_to_srgb())
    if mode == "La":  # premultiplied; PIL only un-premultiplies La -> LA
        image = image.convert("LA")
    if image.has_transparency_data:
        return _flatten_on_white(image.convert("RGBA"))
    # 1, L, P, RGB, RGBX, CMYK (PIL already un-inverts Adobe CMYK JPEGs), YCbCr, HSV.
    return image.convert("RGB")


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    """Scale 16/32-bit integer and float greyscale to 8 bits instead of clipping at 255."""
    raw = np.asarray(image)
    grey = _scale_to_uint8(raw, image.mode)
    rgb = Image.fromarray(np.repeat(grey[:, :, None], 3, axis=2), "RGB")
    transparent = image.info.get("transparency")
    if isinstance(transparent, int) and image.mode != "F":
        alpha = np.where(raw == transparent, 0, 255).astype(np.uint8)
        rgb = _flatten_on_white(Image.merge("RGBA", (*rgb.split(), Image.fromarray(alpha, "L"))))
    return rgb


def _scale_to_uint8(raw: np.ndarray, mode: str) -> np.ndarray:
    if mode.startswith("I;16") or (
        mode == "I" and raw.size and raw.min() >= 0 and raw.max() <= 65535
    ):
        # round(v / 257) in integers: 65535 -> 255, 32768 -> 128; the full 16-bit range survives.
        return ((raw.astype(np.uint32) + 128) // 257).astype(np.uint8)
    values = raw.astype(np.float32)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(raw.shape, np.uint8)
    low, high = float(values[finite].min()), float(values[finite].max())
    values = np.where(finite, values, low)
    if mode == "F" and low >= 0 and high <= 1:
        scaled = values * 255.0  # the usual convention for normalised float images
    elif high > low:
        scaled = (values - low) * (255.0 / (high - low))  # arbitrary range: stretch it
    else:
        scaled = values
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _flatten_on_white(rgba: Image.Image) -> Image.Image:
    background = Image.new("RGB", rgba.size, _WHITE)
    background.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))
    return background


@functools.cache
def _lab_to_srgb() -> ImageCms.ImageCmsTransform:
    # PIL's plain convert() copies L*a*b* bytes into RGB on older versions; LittleCMS does it
    # colorimetrically. NOCACHE makes the shared transform safe to use from several threads.
    return ImageCms.buildTransform(
        ImageCms.createProfile("LAB"),
        ImageCms.createProfile("sRGB"),
        "LAB",
        "RGB",
        flags=ImageCms.Flags.NOCACHE,
    )
