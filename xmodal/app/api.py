"""The JSON API: search, images by catalog id, info and health. Documented at ``/docs``.

Every search goes through ``handlers.find``, the same path the page uses, so limits and error
wording match. Model work runs on the bounded ``Admission`` queue; a full queue answers 503.
"""

from __future__ import annotations

import io
import logging
import time
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from xmodal.app.admission import Admission, Overloaded
from xmodal.app.config import AppConfig
from xmodal.app.handlers import UNEXPECTED_MESSAGE, Found, RawQuery, RetrieverLike, find
from xmodal.app.query import UploadTooLarge, decode_base64_image
from xmodal.errors import XmodalError
from xmodal.index.pathtext import display_path
from xmodal.index.records import Hit

log = logging.getLogger(__name__)

IMAGE_ROUTE = "api_image"


class SearchBody(BaseModel):
    """A query: text, a base64 image, or both; everything else optional."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(None, description="what to look for")
    image: str | None = Field(None, description="an image, base64 (a data: URL prefix is fine)")
    negative: str | None = Field(None, description="text to steer away from")
    image_weight: float | None = Field(None, description="text+image mix, 0..1 (default 0.5)")
    # A number, not an int: 0, 2.5 or 1e400 get the shared k rule's message (400), not a 422.
    k: float | None = Field(
        None, description="number of results, at least 1 (lowered to the server's max)"
    )
    threshold: float | None = Field(None, description="drop results scoring below this")
    where: str | None = Field(
        None, description="filter, e.g. 'ext:jpg and width>=1024' or 'tag:dog'"
    )
    mode: str | None = Field(
        None,
        description="vector (default), keyword (FTS5 over captions and file names) or hybrid "
        "(reciprocal rank fusion of both)",
    )
    keyword_weight: float | None = Field(
        None, description="hybrid: weight of the keyword list, 0..1 (default 0.5)"
    )


class TagRow(BaseModel):
    label: str
    prob: float


class ResultRow(BaseModel):
    id: int
    score: float
    path: str = Field(description="for display: undecodable bytes of a file name as \\xNN")
    caption: str | None
    image_url: str
    tags: list[TagRow] = Field(default_factory=list, description="zero-shot tags (xmodal tag)")


class KUsed(BaseModel):
    requested: int
    used: int = Field(description="the number searched for: requested, or the server's max")


class SearchResponse(BaseModel):
    results: list[ResultRow]
    took_ms: float
    k: KUsed
    message: str | None = Field(
        None, description="why there are no results, or that k was lowered; else null"
    )


class ErrorResponse(BaseModel):
    detail: str


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in (
        (400, "the query is malformed; detail says what to fix"),
        (401, "a token is required"),
        (413, "the image or body is too large"),
        (503, "the server is busy; retry shortly"),
    )
}


def error_response(exc: BaseException) -> JSONResponse:
    """The status and message for a failed query; internals never reach the client."""
    if isinstance(exc, Overloaded):
        return JSONResponse({"detail": str(exc)}, 503, headers={"Retry-After": "1"})
    if isinstance(exc, UploadTooLarge):
        return JSONResponse({"detail": str(exc)}, 413)
    if isinstance(exc, XmodalError):
        return JSONResponse({"detail": str(exc)}, 400)
    log.error("query failed", exc_info=exc)
    return JSONResponse({"detail": UNEXPECTED_MESSAGE}, 500)


def image_url(request: Request, item_id: int) -> str:
    return str(request.url_for(IMAGE_ROUTE, item_id=item_id))


def api_router(retriever: RetrieverLike, config: AppConfig, admission: Admission) -> APIRouter:
    """Routes under ``/api``; ``admission`` bounds the model work they may start."""
    router = APIRouter(prefix="/api", tags=["search"])

    @router.post("/search", response_model=SearchResponse, responses=ERRORS)
    async def search(body: SearchBody, request: Request) -> Any:
        """Search by text, image (base64) or both, with optional negative text and filter."""
        started = time.perf_counter()

        def work() -> Found:
            # Decoding the upload is model-side work too: it runs on the bounded queue.
            image = None if body.image is None else decode_base64_image(body.image, config)
            raw = RawQuery(
                text=body.text,
                image=image,
                k=body.k,
                threshold=body.threshold,
                negative=body.negative,
                image_weight=body.image_weight,
                where=body.where,
                mode=body.mode,
                keyword_weight=body.keyword_weight,
            )
            return find(retriever, raw, config)

        try:
            found = await admission.run(work)
        except Exception as exc:
            return error_response(exc)
        query = found.query
        return {
            "results": [result_row(hit, image_url(request, hit.id)) for hit in found.hits],
            "took_ms": round((time.perf_counter() - started) * 1e3, 2),
            "k": {"requested": query.k_requested or query.k, "used": query.k},
            "message": found.message,
        }

    @router.get("/image/{item_id}", name=IMAGE_ROUTE, response_class=Response, responses=ERRORS)
    def image(
        item_id: int,
        size: int = Query(config.thumbnail_side, ge=16, le=config.max_image_side),
    ) -> Response:
        """The indexed image for a catalog id as JPEG, its longest side at most ``size``."""
        try:
            thumb = retriever.load_thumbnail(item_id, max_side=size)
        except XmodalError as exc:
            raise HTTPException(404, f"No image for id {item_id}: {exc}") from None
        buffer = io.BytesIO()
        thumb.convert("RGB").save(buffer, format="JPEG", quality=88)
        return Response(
            buffer.getvalue(),
            media_type="image/jpeg",
            headers={"Cache-Control": "private, max-age=300", "X-Content-Type-Options": "nosniff"},
        )

    @router.get("/info")
    def info() -> dict[str, Any]:
        """The collection (model, count, index, projection, dim) and the server's limits."""
        return {
            **retriever.describe(),
            "max_k": config.max_k,
            "default_k": config.default_k,
            "max_upload_bytes": config.max_upload_bytes,
            "max_upload_pixels": config.max_upload_pixels,
        }

    from xmodal.app.curation import add_curation_routes  # imports this module: not at the top

    add_curation_routes(router, retriever, admission)

    @router.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness, and how many queries are running or waiting."""
        return {"status": "ok", "queries_in_flight": admission.inside}

    return router


def result_row(hit: Hit, url: str) -> dict[str, Any]:
    return {
        "id": hit.id,
        "score": round(float(hit.score), 6),
        "path": display_path(hit.record.path),
        "caption": hit.record.caption,
        "image_url": url,
        "tags": [{"label": t.label, "prob": round(t.prob, 6)} for t in hit.tags],
    }


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 without the offending values: ``1e400`` (inf) or a lone surrogate in them
    cannot be written as JSON, and the default handler then failed with a 500."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    detail = [
        {
            "loc": [
                part if isinstance(part, int) else display_path(str(part)) for part in e["loc"]
            ],
            "msg": display_path(str(e.get("msg", ""))),
            "type": str(e.get("type", "")),
        }
        for e in errors
    ]
    return JSONResponse({"detail": detail}, 422)
