"""The xmodal error hierarchy.

Library code raises these with messages that tell the user what to do; only ``cli.py`` and
``app/`` turn them into exit codes or UI messages.
"""

from __future__ import annotations


class XmodalError(Exception):
    """Base class of every error xmodal raises on purpose."""


class ModelLoadError(XmodalError):
    """A model could not be loaded (not cached and offline, unsafe weights, not a dual encoder)."""


class ImageDecodeError(XmodalError):
    """An input could not be decoded into an RGB image.

    ``reason`` is a short machine-readable code (``empty``, ``not-an-image``, ``truncated``,
    ``decompression-bomb``, ``unreadable``, ``unsupported``, ``too-large``, ...); ``source``
    names the input.
    """

    def __init__(self, reason: str, message: str, source: str | None = None) -> None:
        self.reason = reason
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{message} [{reason}]")


class CollectionError(XmodalError):
    """A collection directory is missing, unreadable or used the wrong way."""


class CollectionCorruptError(CollectionError):
    """A file of a collection failed its checksum or could not be parsed."""


class CollectionLockedError(CollectionError):
    """Another process is writing the collection."""


class EncoderMismatchError(CollectionError):
    """A query encoder differs from the encoder that built the collection."""


class FilterError(XmodalError):
    """A search filter (``where``) could not be parsed; the message names the bad clause."""
