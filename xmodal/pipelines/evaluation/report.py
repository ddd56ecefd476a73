"""The evaluation report as a markdown table (for people) and as a JSON-ready dict.

``JSON_SCHEMA`` describes what ``xmodal eval --json`` prints (``to_dict``).
"""

from __future__ import annotations

from dataclasses import asdict

from xmodal.pipelines.evaluation.sweep import DIRECTIONS, EvalReport, EvalRow

_SHORT = {"text_to_image": "T→I", "image_to_text": "I→T"}

JSON_SCHEMA = """\
One JSON object:
  dataset        str    dataset name (file stem; "stem:split" for Karpathy files)
  model          str    encoder model id
  n_images       int    images evaluated (decodable ones)
  n_captions     int    captions evaluated
  dim            int    embedding dimension
  cached         bool   embeddings came from the cache
  failed_images  [str]  images that did not decode (left out)
  chance         {direction: {"R@k": float}}  recall of random scores
  rows           [row]  exact first, then projections, indexes, quantisations
row:
  method           str    "exact", "projection", "index" or "quantisation"
  label            str    the table's method column, e.g. "auto -> Flat"
  dim              int    dimension searched
  bytes_per_vector float  stored bytes per gallery row
  recall           {direction: {"R@k": float}}  shares in 0..1, rounded to 4 places
  vs_exact         {direction: float} | null  recall@10 of the row's top 10 vs exact search
  queries_per_s    {direction: float}  one-thread batched search speed
  params           {}     index: factory, kind, search_params, tuned_recall_at_10, reason;
                          rescored quantisation: rescore
  curve            [{param, value, vs_exact, recall_at_10, queries_per_s}]  index settings
direction is "text_to_image" (each caption finds its image) or "image_to_text" (each image
finds any of its captions). Every row ranks by the same rule: ties count against the query.
"""


def to_dict(report: EvalReport) -> dict:
    """Plain JSON types; recall keys become "R@k" strings."""
    data = asdict(report)
    data["chance"] = {d: _keyed(v) for d, v in report.chance.items()}
    data["failed_images"] = list(report.failed_images)
    data["rows"] = [_row_dict(row) for row in report.rows]
    return data


def _row_dict(row: EvalRow) -> dict:
    data = asdict(row)
    data["recall"] = {d: _keyed(v) for d, v in row.recall.items()}
    data["curve"] = [asdict(point) for point in row.curve]
    return data


def _keyed(values: dict[int, float]) -> dict[str, float]:
    return {f"R@{k}": round(v, 4) for k, v in values.items()}


def table(report: EvalReport) -> str:
    """A markdown table: one row per method, recall in percent as papers print it."""
    ks = list(report.chance["text_to_image"])
    recall_heads = [f"{_SHORT[d]} R@{k}" for d in DIRECTIONS for k in ks]
    heads = ["method", "dim", "bytes/vec", *recall_heads, "vs exact@10", "T→I q/s"]
    lines = [_line(heads), _line(["---"] + ["---:"] * (len(heads) - 1))]
    for row in report.rows:
        recalls = [f"{100 * row.recall[d][k]:.1f}" for d in DIRECTIONS for k in ks]
        vs = "—" if row.vs_exact is None else f"{row.vs_exact['text_to_image']:.3f}"
        qps = row.queries_per_s.get("text_to_image")
        cells = [row.label, str(row.dim), f"{row.bytes_per_vector:.4g}", *recalls, vs]
        lines.append(_line([*cells, f"{qps:,.0f}" if qps else "—"]))
    chance = [f"{100 * report.chance[d][k]:.1f}" for d in DIRECTIONS for k in ks]
    lines.append(_line(["chance", "", "", *chance, "", ""]))
    return "\n".join(lines)


def summary(report: EvalReport) -> str:
    """Heading line plus the table, as ``xmodal eval`` prints it."""
    cached = "cached embeddings" if report.cached else "encoded now"
    head = (
        f"{report.dataset}: {report.n_images} images, {report.n_captions} captions, "
        f"model {report.model} ({report.dim}-d, {cached})"
    )
    notes = []
    if report.failed_images:
        notes.append(f"{len(report.failed_images)} images did not decode and were left out")
    notes.append(
        "recall in %; T→I: each caption finds its image; I→T: each image finds any caption; "
        "ties count against the query; vs exact@10: overlap of the T→I top 10 with exact search"
    )
    return "\n".join([head, "", table(report), "", *notes])


def _line(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"
