"""The selected result: its larger view and "more like this". Plain functions, no Gradio."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from xmodal.app.config import AppConfig
from xmodal.app.handlers import RetrieverLike
from xmodal.errors import XmodalError

log = logging.getLogger(__name__)

LARGE_SIDE = 1024


@dataclass(frozen=True, slots=True)
class Selection:
    """One chosen result: catalog id, a larger image (None if unavailable) and a caption line."""

    hit_id: int | None
    image: Image.Image | None
    details: str

    @classmethod
    def load(
        cls, retriever: RetrieverLike, hit_id: int | None, config: AppConfig, details: str = ""
    ) -> Selection:
        """The larger view of ``hit_id``, by catalog id only; failures become a message."""
        if hit_id is None:
            return cls(None, None, "Select a result first.")
        side = min(LARGE_SIDE, config.max_image_side)
        try:
            image = retriever.load_thumbnail(int(hit_id), max_side=side)
        except XmodalError as exc:
            log.warning("no larger view for %s: %s", hit_id, exc)
            return cls(int(hit_id), None, f"{details} (image unavailable)".strip())
        return cls(int(hit_id), image, details)


def select_result(
    retriever: RetrieverLike, shown: Sequence[Sequence[Any]], index: Any, config: AppConfig
) -> Selection:
    """The result at gallery position ``index`` among ``shown`` ``(id, label)`` pairs."""
    try:
        hit_id, label = shown[int(index)]
    except (TypeError, ValueError, IndexError):
        return Selection(None, None, "That result is no longer shown; search again.")
    return Selection.load(retriever, hit_id, config, details=str(label))
