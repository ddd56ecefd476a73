"""Device and precision choice: bf16 only where the hardware makes it fast and safe."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import torch

from xmodal.encoders.settings import (
    DEVICE_FORMS,
    PRECISION_CHOICES,
    requested_device,
    requested_precision,
)
from xmodal.errors import XmodalError

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """True when the CPU executes bf16 matmuls natively (AMX or AVX-512 BF16).

    On other CPUs bf16 is emulated and slower than fp32, so ``auto`` keeps fp32 there.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    return any(flag in flags.split() for flag in _CPU_BF16_FLAGS)


def resolve(device: str | None, precision: str | None) -> tuple[torch.device, str]:
    """The device and concrete precision an encoder runs in; None means "the default".

    The one place defaults are settled: argument, else environment, else ``auto``, and ``auto``
    by the hardware (:func:`resolve_device`, :func:`resolve_precision`).
    """
    chosen_precision = requested_precision(precision)  # a bad value fails before any probing
    torch_device = resolve_device(requested_device(device))
    return torch_device, resolve_precision(chosen_precision, torch_device)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise XmodalError(f"unknown device {device!r}; use {DEVICE_FORMS}") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise XmodalError("device 'cuda' requested but torch sees no CUDA GPU; use --device cpu")
    return resolved


def resolve_precision(precision: str, device: torch.device) -> str:
    """Map ``auto`` to the fastest precision that keeps embeddings within 0.999 cosine of fp32."""
    if precision != "auto":
        if precision not in PRECISIONS:
            choices = ", ".join(PRECISION_CHOICES)
            raise XmodalError(f"unknown precision {precision!r}; use one of {choices}")
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and cpu_has_fast_bf16():
        return "bf16"
    return "fp32"
