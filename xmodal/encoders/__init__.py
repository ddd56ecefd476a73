"""Pretrained image/text towers -> float32, L2-normalised numpy rows.

``Encoder`` and ``load_encoder`` are imported on first use, so decoding workers that only need
:mod:`xmodal.encoders.preprocess` never import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from xmodal.encoders.spec import EncoderSpec

if TYPE_CHECKING:
    from xmodal.encoders.encoder import Encoder, load_encoder

__all__ = ["Encoder", "EncoderSpec", "load_encoder"]


def __getattr__(name: str) -> Any:
    if name in ("Encoder", "load_encoder"):
        from xmodal.encoders import encoder

        return getattr(encoder, name)
    raise AttributeError(f"module 'xmodal.encoders' has no attribute {name!r}")
