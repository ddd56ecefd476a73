"""What the curation commands write: JSON-ready dicts, a CSV of group members, a keep list.

JSON and CSV carry paths as valid UTF-8 text through ``display_path``, the rule every front
end uses: bytes of a file name that are not UTF-8 show as ``\\xNN``; the id names the item
exactly. The keep list carries each path's exact bytes, one a line, so ``xmodal index @FILE``
or ``xmodal embed @FILE`` read back the very files.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from xmodal.errors import XmodalError
from xmodal.index import Collection
from xmodal.index.durable import Sink, durable_write
from xmodal.index.pathtext import display_path
from xmodal.pipelines.curation.duplicates import DuplicateReport
from xmodal.pipelines.curation.outliers import OutlierReport

_RECORD_BATCH = 10_000
UrlFor = Callable[[int], str]


def duplicates_dict(report: DuplicateReport, url_for: UrlFor | None = None) -> dict[str, Any]:
    """``{"groups": [{"kind", "keep", "members": [{"id", "path", "score"}]}], ...}``."""

    def member(m: Any) -> dict[str, Any]:
        row = {"id": m.id, "path": display_path(m.record.path), "score": m.score}
        return row | ({"image_url": url_for(m.id)} if url_for else {})

    return {
        "threshold": report.threshold,
        "keep_rule": report.keep,
        "considered": report.considered,
        "groups": [
            {
                "kind": g.kind,
                "keep": display_path(g.keeper.record.path),
                "members": [member(m) for m in g.members],
            }
            for g in report.groups
        ],
    }


def outliers_dict(report: OutlierReport, url_for: UrlFor | None = None) -> dict[str, Any]:
    """``{"k", "considered", "outliers": [{"id", "path", "score", "neighbours": [...]}]}``."""

    def row(item_id: int, path: str, score: float) -> dict[str, Any]:
        out = {"id": item_id, "path": display_path(path), "score": score}
        return out | ({"image_url": url_for(item_id)} if url_for else {})

    return {
        "k": report.k,
        "considered": report.considered,
        "outliers": [
            row(o.id, o.record.path, o.score)
            | {"neighbours": [row(n.id, n.record.path, n.score) for n in o.neighbours]}
            for o in report.outliers
        ],
    }


def duplicates_csv(report: DuplicateReport) -> str:
    """One row per group member: group number, kind, keep (1 for the keeper), id, path, score."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["group", "kind", "keep", "id", "path", "score"])
    for number, group in enumerate(report.groups, 1):
        for m in group.members:
            keep = int(m.id == group.keeper.id)
            writer.writerow([number, group.kind, keep, m.id, display_path(m.record.path), m.score])
    return buffer.getvalue()


def write_text_file(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) whole or not at all."""
    _write_whole(path, [text.encode("utf-8")])


def write_keep_list(collection: Collection, report: DuplicateReport, path: Path) -> int:
    """Write the paths to keep; returns how many.

    Kept: every considered item (matching the filter) that is in no group, plus each group's
    keeper; items outside the filter are not listed. One path a line, in catalog-id order, as
    the file name's bytes. A path holding a line break cannot be listed and is refused.
    """
    dropped = np.fromiter(report.dropped_ids, np.int64)
    kept = report.considered_ids[~np.isin(report.considered_ids, dropped)]
    _write_whole(path, _lines(collection, kept))
    return len(kept)


def _lines(collection: Collection, ids: np.ndarray) -> Iterator[bytes]:
    for start in range(0, len(ids), _RECORD_BATCH):
        batch = ids[start : start + _RECORD_BATCH]
        records = collection.get_records(batch)
        for item_id in batch.tolist():
            name = records[item_id].path
            if "\n" in name or "\r" in name:
                raise XmodalError(
                    f"cannot write the keep list: item {item_id}'s path holds a line break"
                )
            yield os.fsencode(name) + b"\n"


def _write_whole(path: Path, chunks: Iterable[bytes]) -> None:
    path = Path(path).absolute()
    if path.is_dir():
        raise XmodalError(f"{path} is a folder; give a file name to write")
    if not path.parent.is_dir():
        raise XmodalError(f"cannot write {path}: folder {path.parent} does not exist")

    def write(sink: Sink) -> None:
        for chunk in chunks:
            sink.write(chunk)

    durable_write(path.parent, path.name, write)
