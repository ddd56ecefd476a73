"""The clip-retrieval back-end protocol, so its ``ClipClient`` and web front end work unchanged.

``POST /knn-service``, ``POST /metadata`` and ``GET /indices-list`` take and return the shapes
of clip-retrieval's ``clip_back``. What xmodal cannot do is answered plainly: ``image_url`` is
refused (the server never fetches URLs) and there is no text index (``modality`` must be
``image``). The safety, violence, multilingual and aesthetic switches have no model behind them
here; they are accepted and have no effect.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from xmodal.app.admission import Admission
from xmodal.app.api import ERRORS, error_response, image_url
from xmodal.app.config import AppConfig
from xmodal.app.handlers import RawQuery, RetrieverLike, find, held_collection
from xmodal.app.query import QueryError, decode_base64_image, parse_k
from xmodal.index.pathtext import display_path
from xmodal.index.records import Hit

log = logging.getLogger(__name__)

NOTICE_HEADER = "X-Xmodal-Notice"


class KnnBody(BaseModel):
    """clip_back's knn-service request; unknown keys are ignored, as clip_back does."""

    model_config = ConfigDict(extra="ignore")

    text: str | None = None
    image: str | None = None
    image_url: str | None = None
    embedding_input: list[float] | None = None
    modality: str = "image"
    # Numbers, not ints: 0 or 1e400 get the shared k rule's message (400).
    num_images: float = 40
    num_result_ids: float | None = None
    indice_name: str | None = None
    use_mclip: bool = False
    deduplicate: bool = False
    use_safety_model: bool = False
    use_violence_detector: bool = False
    aesthetic_score: Any = None
    aesthetic_weight: Any = None


class MetadataBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    ids: list[int] = Field(default_factory=list)
    indice_name: str | None = None


def clip_router(
    retriever: RetrieverLike, config: AppConfig, admission: Admission, index_name: str
) -> APIRouter:
    """The three clip_back routes over one collection, listed as ``index_name``."""
    # ClipClient posts json.dumps(...) without a Content-Type header; clip_back reads it anyway.
    router = APIRouter(tags=["clip-retrieval"], strict_content_type=False)

    @router.get("/indices-list")
    def indices_list() -> list[str]:
        """The one index this server has."""
        return [index_name]

    @router.post("/knn-service", responses=ERRORS)
    async def knn_service(body: KnnBody, request: Request) -> Any:
        """Nearest neighbours of a text, a base64 image or an embedding."""
        try:
            _check_knn(body, index_name)
            wanted = body.num_images if body.num_result_ids is None else body.num_result_ids
            k = parse_k(wanted)
            hits = await admission.run(lambda: _knn(retriever, body, min(k, config.max_k), config))
        except Exception as exc:
            return error_response(exc)
        if body.deduplicate:
            hits = _dedup(hits)
        rows = [
            {
                **(_metadata(hit, request) if rank < body.num_images else {}),
                "id": hit.id,
                "similarity": hit.score,
            }
            for rank, hit in enumerate(hits)
        ]
        # The body stays clip_back's plain list (ClipClient reads nothing else); a lowered k
        # is said in a header.
        notice = f"Showing at most {config.max_k} results (asked for {k})."
        return JSONResponse(rows, headers={NOTICE_HEADER: notice} if k > config.max_k else None)

    @router.post("/metadata", responses=ERRORS)
    async def metadata(body: MetadataBody, request: Request) -> Any:
        """Caption and image URL for ids returned by ``/knn-service``."""
        if len(body.ids) > config.max_k:
            return error_response(QueryError(f"Ask for at most {config.max_k} ids at a time."))
        records = _records(retriever, body.ids)
        return [
            {"id": i, "metadata": _metadata(Hit(i, 0.0, records[i]), request)}
            for i in body.ids
            if i in records
        ]

    return router


def _check_knn(body: KnnBody, index_name: str) -> None:
    if body.image_url:
        raise QueryError(
            "This server does not fetch URLs; download the image and send it base64-encoded "
            "as 'image'."
        )
    if body.modality != "image":
        raise QueryError(
            f"This server has an image index only; use modality 'image', not {body.modality!r}."
        )
    if body.indice_name not in (None, index_name):
        raise QueryError(f"Unknown index {body.indice_name!r}; GET /indices-list names it.")
    if not (body.text or body.image or body.embedding_input):
        raise QueryError("must fill one of text, image and embedding_input")


def _knn(retriever: RetrieverLike, body: KnnBody, k: int, config: AppConfig) -> list[Hit]:
    if body.text or body.image:
        image = None if not body.image else decode_base64_image(body.image, config)
        return find(retriever, RawQuery(text=body.text, image=image, k=k), config).hits
    return _search_embedding(retriever, body.embedding_input or [], k)


def _search_embedding(retriever: RetrieverLike, embedding: list[float], k: int) -> list[Hit]:
    with held_collection(retriever) as collection:
        if collection is None:
            raise QueryError("Searching by embedding is not available on this server.")
        vector = np.asarray(embedding, dtype=np.float32)
        norm = float(np.linalg.norm(vector))
        if not np.isfinite(norm) or norm == 0.0:
            raise QueryError("embedding_input must be a non-zero vector of finite numbers.")
        return collection.search((vector / norm)[None, :], k=k)[0]


def _dedup(hits: list[Hit]) -> list[Hit]:
    """Keep the first hit of each file content (or path when the hash is unknown)."""
    seen: set[str] = set()
    kept = []
    for hit in hits:
        key = hit.record.content_hash or hit.record.path
        if key not in seen:
            seen.add(key)
            kept.append(hit)
    return kept


def _records(retriever: RetrieverLike, ids: list[int]) -> dict[int, Any]:
    with held_collection(retriever) as collection:
        return {} if collection is None or not ids else collection.get_records(ids)


def _metadata(hit: Hit, request: Request) -> dict[str, Any]:
    return {
        "url": image_url(request, hit.id),
        "caption": hit.record.caption or "",
        "path": display_path(hit.record.path),
    }
