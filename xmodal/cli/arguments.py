"""Arguments that several ``xmodal`` commands share, defined once."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from xmodal.pipelines.sources import SourcePolicy

from xmodal.encoders.settings import DEVICE_FORMS, PRECISION_CHOICES

DEFAULT_MODEL = "openai/clip-vit-base-patch32"


def model_args(p: argparse.ArgumentParser, default_help: str | None = None) -> None:
    """--model, --device, --precision; without ``default_help`` the model defaults to
    DEFAULT_MODEL, with it the command resolves the default itself (e.g. the collection's)."""
    if default_help is None:
        p.add_argument("--model", "-m", default=DEFAULT_MODEL, help=f"default {DEFAULT_MODEL}")
    else:
        p.add_argument("--model", "-m", help=f"hub id or local model directory ({default_help})")
    # None: load_encoder settles it ($XMODAL_DEVICE / $XMODAL_PRECISION, else auto).
    p.add_argument("--device", help=f"{DEVICE_FORMS} (default: $XMODAL_DEVICE, else auto)")
    p.add_argument(
        "--precision",
        choices=PRECISION_CHOICES,
        help="auto: bf16 on GPUs and CPUs with native bf16, else fp32 "
        "(default: $XMODAL_PRECISION, else auto)",
    )


def decode_args(p: argparse.ArgumentParser) -> None:
    """--batch-size, --workers and --decode-timeout of the batch pipeline."""
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--workers", type=int, help="decoding processes (default: chosen for the device; 0: inline)"
    )
    p.add_argument(
        "--decode-timeout",
        type=_seconds,
        metavar="SECONDS",
        help="seconds one file may take to be read and decoded; a file that takes longer (a "
        "stalled network mount) is recorded as failed with reason timeout (default 60)",
    )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def source_args(p: argparse.ArgumentParser) -> None:
    """What the sources take (``xmodal.pipelines.sources.SourcePolicy``)."""
    p.add_argument(
        "--hidden", action="store_true", help="also take hidden files and folders (.name)"
    )
    follow_links_arg(p)
    p.add_argument(
        "--path-column",
        metavar="NAME",
        help="tables: the column of image paths (default: path, file, filepath, image, ...)",
    )
    p.add_argument(
        "--caption-column",
        metavar="NAME",
        help="tables: the column of captions (default: caption, text or title if present)",
    )


def follow_links_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--follow-links",
        action="store_true",
        help="follow symbolic links that lead out of the folder walked (default: skip them)",
    )


def source_policy(args: argparse.Namespace) -> SourcePolicy:
    """The SourcePolicy of the arguments ``source_args`` defined (absent ones at defaults)."""
    from xmodal.pipelines.sources import SourcePolicy

    return SourcePolicy(
        include_hidden=getattr(args, "hidden", False),
        follow_links=getattr(args, "follow_links", False),
        path_column=getattr(args, "path_column", None),
        caption_column=getattr(args, "caption_column", None),
    )


def representation_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--representation",
        "--layer",
        default="embedding",
        metavar="REP",
        help="embedding (shared space, L2-normalised; default), pooled (the tower's pooled "
        "output before the projection) or hidden:N (layer N mean-pooled; negative from the end)",
    )


def index_choice_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--index",
        metavar="KEY",
        help="auto (default for a new collection), flat, hnsw, ivf-flat, ivf-pq or a FAISS "
        "factory string; for an existing collection a different key rebuilds the index",
    )
    p.add_argument(
        "--memory-budget",
        metavar="SIZE",
        help="index memory budget, e.g. 4GB (default: half the RAM)",
    )
    p.add_argument(
        "--projection",
        metavar="SPEC",
        help="none (default), pca:N (keep N dims) or pca:F (keep share F of the variance), "
        "optionally :whiten; fitted on the stored embeddings; a different spec rebuilds the index",
    )
