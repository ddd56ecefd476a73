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
               Chinese-CLIP / AltCLIP: images as CLIP; texts: the text tower's last hidden state
               at [CLS] (``<s>``), the input of ``text_projection``.
               ALIGN: images: the EfficientNet's pooled output (the embedding before
               normalisation; ALIGN projects only texts); texts: as Chinese-CLIP.
``hidden:N``   ``hidden_states[N]`` of the tower (0: the token embeddings, 1..L: the output of layer
               N, before any final layer norm; negative N counts from the end), mean-pooled over
               tokens: all tokens for images (the real patches for NaFlex), the real (unpadded)
               tokens for texts. Not defined for ALIGN's images (a CNN: no token sequence).

Only ``embedding`` is normalised: inner features are returned as the model computes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from xmodal.errors import XmodalError

_POOLED_FAMILIES = {
    "clip": "projection",
    "siglip": "head",
    "siglip2": "head",
    "chinese_clip": "cls",
    "altclip": "cls",
    "align": "cls",
}
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


def tower_width(model: Any, modality: str) -> int:
    """Width of a tower's pooled / hidden features.

    ALIGN's EfficientNet has no ``hidden_size``: its pooled output has the channels of its last
    stage, which ALIGN makes equal to ``projection_dim`` (the image side has no projection).
    """
    width = getattr(tower_config(model, modality), "hidden_size", None)
    return int(width or model.config.projection_dim)


def check_supported(model: Any, representation: Representation, modality: str) -> None:
    """Raise a clear XmodalError when ``model`` cannot produce ``representation``."""
    model_type = model.config.model_type
    if representation.kind == "pooled" and model_type not in _POOLED_FAMILIES:
        raise XmodalError(
            f"representation 'pooled' is not defined for {model_type} models; "
            "use 'embedding' or 'hidden:N'"
        )
    if representation.kind == "hidden" and modality == "image" and model_type == "align":
        raise XmodalError(
            "representation hidden:N is not defined for ALIGN images (its image tower is a CNN, "
            "with no token sequence to average); use 'embedding' or 'pooled'"
        )
    if representation.kind == "hidden":
        layers = int(tower_config(model, modality).num_hidden_layers)
        if not -(layers + 1) <= int(representation.layer) <= layers:
            raise XmodalError(
                f"representation {representation}: the {modality} tower of {model_type} has "
                f"{layers} layers, so N must be in [{-(layers + 1)}, {layers}] (0: embeddings)"
            )


def image_features(
    model: Any, inputs: dict[str, torch.Tensor], representation: Representation
) -> torch.Tensor:
    """Inner image features (``pooled`` or ``hidden:N``) as float32, not normalised.

    ``inputs``: ``pixel_values``, plus ``pixel_attention_mask`` and ``spatial_shapes`` for NaFlex.
    """
    hidden = representation.kind == "hidden"
    mask = inputs.get("pixel_attention_mask")
    out = model.vision_model(**inputs, output_hidden_states=hidden)
    if not hidden:
        return out.pooler_output.float()
    states = out.hidden_states[representation.layer].float()
    if mask is None:
        return states.mean(dim=1)
    return _masked_mean(states, mask)


def _masked_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.to(states.device, states.dtype).unsqueeze(-1)
    return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


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
        return _masked_mean(out.hidden_states[representation.layer].float(), mask)
    pooling = _POOLED_FAMILIES[model.config.model_type]
    if pooling == "head":
        return out.last_hidden_state[:, -1, :].float()  # the input of SigLIP's text head
    if pooling == "cls":
        return out.last_hidden_state[:, 0, :].float()  # the input of text_projection
    return out.pooler_output.float()
