"""``xmodal demo``: the offline end-to-end path on a synthetic world.

Trains (or reuses) the tiny demo model, writes a held-out world the model never saw, indexes it
through the same pipeline as ``xmodal index``, measures text-to-image precision@5 through the
same Retriever the UI uses, and optionally serves the UI.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from xmodal.demo.evaluate import attribute_queries
from xmodal.demo.train import default_cache_dir, ensure_demo_model, is_complete
from xmodal.demo.world import WorldItem, make_world
from xmodal.encoders import load_encoder
from xmodal.index import Collection
from xmodal.pipelines.indexing import IndexConfig, IndexReport, index_paths
from xmodal.pipelines.search import Retriever

log = logging.getLogger(__name__)

HELD_OUT_SEED = 20261126  # differs from every training seed: the demo searches unseen images


@dataclass(frozen=True)
class DemoOptions:
    directory: Path | None = None  # default: beside the cached model
    model_dir: Path | None = None  # default: the cached demo model (trained when missing)
    n_images: int = 720
    k: int = 5
    workers: int | None = None


@dataclass(frozen=True)
class DemoResult:
    model_dir: Path
    world_dir: Path
    collection_dir: Path
    report: IndexReport
    precision_at_k: float
    k: int
    n_queries: int


def model_line(model_dir: Path | None = None) -> str:
    """What preparing the model will do: reuse the cache, or train once (2,000 steps)."""
    target = Path(model_dir) if model_dir is not None else default_cache_dir()
    if is_complete(target):
        return f"xmodal demo: using the cached demo model at {target}"
    return (
        "xmodal demo: training the demo model once (2,000 steps, about a minute on 2 cores), "
        f"cached at {target} ..."
    )


def build_demo(options: DemoOptions = DemoOptions()) -> tuple[DemoResult, Retriever]:
    """Model, world, collection and measured precision; returns a ready Retriever too."""
    model_dir = ensure_demo_model(options.model_dir)
    root = options.directory or default_cache_dir().parent / "demo-world"
    world_dir, collection_dir = Path(root) / "world", Path(root) / "collection"
    items = make_world(world_dir, options.n_images, seed=HELD_OUT_SEED, image_format="jpg")
    _write_sidecar_captions(items)
    encoder = load_encoder(model_dir)
    with Collection.create(collection_dir, encoder.spec.to_dict(), overwrite=True) as collection:
        report = index_paths(
            encoder, collection, [world_dir / "images"], IndexConfig(workers=options.workers)
        )
    retriever = Retriever(encoder, Collection.open(collection_dir))
    queries = attribute_queries(items)
    score = precision_through_retriever(retriever, items, queries, options.k)
    result = DemoResult(
        model_dir, world_dir, collection_dir, report, score, options.k, len(queries)
    )
    return result, retriever


def precision_through_retriever(
    retriever: Retriever, items: Sequence[WorldItem], queries: Sequence, k: int
) -> float:
    """Mean share of the top-k hits that show everything the query names."""
    by_path = {os.path.realpath(item.path): item for item in items}
    shares = []
    for text, wanted in queries:
        hits = retriever.search(text, k=k)
        relevant = [
            by_path[os.path.realpath(h.record.path)].attributes.matches(wanted) for h in hits
        ]
        shares.append(sum(relevant) / k)
    return sum(shares) / len(shares)


def _write_sidecar_captions(items: Sequence[WorldItem]) -> None:
    """``image.txt`` beside each image: the caption convention ``xmodal index`` reads."""
    for item in items:
        Path(item.path).with_suffix(".txt").write_text(item.caption + "\n", encoding="utf-8")
