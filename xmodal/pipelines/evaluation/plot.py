"""``--plot``: recall@10 against projected dimension, and queries/s against recall per index."""

from __future__ import annotations

from pathlib import Path

from xmodal.errors import XmodalError
from xmodal.pipelines.evaluation.sweep import EvalReport

_HINT = "plotting needs matplotlib: pip install 'xmodal[plot]'"


def write_plot(report: EvalReport, path: str | Path) -> Path:
    """Write a two-panel PNG of ``report`` to ``path``."""
    try:
        import matplotlib
    except ImportError as exc:
        raise XmodalError(_HINT) from exc
    matplotlib.use("Agg")  # no display needed; must precede pyplot
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    _dimension_panel(left, report)
    _speed_panel(right, report)
    figure.suptitle(f"{report.dataset} · {report.model}", fontsize=10)
    figure.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)
    plt.close(figure)
    return out


def _dimension_panel(axes, report: EvalReport) -> None:
    points = sorted(
        (row.dim, row.recall)
        for row in report.rows
        if row.method in ("exact", "projection") and "whiten" not in row.label
    )
    dims = [dim for dim, _ in points]
    for direction, name in (("text_to_image", "text→image"), ("image_to_text", "image→text")):
        axes.plot(dims, [r[direction][10] for _, r in points], marker="o", label=name)
    axes.set_xscale("log", base=2)
    axes.set_xlabel("dimension (PCA projection; largest = full)")
    axes.set_ylabel("recall@10")
    axes.set_ylim(0, 1.02)
    axes.grid(alpha=0.3)
    axes.legend()


def _speed_panel(axes, report: EvalReport) -> None:
    for row in report.rows:
        qps = row.queries_per_s.get("text_to_image")
        if row.curve:
            axes.plot(
                [p.recall_at_10 for p in row.curve],
                [p.queries_per_s for p in row.curve],
                marker=".",
                label=f"{row.params.get('factory', row.label)} (sweep)",
            )
        if row.method in ("exact", "index", "quantisation") and qps:
            axes.scatter([row.recall["text_to_image"][10]], [qps], marker="x", zorder=3)
            axes.annotate(row.label, (row.recall["text_to_image"][10], qps), fontsize=7)
    axes.set_yscale("log")
    axes.set_xlabel("text→image recall@10")
    axes.set_ylabel("queries/s (batched)")
    axes.grid(alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=7)
