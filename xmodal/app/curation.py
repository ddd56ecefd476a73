"""Duplicates and outliers for the page and the API: plain functions and routes, no Gradio.

Both run on the bounded ``Admission`` queue (they read every embedding of the collection) and
show images only through the by-id image route, never by path.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from xmodal.app.admission import Admission
from xmodal.app.api import ERRORS, error_response, image_url
from xmodal.app.handlers import UNEXPECTED_MESSAGE, RetrieverLike, file_name, held_collection
from xmodal.errors import XmodalError
from xmodal.index.pathtext import display_path

log = logging.getLogger(__name__)

NOT_AVAILABLE = "Duplicates and outliers need a server over a collection."
PAGE_GROUPS = 50
THUMB_SIDE = 160


def _needed(collection: Any) -> Any:
    if collection is None:
        raise XmodalError(NOT_AVAILABLE)
    return collection


def duplicates_report(retriever: RetrieverLike, threshold: float, keep: str, where: str | None):
    from xmodal.pipelines.curation import DuplicateConfig, find_duplicates

    config = DuplicateConfig(threshold=threshold, keep=keep, where=where or None)
    with held_collection(retriever) as collection:
        return find_duplicates(_needed(collection), config)


def outliers_report(retriever: RetrieverLike, top: int, k: int, where: str | None):
    from xmodal.pipelines.curation import OutlierConfig, find_outliers

    config = OutlierConfig(top=top, k=k, where=where or None)
    with held_collection(retriever) as collection:
        return find_outliers(_needed(collection), config)


def add_curation_routes(router: APIRouter, retriever: RetrieverLike, admission: Admission) -> None:
    """``GET /api/duplicates`` and ``GET /api/outliers`` on ``router``."""
    from xmodal.pipelines.curation.output import duplicates_dict, outliers_dict

    @router.get("/duplicates", responses=ERRORS, tags=["curation"])
    async def duplicates(
        request: Request,
        threshold: float = Query(0.95, description="cosine threshold in (-1, 1]"),
        keep: str = Query("largest", description="largest, oldest, newest or first"),
        where: str | None = Query(None, description="consider only matching items"),
    ) -> Any:
        """Groups of exact and near-duplicates, keeper first, each member's cosine to it."""
        try:
            report = await admission.run(
                lambda: duplicates_report(retriever, threshold, keep, where)
            )
        except Exception as exc:
            return error_response(exc)
        return JSONResponse(duplicates_dict(report, lambda i: image_url(request, i)))

    @router.get("/outliers", responses=ERRORS, tags=["curation"])
    async def outliers(
        request: Request,
        top: int = Query(20, description="how many to list"),
        k: int = Query(10, description="neighbours judging each item"),
        where: str | None = Query(None, description="consider only matching items"),
    ) -> Any:
        """Items ranked by 1 - mean cosine to their k nearest neighbours, most isolated first."""
        try:
            report = await admission.run(lambda: outliers_report(retriever, top, k, where))
        except Exception as exc:
            return error_response(exc)
        return JSONResponse(outliers_dict(report, lambda i: image_url(request, i)))


# ----------------------------------------------------------------------------- page fragments
def duplicates_html(retriever: RetrieverLike, threshold: Any, keep: str, where: str | None) -> str:
    """The Duplicates tab: one row per group, keeper first; an error is one line."""
    report, error = _report(
        lambda: duplicates_report(retriever, float(threshold), keep, where),
        f"threshold must be a number, got {threshold!r}",
    )
    if error is not None:
        return error
    rows = [
        _row(
            f"{g.kind} · {len(g.members)} items",
            [(m.id, m.record.path, f"{m.score:.3f}", m.id == g.keeper.id) for m in g.members],
        )
        for g in report.groups[:PAGE_GROUPS]
    ]
    shown = f" (showing {PAGE_GROUPS})" if len(report.groups) > PAGE_GROUPS else ""
    return _page(html.escape(report.summary()) + shown, rows)


def outliers_html(retriever: RetrieverLike, top: Any, k: Any, where: str | None) -> str:
    """The Outliers tab: each outlier, then the neighbours it was judged against."""
    report, error = _report(
        lambda: outliers_report(retriever, int(top), int(k), where),
        "top and k must be whole numbers",
    )
    if error is not None:
        return error
    rows = [
        _row(
            f"score {o.score:.3f}",
            [(o.id, o.record.path, "outlier", True)]
            + [(n.id, n.record.path, f"{n.score:.3f}", False) for n in o.neighbours],
        )
        for o in report.outliers
    ]
    return _page(html.escape(report.summary()), rows)


def _report(make: Callable[[], Any], bad_number: str) -> tuple[Any, str | None]:
    """``make()``'s report, or the tab's one-line error: the one error edge of both tabs."""
    try:
        return make(), None
    except (TypeError, ValueError):
        return None, _error(bad_number)
    except XmodalError as exc:
        return None, _error(str(exc))
    except Exception:
        log.exception("curation failed")
        return None, _error(UNEXPECTED_MESSAGE)


def _error(message: str) -> str:
    return f'<p class="xmodal-error"><b>Error:</b> {html.escape(message)}</p>'


def _page(summary: str, rows: list[str]) -> str:
    return f"<p>{summary}</p>" + "".join(rows)


def _row(title: str, cells: list[tuple[int, str, str, bool]]) -> str:
    """One group side by side; the first cell (keeper or outlier) is outlined."""
    figures = []
    for item_id, path, label, marked in cells:
        name = html.escape(display_path(file_name(path)), quote=True)
        style = "outline:3px solid #2a7;" if marked else ""
        figures.append(
            f'<figure style="display:inline-block;margin:4px;text-align:center;{style}">'
            f'<img src="api/image/{item_id}?size={THUMB_SIDE}" alt="{name}" loading="lazy" '
            f'style="max-height:{THUMB_SIDE}px;max-width:{THUMB_SIDE}px"/>'
            f"<figcaption>{html.escape(label)} · {name}</figcaption></figure>"
        )
    return f"<div><h4>{html.escape(title)}</h4>{''.join(figures)}</div>"
