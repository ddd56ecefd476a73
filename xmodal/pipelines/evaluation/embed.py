"""Embeddings of a CaptionSet, encoded once and cached, so sweeps never re-encode.

The cache key is a SHA-256 over the encoder's identity and everything that changes its output
(model id, revision, dimension, preprocessing, text length and padding, precision), every image
file's bytes, and the captions with their image assignment. A cached entry is one ``.npz`` (no
pickle) written through a temp file and a rename, so a killed run never leaves half an entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from xmodal.index.durable import Sink, durable_write
from xmodal.pipelines.evaluation.datasets import CaptionSet, DatasetError

if TYPE_CHECKING:
    from xmodal.encoders import Encoder

log = logging.getLogger(__name__)

CACHE_VERSION = 1
_IMAGE_BATCH = 32


@dataclass(frozen=True)
class EmbeddedSet:
    """Unit image rows, unit caption rows and ``caption_image`` (caption -> image row)."""

    name: str
    model: str
    image_vectors: np.ndarray
    text_vectors: np.ndarray
    caption_image: np.ndarray
    failed_images: tuple[str, ...] = ()
    cached: bool = False

    @property
    def dim(self) -> int:
        return int(self.image_vectors.shape[1])


def default_cache_dir() -> Path:
    """``$XMODAL_CACHE/eval`` when set, else ``~/.cache/xmodal/eval``."""
    root = os.environ.get("XMODAL_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "xmodal") / "eval"


def cache_key(dataset: CaptionSet, encoder: Encoder) -> str:
    """Hex digest naming the embeddings of ``dataset`` under ``encoder``."""
    spec = encoder.spec
    identity = {
        "version": CACHE_VERSION,
        **spec.identity(),
        "preprocessing": spec.preprocessing,
        "text": [spec.text_max_length, spec.text_padding],
        "precision": spec.precision,
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode())
    for path in dataset.images:
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    digest.update(json.dumps(list(dataset.captions)).encode())
    digest.update(np.ascontiguousarray(dataset.caption_image, np.int64).tobytes())
    return digest.hexdigest()[:32]


def embed_dataset(
    dataset: CaptionSet,
    encoder: Encoder,
    *,
    cache_dir: Path | None = None,
    workers: int | None = None,
) -> EmbeddedSet:
    """Encode (or load from the cache) every image and caption of ``dataset``."""
    key = cache_key(dataset, encoder)
    path = (cache_dir or default_cache_dir()) / f"{key}.npz"
    model = encoder.spec.model_id
    if path.is_file():
        log.info("embeddings of %s from the cache %s", dataset.name, path)
        with np.load(path, allow_pickle=False) as data:
            images, texts, ok = data["images"], data["texts"], data["ok"]
        return _finish(dataset, model, images, texts, ok, cached=True)
    images, ok = encode_images(encoder, dataset.images, workers)
    texts = encoder.encode_texts(list(dataset.captions))
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"images": images, "texts": texts, "ok": ok}
    durable_write(path.parent, path.name, lambda sink: _save(sink, **arrays))
    return _finish(dataset, model, images, texts, ok, cached=False)


def _save(sink: Sink, **arrays: np.ndarray) -> None:
    np.savez(sink, **arrays)


def encode_images(
    encoder: Encoder, paths: tuple[Path, ...], workers: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """(unit rows, decoded-ok mask) through the batch pipeline's decode workers."""
    from xmodal.pipelines.workers import default_workers, make_pool, prepare_stream

    count = default_workers(encoder.spec.device) if workers is None else workers
    pool = make_pool(encoder.preparer, count)
    rows = np.zeros((len(paths), encoder.spec.dim), np.float32)
    ok = np.zeros(len(paths), bool)
    batch: list[np.ndarray] = []
    positions: list[int] = []
    try:
        stream = prepare_stream((str(p) for p in paths), encoder.preparer, pool, 4 * _IMAGE_BATCH)
        for position, prepared in enumerate(stream):
            if prepared.pixels is None:
                log.warning("skipping an image that does not decode: %s", prepared.message)
                continue
            batch.append(prepared.pixels)
            positions.append(position)
            if len(batch) == _IMAGE_BATCH:
                rows[positions] = encoder.encode_pixels(np.stack(batch))
                ok[positions], batch, positions = True, [], []
        if batch:
            rows[positions] = encoder.encode_pixels(np.stack(batch))
            ok[positions] = True
    finally:
        if pool is not None:
            pool.shutdown()
    return rows, ok


def _finish(
    dataset: CaptionSet,
    model: str,
    images: np.ndarray,
    texts: np.ndarray,
    ok: np.ndarray,
    *,
    cached: bool,
) -> EmbeddedSet:
    """Drop images that failed to decode, with their captions, and renumber the rest."""
    if not ok.any():
        raise DatasetError(f"no image of {dataset.name} could be decoded")
    failed = tuple(str(p) for p, good in zip(dataset.images, ok, strict=True) if not good)
    renumber = np.cumsum(ok) - 1
    keep = ok[dataset.caption_image]
    return EmbeddedSet(
        name=dataset.name,
        model=model,
        image_vectors=np.ascontiguousarray(images[ok], np.float32),
        text_vectors=np.ascontiguousarray(texts[keep], np.float32),
        caption_image=renumber[dataset.caption_image[keep]].astype(np.int64),
        failed_images=failed,
        cached=cached,
    )
