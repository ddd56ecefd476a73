"""Settings of the search app, kept apart from the layout so the CLI and tests can build them."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class AppConfig:
    """What the search UI and its server allow.

    The limits are enforced twice on purpose: Gradio bounds its widgets, and the handlers clamp
    again because API callers do not go through the widgets.
    """

    default_k: int = 24
    max_k: int = 100
    thumbnail_side: int = 512
    caption_chars: int = 120
    max_text_chars: int = 1000
    max_upload_bytes: int = 20 * 1024 * 1024
    max_upload_pixels: int = 40_000_000
    # Queries handled at once. Their text encodings are merged into one batch (``batching``):
    # on a CPU one query already uses every core, so batching, not parallel passes, is what
    # raises throughput. More queries wait in line up to ``queue_max_size``; beyond that, 503.
    concurrency_limit: int = 4
    queue_max_size: int = 64
    # Thumbnails of the user's photos land in Gradio's cache folder; do not let them linger.
    cache_sweep_s: int = 3600
    # Largest side of an image served by id (``GET /api/image/{id}``, the larger view).
    max_image_side: int = 2048
    # Open connections beyond this are refused with 503 by the HTTP server itself.
    max_connections: int = 256
    # When set, every request (page, API, Gradio's own routes) must carry this token.
    auth_token: str | None = field(default=None, repr=False)
    # Origins allowed to call the API from another site's page (e.g. a hosted clip-front).
    cors_origins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 1 <= self.default_k <= self.max_k:
            raise ValueError(f"default_k must be in 1..{self.max_k}, got {self.default_k}")
        sizes = ("thumbnail_side", "max_image_side", "max_upload_bytes", "max_upload_pixels")
        for name in (*sizes, "max_connections"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        if self.concurrency_limit < 1 or self.queue_max_size < 1:
            raise ValueError("concurrency_limit and queue_max_size must be positive")
        if self.auth_token is not None and len(self.auth_token) < 8:
            raise ValueError("auth_token must have at least 8 characters")
