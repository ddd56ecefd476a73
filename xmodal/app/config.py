"""Settings of the search app, kept apart from the layout so the CLI and tests can build them."""

from __future__ import annotations

from dataclasses import dataclass


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
    # A CPU encoder already uses every core for one query; running two at once only makes both
    # slower, so queries run one at a time and the queue, not the thread pool, absorbs bursts.
    concurrency_limit: int = 1
    queue_max_size: int = 64
    # Thumbnails of the user's photos land in Gradio's cache folder; do not let them linger.
    cache_sweep_s: int = 3600

    def __post_init__(self) -> None:
        if not 1 <= self.default_k <= self.max_k:
            raise ValueError(f"default_k must be in 1..{self.max_k}, got {self.default_k}")
        for name in ("thumbnail_side", "max_upload_bytes", "max_upload_pixels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        if self.concurrency_limit < 1 or self.queue_max_size < 1:
            raise ValueError("concurrency_limit and queue_max_size must be positive")
