"""xmodal: cross-modal (image <-> text) embedding and retrieval.

The public API is imported lazily, so ``import xmodal`` stays cheap (no torch until an encoder
is needed).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from xmodal.errors import (
    CollectionCorruptError,
    CollectionError,
    CollectionLockedError,
    EncoderMismatchError,
    ImageDecodeError,
    ModelLoadError,
    XmodalError,
)

if TYPE_CHECKING:
    from xmodal.encoders import Encoder, EncoderSpec, load_encoder
    from xmodal.images import load_image
    from xmodal.index import Collection, Hit, Record
    from xmodal.pipelines.search import Retriever

__version__ = "0.1.0"

_LAZY = {
    "load_encoder": "xmodal.encoders",
    "Encoder": "xmodal.encoders",
    "EncoderSpec": "xmodal.encoders",
    "load_image": "xmodal.images",
    "Collection": "xmodal.index",
    "Hit": "xmodal.index",
    "Record": "xmodal.index",
    "Retriever": "xmodal.pipelines.search",
}

__all__ = [
    "Collection",
    "Encoder",
    "EncoderSpec",
    "Hit",
    "Record",
    "Retriever",
    "load_encoder",
    "load_image",
    "CollectionCorruptError",
    "CollectionError",
    "CollectionLockedError",
    "EncoderMismatchError",
    "ImageDecodeError",
    "ModelLoadError",
    "XmodalError",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'xmodal' has no attribute {name!r}")
