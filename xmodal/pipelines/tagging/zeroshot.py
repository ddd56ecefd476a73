"""Zero-shot classification as in the CLIP paper: prompt ensembles and label probabilities."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from xmodal.encoders.logits import ZeroShotHead
from xmodal.index.tagstore import Tag


def label_embeddings(encoder, labels: Sequence[str], templates: Sequence[str]) -> np.ndarray:
    """One unit row per label: the mean of its unit template embeddings, renormalised.

    Averaging in embedding space (not averaging probabilities) is the CLIP paper's ensemble: it
    costs one text embedding per label at query time whatever the number of templates.
    """
    prompts = [template.replace("{}", label) for label in labels for template in templates]
    rows = encoder.encode_texts(prompts).astype(np.float32)
    rows /= np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    means = rows.reshape(len(labels), len(templates), -1).mean(axis=1)
    return means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)


def probabilities(items: np.ndarray, labels: np.ndarray, head: ZeroShotHead) -> np.ndarray:
    """(n items, n labels) probabilities from unit rows: softmax over labels, or SigLIP sigmoid.

    Item rows are renormalised here: stored embeddings are fp16, a little off unit length.
    """
    items = np.asarray(items, np.float32)
    items = items / np.maximum(np.linalg.norm(items, axis=1, keepdims=True), 1e-12)
    logits = head.scale * (items @ labels.T) + head.bias
    if head.sigmoid:
        return 1.0 / (1.0 + np.exp(-logits))
    logits -= logits.max(axis=1, keepdims=True)
    weights = np.exp(logits)
    return weights / weights.sum(axis=1, keepdims=True)


def choose(
    probs: np.ndarray, labels: Sequence[str], top: int | None, min_prob: float
) -> list[tuple[Tag, ...]]:
    """Per row, the ``top`` most probable labels with probability >= ``min_prob``, best first.

    Equal probabilities keep the label file's order, so results do not depend on the sort.
    """
    chosen = []
    for row in probs:
        order = np.argsort(-row, kind="stable")
        tags = [Tag(labels[j], float(row[j])) for j in order if row[j] >= min_prob]
        chosen.append(tuple(tags if top is None else tags[:top]))
    return chosen
