"""Embeddings as features: ``xmodal embed SOURCE... -o OUT``.

Images (and/or texts: the items' captions and a texts file) are encoded into the chosen
representation and written to OUT:

- ``npy`` format: ``{image,text}_embeddings.npy`` (n, dim) plus ``{image,text}_metadata.parquet``
  whose ``id`` column is the row index;
- ``parquet`` format: one ``{image,text}_embeddings.parquet`` per modality with the metadata
  columns and an ``embedding`` fixed-size list column;
- ``failures.jsonl``: every input that produced no row (failed to decode, or skipped by policy);
- ``{image,text}_pca.npz`` with ``pca``: the fitted projection (``Projection.load(...).transform``
  maps new rows of the same representation the same way);
- ``embed.json``: model, representation, dtype, dims, counts; written last, so an OUT without it
  is unfinished.

Rows stream to temp files (flat memory), PCA is fitted on the finished raw rows, and every final
file appears by an atomic rename.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from xmodal.encoders import Encoder
from xmodal.encoders.representation import parse_representation
from xmodal.errors import XmodalError
from xmodal.index.projection import parse_projection
from xmodal.pipelines.features.output import ModalityOutput, RowSink, prepare_out_dir
from xmodal.pipelines.features.stream import (
    Dropped,
    Embedded,
    image_features,
    read_texts,
    tap_captions,
)
from xmodal.pipelines.features.writers import publish, temp_name, write_json
from xmodal.pipelines.sources import Item, SourcePolicy, iter_inputs
from xmodal.pipelines.workers import DECODE_TIMEOUT

log = logging.getLogger(__name__)

MANIFEST = "embed.json"
FAILURES = "failures.jsonl"
MODALITIES = ("image", "text", "both")
FORMATS = ("npy", "parquet")
DTYPES = ("float32", "float16")
IMAGE_SCHEMA = pa.schema(
    [("id", pa.int64()), ("uri", pa.string()), ("caption", pa.string()),
     ("width", pa.int32()), ("height", pa.int32())]
)  # fmt: skip
TEXT_SCHEMA = pa.schema([("id", pa.int64()), ("text", pa.string()), ("uri", pa.string())])
_TEXT_BUFFER = 1024
NO_CAPTION = "no-caption"  # --modality text: an image input without a caption gives no row


@dataclass(frozen=True)
class EmbedConfig:
    modality: str = "image"  # image | text | both
    representation: str = "embedding"  # embedding | pooled | hidden:N
    dtype: str = "float32"
    format: str = "npy"
    pca: str | None = None  # "N" axes, a share "0.9", optionally ":whiten"
    texts_file: str | None = None
    text_column: str | None = None
    batch_size: int = 32
    workers: int | None = None  # decoding processes; None: chosen for the device; 0: inline
    decode_timeout: float = DECODE_TIMEOUT  # seconds per input to be read and decoded
    progress: bool | None = None
    policy: SourcePolicy = field(default_factory=SourcePolicy)


@dataclass(frozen=True)
class EmbedReport:
    """What ``embed`` did with every input: seen = embedded + failed + skipped.

    An input is embedded when it gave a row: its image's (``image``, ``both``), or with
    ``--modality text`` its caption's; a caption-less input is then skipped as ``no-caption``.
    ``texts`` counts text rows, captions and ``--texts`` lines together.
    """

    out_dir: str
    seen: int
    embedded: int
    failed: int
    skipped: int
    texts: int
    seconds: float
    outputs: tuple[ModalityOutput, ...]
    first_failures: tuple[Dropped, ...] = field(default=(), repr=False)

    def summary(self) -> str:
        images = sum(o.rows for o in self.outputs if o.modality == "image")
        rate = f" ({images / self.seconds:.1f} images/s)" if images and self.seconds > 0 else ""
        return (
            f"seen {self.seen}: embedded {self.embedded}, failed {self.failed}, skipped "
            f"{self.skipped}; texts {self.texts}; {self.seconds:.1f} s{rate} -> {self.out_dir}"
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["first_failures"] = [asdict(d) for d in self.first_failures]
        return data


@dataclass
class _Tally:
    seen: int = 0
    embedded: int = 0
    failed: int = 0
    skipped: int = 0
    first: list[Dropped] = field(default_factory=list)


def check_config(config: EmbedConfig) -> None:
    for name, value, allowed in (
        ("modality", config.modality, MODALITIES),
        ("format", config.format, FORMATS),
        ("dtype", config.dtype, DTYPES),
    ):
        if value not in allowed:
            raise XmodalError(f"{name} {value!r} is not one of {', '.join(allowed)}")
    if config.texts_file and config.modality == "image":
        raise XmodalError("--texts gives texts to embed; add --modality text or --modality both")
    if config.batch_size < 1:
        raise XmodalError(f"batch size must be at least 1, got {config.batch_size}")
    parse_representation(config.representation)
    if config.pca:
        parse_projection(config.pca if config.pca.startswith("pca:") else f"pca:{config.pca}")


def embed_to_dir(
    encoder: Encoder, sources: list[str], out_dir: str | Path, config: EmbedConfig = EmbedConfig()
) -> EmbedReport:
    """Embed ``sources`` (and ``config.texts_file``) into ``out_dir``; see the module doc."""
    check_config(config)
    if not sources and not config.texts_file:
        raise XmodalError("nothing to embed: name image sources and/or a --texts file")
    representation = parse_representation(config.representation)
    out = prepare_out_dir(Path(out_dir), MANIFEST)
    started, tally = time.perf_counter(), _Tally()
    sinks = _open_sinks(encoder, out, config)
    texts = _TextBuffer(encoder, sinks.get("text"), config)
    failures = temp_name(out / FAILURES)
    with failures.open("w", encoding="utf-8") as handle:
        inputs = iter_inputs(sources, config.policy) if sources else iter(())
        if "text" in sinks:
            inputs = tap_captions(inputs, texts.add)
        if "image" in sinks:
            _embed_images(encoder, inputs, sinks["image"], config, tally, handle)
        else:
            _count_only(inputs, tally, handle)
        if config.texts_file:
            for text, uri in read_texts(config.texts_file, config.text_column):
                texts.add(text, uri)
        texts.flush()
    publish(failures, out / FAILURES)
    outputs = tuple(sink.finish(config.format, np.dtype(config.dtype), config.pca)
                    for sink in sinks.values())  # fmt: skip
    report = EmbedReport(
        out_dir=str(out),
        seen=tally.seen,
        embedded=tally.embedded,
        failed=tally.failed,
        skipped=tally.skipped,
        texts=texts.rows,
        seconds=time.perf_counter() - started,
        outputs=outputs,
        first_failures=tuple(tally.first),
    )
    write_json(_manifest(encoder, config, str(representation), report), out / MANIFEST)
    return report


def _open_sinks(encoder: Encoder, out: Path, config: EmbedConfig) -> dict[str, RowSink]:
    sinks: dict[str, RowSink] = {}
    if config.modality in ("image", "both"):
        dim = encoder.feature_dim(config.representation, "image")
        sinks["image"] = RowSink(out, "image", dim, IMAGE_SCHEMA)
    if config.modality in ("text", "both"):
        dim = encoder.feature_dim(config.representation, "text")
        sinks["text"] = RowSink(out, "text", dim, TEXT_SCHEMA)
    return sinks


def _embed_images(
    encoder: Encoder, inputs: Any, sink: RowSink, config: EmbedConfig, tally: _Tally, handle: Any
) -> None:
    representation = parse_representation(config.representation)
    bar = tqdm(unit="img", disable=True if config.progress is False else None)
    with bar:
        stream = image_features(
            encoder,
            inputs,
            representation,
            batch_size=config.batch_size,
            workers=config.workers,
            timeout=config.decode_timeout,
        )
        for event in stream:
            if isinstance(event, Embedded):
                tally.seen += len(event.items)
                tally.embedded += len(event.items)
                sink.add(event.vectors, _image_columns(event))
                bar.update(len(event.items))
            else:
                _drop(event, tally, handle)
                bar.update(1)


def _count_only(inputs: Any, tally: _Tally, handle: Any) -> None:
    """Texts only: an input gave a row when it has a caption (``tap_captions`` took it)."""
    for entry in inputs:
        if isinstance(entry, Item) and entry.caption:
            tally.seen += 1
            tally.embedded += 1
        elif isinstance(entry, Item):
            _drop(Dropped(entry.uri, "skipped", NO_CAPTION), tally, handle)
        else:
            _drop(Dropped(entry.uri, "skipped", entry.reason), tally, handle)


def _drop(event: Dropped, tally: _Tally, handle: Any) -> None:
    tally.seen += 1
    if event.status == "skipped":
        tally.skipped += 1
    else:
        tally.failed += 1
        log.info("failed: %s", event.message)
    if len(tally.first) < 20:
        tally.first.append(event)
    handle.write(json.dumps(asdict(event)) + "\n")


def _image_columns(event: Embedded) -> dict[str, list]:
    return {
        "uri": [item.uri for item in event.items],
        "caption": [item.caption for item in event.items],
        "width": [w for w, _ in event.sizes],
        "height": [h for _, h in event.sizes],
    }


class _TextBuffer:
    """Collects texts and encodes them a buffer at a time (sorted by length inside a buffer)."""

    def __init__(self, encoder: Encoder, sink: RowSink | None, config: EmbedConfig) -> None:
        self.encoder, self.sink, self.config = encoder, sink, config
        self.texts: list[str] = []
        self.uris: list[str] = []
        self.rows = 0

    def add(self, text: str, uri: str) -> None:
        self.texts.append(text)
        self.uris.append(uri)
        if len(self.texts) >= _TEXT_BUFFER:
            self.flush()

    def flush(self) -> None:
        if not self.texts or self.sink is None:
            return
        vectors = self.encoder.encode_texts(
            self.texts, representation=self.config.representation, progress=False
        )
        self.sink.add(vectors, {"text": self.texts, "uri": self.uris})
        self.rows += len(self.texts)
        self.texts, self.uris = [], []


def _all_normalized(outputs: tuple[ModalityOutput, ...]) -> bool | None:
    """True when every stored row of every output has norm 1 (measured); None: no rows."""
    measured = [o.normalized for o in outputs if o.normalized is not None]
    return all(measured) if measured else None


def _manifest(
    encoder: Encoder, config: EmbedConfig, representation: str, report: EmbedReport
) -> dict[str, Any]:
    spec = encoder.spec
    return {
        "format_version": 1,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": {
            "model_id": spec.model_id,
            "revision": spec.revision,
            "model_type": spec.model_type,
            "source": spec.source,
            "precision": spec.precision,
        },  # fmt: skip
        "representation": representation,
        "normalized": _all_normalized(report.outputs),
        "dtype": config.dtype,
        "format": config.format,
        "pca": config.pca,
        "counts": {
            "seen": report.seen,
            "embedded": report.embedded,
            "failed": report.failed,
            "skipped": report.skipped,
            "texts": report.texts,
        },  # fmt: skip
        "outputs": {o.modality: asdict(o) for o in report.outputs},
        "failures": FAILURES,
    }
