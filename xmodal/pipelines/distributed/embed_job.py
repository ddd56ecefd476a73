"""The Ray Data pipeline: inputs -> decode (CPU tasks) -> embed (actor pool) -> shards.

The driver lists the inputs of the shards still to compute; Ray Data streams them through
``prepare_one`` in stateless CPU tasks and through an actor pool whose actors each load the
encoder once (on a GPU when ``gpus_per_actor`` > 0). Results come back in input order; the driver
gathers them per shard and commits each shard as soon as all of its inputs are back, so a killed
run loses at most the shards in flight.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from xmodal.encoders.preprocess import Preparer
from xmodal.errors import XmodalError
from xmodal.pipelines.distributed.shards import (
    EMBEDDED,
    FAILED,
    NOT_EMBEDDED,
    ShardPlan,
    ShardRow,
    ShardStore,
)
from xmodal.pipelines.sources import Item, Span

log = logging.getLogger(__name__)

MAX_BLOCKS = 4096
DECODE_MEMORY = 256 * 2**20  # a decoded full-size photo before resizing, with headroom


@dataclass(frozen=True)
class EmbedJob:
    """How the embedding stage runs on the cluster."""

    model: str  # what the actors pass to load_encoder: a hub id or a directory they can read
    device: str | None = None  # None: load_encoder's default where the actor runs
    precision: str | None = None
    actors: int = 1
    gpus_per_actor: float = 0.0
    cpus_per_actor: float = 1.0
    batch_size: int = 32


@dataclass(frozen=True)
class PendingShard:
    """A shard to compute; ``no_work`` marks inputs that need no decoding (see ``run``)."""

    plan: ShardPlan
    no_work: tuple[bool, ...]


def run_embedding(
    ray: ModuleType,
    shards: Sequence[PendingShard],
    job: EmbedJob,
    preparer: Preparer,
    store: ShardStore,
    on_shard: Callable[[ShardPlan], None] | None = None,
) -> None:
    """Compute and commit every shard of ``shards``."""
    by_index = {s.plan.index: s for s in shards}
    waiting = {s.plan.index: len(_todo(s)) for s in shards}  # results still to come per shard
    results: dict[int, dict[int, dict[str, Any]]] = {index: {} for index in by_index}

    def finish(index: int) -> None:
        pending = by_index.pop(index)
        rows, vectors = _assemble(pending, results.pop(index))
        store.write(pending.plan, rows, vectors)
        log.info(
            "committed %s (%d inputs, %d embedded)", pending.plan.name, len(rows), len(vectors)
        )
        if on_shard is not None:
            on_shard(pending.plan)

    for index in [index for index, n in waiting.items() if n == 0]:
        finish(index)  # nothing to decode: every input is unchanged or known to fail
    inputs = [_input_row(s, pos) for s in shards for pos in _todo(s)]
    if not inputs:
        return
    dataset = _dataset(ray, inputs, job, preparer)
    try:
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            for i in range(len(batch["shard"])):
                index, pos = int(batch["shard"][i]), int(batch["pos"][i])
                results[index][pos] = {key: batch[key][i] for key in _RESULT_COLUMNS}
                waiting[index] -= 1
                if waiting[index] == 0:
                    finish(index)
    except ray.exceptions.RayError as exc:
        raise XmodalError(
            f"embedding on Ray failed ({len(by_index)} shards not finished; finished ones are "
            f"kept for the next run): {_first_line(exc)}; check that every node can load the "
            f"model {job.model!r} (a path all nodes see, or a hub id cached on each)"
        ) from exc


def _first_line(exc: BaseException) -> str:
    """Ray's error text without its remote traceback."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(exc).__name__


_RESULT_COLUMNS = ("ok", "vector", "reason", "message", "width", "height", "content_hash")


def _todo(shard: PendingShard) -> list[int]:
    return [pos for pos, skip in enumerate(shard.no_work) if not skip]


def _input_row(shard: PendingShard, pos: int) -> dict[str, Any]:
    item = shard.plan.items[pos]
    span = item.span
    return {
        "shard": shard.plan.index,
        "pos": pos,
        "uri": item.uri,
        "size": item.size,
        "mtime": item.mtime,
        "span_path": span.path if span else "",
        "span_offset": span.offset if span else -1,
        "span_length": span.length if span else -1,
        "span_member": span.member if span else "",
    }


def _dataset(ray: ModuleType, inputs: list[dict[str, Any]], job: EmbedJob, preparer: Preparer):  # noqa: ANN202
    pixel_shape = _pixel_shape(preparer)
    # One block per decode batch lets every free CPU decode; the cap bounds scheduling overhead.
    blocks = max(1, min(-(-len(inputs) // job.batch_size), MAX_BLOCKS))
    return (
        ray.data.from_items(inputs, override_num_blocks=blocks)
        .map_batches(
            decode_batch,
            fn_kwargs={"preparer": preparer, "pixel_shape": pixel_shape},
            batch_size=job.batch_size,
            batch_format="numpy",
            num_cpus=1,
            # Its working set: the batch's pixels plus decoding buffers. Requesting it also keeps
            # Ray Data from fusing decoding into the actors, so decoding scales with CPUs.
            memory=DECODE_MEMORY + job.batch_size * 4 * int(np.prod(pixel_shape)),
        )
        .map_batches(
            EmbedActor,
            fn_constructor_kwargs={
                "model": job.model,
                "device": job.device,
                "precision": job.precision,
            },
            batch_size=job.batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=max(job.actors, 1)),
            num_gpus=job.gpus_per_actor,
            num_cpus=job.cpus_per_actor,
        )
    )


def _pixel_shape(preparer: Preparer) -> tuple[int, ...]:
    """The model input shape, so failed rows can hold zeros of the same shape as good ones."""
    from PIL import Image

    return tuple(preparer.preprocess(Image.new("RGB", (64, 64))).shape)


def decode_batch(
    batch: dict[str, np.ndarray], preparer: Preparer, pixel_shape: tuple[int, ...]
) -> dict[str, np.ndarray]:
    """Ray task: decode and preprocess one batch of inputs; a bad file fails only its row."""
    from xmodal.pipelines.maintenance import with_hashes
    from xmodal.pipelines.workers import prepare_one

    n = len(batch["uri"])
    out: dict[str, Any] = {"shard": batch["shard"], "pos": batch["pos"]}
    pixels = np.zeros((n, *pixel_shape), np.float32)
    ok = np.zeros(n, bool)
    texts: dict[str, list[str]] = {"reason": [], "message": [], "content_hash": []}
    sizes = np.full((n, 2), -1, np.int64)
    for i in range(n):
        item = _item(batch, i)
        prepared = prepare_one(item.source, preparer)
        if prepared.pixels is not None:
            pixels[i], ok[i] = prepared.pixels, True
            sizes[i] = (prepared.width or -1, prepared.height or -1)
        texts["reason"].append(prepared.reason or "")
        texts["message"].append(prepared.message or "")
        texts["content_hash"].append(with_hashes([item])[0].content_hash or "")
    out |= {key: np.asarray(values, dtype=object) for key, values in texts.items()}
    out |= {"pixels": pixels, "ok": ok, "width": sizes[:, 0], "height": sizes[:, 1]}
    return out


def _item(batch: dict[str, np.ndarray], i: int) -> Item:
    span = None
    if batch["span_path"][i]:
        span = Span(
            str(batch["span_path"][i]), int(batch["span_offset"][i]), int(batch["span_length"][i])
        )
    return Item(str(batch["uri"][i]), int(batch["size"][i]), float(batch["mtime"][i]), span=span)


class EmbedActor:
    """Ray actor: holds one encoder for its lifetime and embeds the decoded rows it is sent."""

    def __init__(self, model: str, device: str | None, precision: str | None) -> None:
        from xmodal.encoders import load_encoder

        self.encoder = load_encoder(model, device=device, precision=precision)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = batch["ok"].astype(bool)
        vectors = np.zeros((len(ok), self.encoder.spec.dim), np.float32)
        if ok.any():
            vectors[ok] = self.encoder.encode_pixels(batch["pixels"][ok])
        out = {key: value for key, value in batch.items() if key != "pixels"}
        out["vector"] = vectors
        return out


def _assemble(
    shard: PendingShard, results: dict[int, dict[str, Any]]
) -> tuple[list[ShardRow], np.ndarray]:
    """Shard rows in input order and the stacked vectors of the embedded ones."""
    rows: list[ShardRow] = []
    vectors: list[np.ndarray] = []
    for pos, item in enumerate(shard.plan.items):
        if shard.no_work[pos]:
            rows.append(ShardRow(item.uri, NOT_EMBEDDED))
            continue
        got = results[pos]
        content_hash = str(got["content_hash"]) or None
        if not got["ok"]:
            reason, message = str(got["reason"]) or "error", str(got["message"])
            rows.append(ShardRow(item.uri, FAILED, reason=reason, message=message,
                                 content_hash=content_hash))  # fmt: skip
            continue
        width, height = int(got["width"]), int(got["height"])
        rows.append(
            ShardRow(item.uri, EMBEDDED, len(vectors), None, None,
                     width if width >= 0 else None, height if height >= 0 else None, content_hash)
        )  # fmt: skip
        vectors.append(np.asarray(got["vector"], np.float32))
    dim = len(vectors[0]) if vectors else 0
    return rows, np.stack(vectors) if vectors else np.zeros((0, dim), np.float32)
