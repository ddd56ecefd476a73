"""How a dual encoder turns cosine similarities into zero-shot logits and probabilities.

CLIP-style models learn a temperature (``logit_scale``, stored as its log) and are trained with
a softmax over the batch, so zero-shot probabilities are a softmax over labels of
``scale * cosine``. SigLIP models learn a scale and a bias and are trained with a per-pair
sigmoid, so each label's probability is ``sigmoid(scale * cosine + bias)``, independent of the
other labels. ALIGN stores a temperature to divide by. A model exposing none of these gets
CLIP's trained value, 100.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

CLIP_SCALE = 100.0
_SIGMOID_FAMILIES = ("siglip", "siglip2")


@dataclass(frozen=True, slots=True)
class ZeroShotHead:
    """``logits = scale * cosine + bias``; ``sigmoid`` picks per-label sigmoid over softmax."""

    scale: float
    bias: float = 0.0
    sigmoid: bool = False
    source: str = "default"  # where the numbers came from, for reports


def zero_shot_head(model: Any, model_type: str) -> ZeroShotHead:
    """Read the model's learned scale (and bias) as plain floats; see the module docstring."""
    sigmoid = model_type in _SIGMOID_FAMILIES
    log_scale = _scalar(getattr(model, "logit_scale", None))
    if log_scale is not None:
        bias = _scalar(getattr(model, "logit_bias", None)) if sigmoid else None
        return ZeroShotHead(math.exp(log_scale), bias or 0.0, sigmoid, "logit_scale")
    temperature = _scalar(getattr(model, "temperature", None))
    if temperature is not None and temperature > 0:
        return ZeroShotHead(1.0 / temperature, 0.0, sigmoid, "temperature")
    return ZeroShotHead(CLIP_SCALE, 0.0, sigmoid, "default")


def _scalar(value: Any) -> float | None:
    """A one-element parameter or tensor as a float; None when absent or not a scalar."""
    if value is None:
        return None
    try:
        number = float(value.detach().float().reshape(-1)[0]) if hasattr(value, "detach") else None
    except (IndexError, RuntimeError, TypeError):
        return None
    return number if number is not None and math.isfinite(number) else None
