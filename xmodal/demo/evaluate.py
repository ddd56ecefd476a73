"""Held-out text-to-image precision@k of a dual-encoder directory on a synthetic world.

Self-contained on purpose (transformers + torch + numpy only): it loads the directory with
``AutoModel``/``AutoProcessor`` exactly as a user would, so it checks the saved checkpoint, not
the training process's in-memory model.

The queries are one per attribute combination present in the world, at two levels of detail:
colour + shape ("a green square") and size + colour + shape ("a small red circle"). A hit is
relevant when the image has every attribute the query names; precision@k is averaged over
queries. Queries with fewer than ``k`` relevant images are skipped (a balanced world of
``36 * m`` images with ``m >= k`` has none).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import AutoModel, AutoProcessor

from xmodal.demo.world import WorldItem, article

logger = logging.getLogger(__name__)

Query = tuple[str, dict[str, str]]


def attribute_queries(items: Sequence[WorldItem]) -> list[Query]:
    """(text, wanted attributes) for every colour+shape and size+colour+shape in ``items``."""
    seen: dict[str, dict[str, str]] = {}
    for item in items:
        a = item.attributes
        seen[f"{article(a.colour)} {a.colour} {a.shape}"] = {"colour": a.colour, "shape": a.shape}
        seen[f"a {a.size} {a.colour} {a.shape}"] = {
            "size": a.size,
            "colour": a.colour,
            "shape": a.shape,
        }
    return sorted(seen.items())


def features(output: object) -> torch.Tensor:
    """The embedding tensor of ``get_*_features`` (transformers 5 returns an output object)."""
    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    if pooled is None:
        raise TypeError(f"no embeddings in {type(output).__name__}")
    return pooled


def _text_kwargs(model: torch.nn.Module) -> dict[str, object]:
    # SigLIP pools the last position, so it must see text padded the way it was trained.
    if getattr(model.config, "model_type", "") == "siglip":
        return {"padding": "max_length", "truncation": True}
    return {"padding": True, "truncation": True}


@torch.inference_mode()
def embed_world(
    model: torch.nn.Module, processor: object, items: Sequence[WorldItem], texts: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """L2-normalised (image rows, text rows) as float32 numpy arrays."""
    image_rows = []
    for start in range(0, len(items), 128):
        images = [Image.open(item.path).convert("RGB") for item in items[start : start + 128]]
        pixels = processor(images=images, return_tensors="pt")["pixel_values"]  # type: ignore[operator]
        image_rows.append(features(model.get_image_features(pixel_values=pixels)))
    tokens = processor(text=list(texts), return_tensors="pt", **_text_kwargs(model))  # type: ignore[operator]
    text_rows = features(model.get_text_features(**tokens))
    image = torch.nn.functional.normalize(torch.cat(image_rows).float(), dim=-1)
    text = torch.nn.functional.normalize(text_rows.float(), dim=-1)
    return image.numpy(), text.numpy()


def precision_at_k(
    image_rows: np.ndarray,
    text_rows: np.ndarray,
    items: Sequence[WorldItem],
    queries: Sequence[Query],
    k: int,
) -> float:
    """Mean share of relevant images among each query's top ``k`` by cosine similarity."""
    scores = text_rows @ image_rows.T
    shares = []
    for row, (_, wanted) in zip(scores, queries, strict=True):
        relevant = np.array([item.attributes.matches(wanted) for item in items])
        if relevant.sum() < k:
            continue
        top = np.argsort(-row, kind="stable")[:k]
        shares.append(float(relevant[top].mean()))
    if not shares:
        raise ValueError(f"no query has {k} relevant images; use a larger world")
    return float(np.mean(shares))


def evaluate_precision_at_k(
    model_dir: str | Path, world_items: Sequence[WorldItem], k: int = 5
) -> float:
    """Text-to-image precision@k of the checkpoint in ``model_dir`` on ``world_items``."""
    model = AutoModel.from_pretrained(model_dir, use_safetensors=True).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    queries = attribute_queries(world_items)
    image_rows, text_rows = embed_world(model, processor, world_items, [q for q, _ in queries])
    score = precision_at_k(image_rows, text_rows, world_items, queries, k)
    logger.info(
        "precision@%d = %.3f over %d queries, %d images", k, score, len(queries), len(world_items)
    )
    return score
