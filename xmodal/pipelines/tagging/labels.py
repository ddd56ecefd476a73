"""Reading and checking what a tagging run is asked for: labels, templates, thresholds."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from xmodal.errors import XmodalError
from xmodal.pipelines.tagging.templates import IMAGENET_TEMPLATES, SINGLE_TEMPLATE


class TagError(XmodalError):
    """A label file, template set or tagging option cannot be used."""


@dataclass(frozen=True)
class TagSettings:
    """Labels, prompt templates and the bar a label must pass to become a tag.

    An item's tags are its ``top`` most probable labels among those with probability at least
    ``min_prob`` (``top`` None: every label that passes).
    """

    labels: tuple[str, ...]
    templates: tuple[str, ...] = IMAGENET_TEMPLATES
    top: int | None = 3
    min_prob: float = 0.1

    def __post_init__(self) -> None:
        if self.top is not None and self.top < 1:
            raise TagError(f"--top must be at least 1, got {self.top}")
        if not 0.0 <= self.min_prob <= 1.0:
            raise TagError(f"--min-prob must be between 0 and 1, got {self.min_prob}")
        if len(self.labels) < 2:
            raise TagError("zero-shot tagging needs at least two labels")

    def fingerprint(self) -> str:
        """Identifies the settings: stored tags made with another fingerprint are redone."""
        data = [list(self.labels), list(self.templates), self.top, self.min_prob]
        return hashlib.sha256(json.dumps(data).encode()).hexdigest()[:32]


def load_labels(path: str | Path) -> tuple[str, ...]:
    """One label a line; blank lines and lines starting with ``#`` are skipped.

    An empty file, a single label or a label listed twice is refused: with one label a softmax
    gives every item probability 1, which says nothing.
    """
    path = Path(path)
    lines = _read_lines(path, "label file")
    seen: dict[str, int] = {}
    for number, label in lines:
        if label.casefold() in seen:
            first = seen[label.casefold()]
            raise TagError(f"label file {path} lists {label!r} twice (lines {first} and {number})")
        seen[label.casefold()] = number
    labels = tuple(label for _, label in lines)
    if not labels:
        raise TagError(f"label file {path} has no labels; write one label per line")
    if len(labels) == 1:
        raise TagError(
            f"label file {path} has only one label ({labels[0]!r}); zero-shot tagging "
            "needs at least two to choose between"
        )
    return labels


def load_templates(spec: str) -> tuple[str, ...]:
    """``default`` (the CLIP paper's 80), ``single`` ("a photo of a {}.") or a file of them."""
    if spec == "default":
        return IMAGENET_TEMPLATES
    if spec == "single":
        return (SINGLE_TEMPLATE,)
    path = Path(spec)
    lines = _read_lines(path, "template file")
    for number, template in lines:
        if template.count("{}") != 1:
            raise TagError(
                f"template file {path} line {number} needs exactly one {{}} where the label "
                f"goes: {template!r}"
            )
    if not lines:
        raise TagError(f"template file {path} has no templates; write one a line, e.g. a {{}}.")
    return tuple(template for _, template in lines)


def _read_lines(path: Path, what: str) -> list[tuple[int, str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TagError(f"{what} {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TagError(f"cannot read {what} {path}: {exc}") from None
    stripped = ((n, line.strip()) for n, line in enumerate(text.splitlines(), 1))
    return [(n, line) for n, line in stripped if line and not line.startswith("#")]
