"""Image helpers shared by the decoding tests."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from PIL import Image

from xmodal.errors import ImageDecodeError
from xmodal.images import load_image

# EXIF orientation -> the transpose that shows the stored pixels upright (EXIF 2.3, tag 0x0112).
UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Inverse transposes: how to store an upright image so that orientation N shows it upright.
STORE = {**UPRIGHT, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


def rgb_array(image: Image.Image) -> np.ndarray:
    assert image.mode == "RGB"
    return np.asarray(image).astype(np.int16)


def mean_diff(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(rgb_array(a) - rgb_array(b)).mean())


def raise_reason(source: Any, reason: str, text: str, **kwargs: Any) -> ImageDecodeError:
    with pytest.raises(ImageDecodeError) as info:
        load_image(source, **kwargs)
    assert info.value.reason == reason
    assert text in str(info.value)
    return info.value
