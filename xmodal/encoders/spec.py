"""The identity card of an encoder, stored in every collection it builds."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class EncoderSpec:
    """What produced a set of embeddings.

    ``revision`` (a hub commit, or ``local-<hash>`` of a directory's weights) and ``dim``
    identify the embedding space: two encoders whose identities match produce comparable
    vectors. ``model_id`` is a name (for a directory, its folder name) and not part of it.
    ``source`` is where the weights were loaded from (a hub id or a directory), so a collection
    can reload its model. ``device`` and ``precision`` describe how the encoder ran; they change
    speed, not the space, so they are not part of the identity either.
    """

    model_id: str
    revision: str
    dim: int
    model_type: str
    source: str = ""
    preprocessing: dict[str, Any] = field(default_factory=dict)
    text_max_length: int = 77
    text_padding: str = "longest"
    device: str = "cpu"
    precision: str = "fp32"

    IDENTITY_FIELDS = ("revision", "dim")

    def identity(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.IDENTITY_FIELDS}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncoderSpec:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)
