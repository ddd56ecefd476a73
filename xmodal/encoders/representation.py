"""Which vector an encoder returns: the shared-space embedding or a tower's inner features.

``embedding``  the shared image-text space (the projection head's output), L2-normalised.
``pooled``     the tower's pooled output before the projection into the shared space:
               CLIP: ``vision_model(...).pooler_output`` (the layer-normed class token) and
               ``text_model(...).pooler_output`` (the end-of-text token); the projection layers
               ``visual_projection`` / ``text_projection`` are left out.
               SigLIP / SigLIP 2: images: ``vision_model(...).pooler_output``, the attention-pooling
               head's output (SigLIP has no projection after it, so this is the embedding before
               normalisation); texts: the layer-normed last token, i.e. the input of the text
               model's linear ``head``, which is SigLIP's text projection.
``hidden:N``   ``hidden_states[N]`` of the tower (0: the token embeddings, 1..L: the output of layer
               N, before any final layer norm; negative N counts from the end), mean-pooled over
               tokens: all tokens for images, the real (unpadded) tokens for texts.

Only ``embedding`` is normalised: inner features are returned as the model computes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from xmodal.errors import XmodalError

_POOLED_FAMILIES = {"clip": "projection", "siglip": "head", "siglip2": "head"}
_ACCEPTED = "embedding, pooled or hidden:N (N an integer layer index; negative counts from the end)"


@dataclass(frozen=True)
class Representation:
    """A parsed representation; ``str()`` gives its canonical text."""

    kind: str  # "embedding" | "pooled" | "hidden"
    layer: int | None = None

    def __str__(self) -> str:
        return f"hidden:{self.layer}" if self.kind == "hidden" else self.kind


EMBEDDING = Representation("embedding")


def parse_representation(text: str | Representation) -> Representation:
    """Parse "embedding" | "pooled" | "hidden:N" (N may be negative)."""
    if isinstance(text, Representation):
        return text
    cleaned = str(text).strip().lower()
    if cleaned in ("embedding", "pooled"):
        return Representation(cleaned)
    kind, _, layer = cleaned.partition(":")
    if kind == "hidden":
        try:
            return Representation("hidden", int(layer))
        except ValueError:
            pass
    raise XmodalError(f"representation {text!r} is not understood; use {_ACCEPTED}")


def tower_config(model: Any, modality: str) -> Any:
    return model.config.vision_config if modality == "image" else model.config.text_config


def check_supported(model: Any, representation: Representation, modality: str) -> None:
    """Raise a clear XmodalError when ``model`` cannot produce ``representation``."""
    model_type = model.config.model_type
    if representation.kind == "pooled" and model_type not in _POOLED_FAMILIES:
        raise XmodalError(
            f"representation 'pooled' is defined for CLIP and SigLIP models, not {model_type}; "
            "use 'embedding' or 'hidden:N'"
        )
    if representation.kind == "hidden":
        layers = int(tower_config(model, modality).num_hidden_layers)
        if not -(layers + 1) <= int(representation.layer) <= layers:
            raise XmodalError(
                f"representation {representation}: the {modality} tower of {model_type} has "
                f"{layers} layers, so N must be in [{-(layers + 1)}, {layers}] (0: embeddings)"
            )


def image_features(
    model: Any, pixels: torch.Tensor, representation: Representation
) -> torch.Tensor:
    """Inner image features (``pooled`` or ``hidden:N``) as float32, not normalised."""
    hidden = representation.kind == "hidden"
    out = model.vision_model(pixel_values=pixels, output_hidden_states=hidden)
    if hidden:
        return out.hidden_states[representation.layer].float().mean(dim=1)
    return out.pooler_output.float()


def text_features(
    model: Any,
    tokens: dict[str, torch.Tensor],
    mask: torch.Tensor,
    representation: Representation,
) -> torch.Tensor:
    """Inner text features as float32; ``mask`` (n, t) marks the real tokens to average."""
    hidden = representation.kind == "hidden"
    out = model.text_model(**tokens, output_hidden_states=hidden)
    if hidden:
        states = out.hidden_states[representation.layer].float()
        weights = mask.to(states.device, states.dtype).unsqueeze(-1)
        return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
    if _POOLED_FAMILIES[model.config.model_type] == "head":
        return out.last_hidden_state[:, -1, :].float()  # the input of SigLIP's text head
    return out.pooler_output.float()
