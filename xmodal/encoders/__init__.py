"""Pretrained image/text towers -> float32, L2-normalised numpy rows."""

from xmodal.encoders.encoder import Encoder, load_encoder
from xmodal.encoders.spec import EncoderSpec

__all__ = ["Encoder", "EncoderSpec", "load_encoder"]
