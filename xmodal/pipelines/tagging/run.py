"""Tagging a collection from its stored embeddings, and classifying image files ad hoc.

A collection keeps every item's raw embedding, so tagging never reads or decodes an image: it
embeds the labels (one prompt-ensemble row each) and scores the stored rows. Only items without
tags under the current settings are scored, so a second run after adding images touches only the
new ones. When the labels, templates or thresholds differ from those the stored tags were made
with, every item is tagged again: tags from two label sets never mix.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xmodal.index import Collection
from xmodal.index.tagstore import Tag
from xmodal.pipelines.tagging.labels import TagSettings
from xmodal.pipelines.tagging.zeroshot import choose, label_embeddings, probabilities

log = logging.getLogger(__name__)

_CHUNK = 65536  # stored rows scored at a time: memory stays at CHUNK x dim floats


@dataclass(frozen=True)
class TagReport:
    """What a tagging run did: items tagged now, items already tagged, label counts."""

    tagged: int
    already_tagged: int
    retagged_all: bool
    label_counts: dict[str, int]
    untagged_below_bar: int  # scored items no label of which passed --min-prob


@dataclass(frozen=True)
class Classification:
    """One image's labels, most probable first."""

    path: str
    labels: tuple[Tag, ...]


def tag_collection(encoder, collection: Collection, settings: TagSettings) -> TagReport:
    """Tag the untagged items of a writable ``collection`` and commit; see the module docstring."""
    collection.check_encoder(encoder.spec.to_dict())
    fingerprint = settings.fingerprint()
    previous = collection.tag_settings()
    retag = previous != fingerprint  # a first run tags everything, as a change of settings does
    ids, rows = collection.raw_embeddings()
    pending = ids if retag else np.asarray(collection.untagged_ids(), np.int64)
    if not retag and not len(pending):
        return TagReport(0, collection.count, False, {}, 0)
    label_rows = label_embeddings(encoder, settings.labels, settings.templates)
    head = encoder.zero_shot_head()
    wanted = np.isin(ids, pending)
    tags: dict[int, tuple[Tag, ...]] = {}
    for start in range(0, len(ids), _CHUNK):
        mask = wanted[start : start + _CHUNK]
        if not mask.any():
            continue
        chunk = np.asarray(rows[start : start + _CHUNK][mask], np.float32)
        probs = probabilities(chunk, label_rows, head)
        picked = choose(probs, settings.labels, settings.top, settings.min_prob)
        tags.update(zip(ids[start : start + _CHUNK][mask].tolist(), picked, strict=True))
    collection.put_tags(tags, reset=fingerprint if retag else None)
    collection.commit()
    counts: dict[str, int] = {}
    for chosen in tags.values():
        for tag in chosen:
            counts[tag.label] = counts.get(tag.label, 0) + 1
    empty = sum(1 for chosen in tags.values() if not chosen)
    log.info("tagged %d items (%s)", len(tags), "all again" if retag else "new ones")
    retagged_all = retag and previous is not None
    return TagReport(len(tags), collection.count - len(tags), retagged_all, counts, empty)


def classify_images(
    encoder, paths: Sequence[str | Path], settings: TagSettings
) -> list[Classification]:
    """Zero-shot labels of image files, in input order; nothing is stored anywhere."""
    label_rows = label_embeddings(encoder, settings.labels, settings.templates)
    images = [encoder.load(path) for path in paths]  # one clear error per undecodable file
    probs = probabilities(encoder.encode_images(images), label_rows, encoder.zero_shot_head())
    picked = choose(probs, settings.labels, settings.top, settings.min_prob)
    return [Classification(str(p), tags) for p, tags in zip(paths, picked, strict=True)]
