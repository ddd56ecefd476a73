"""Which device and precision the caller asked for, before any hardware is probed.

What the caller did not choose comes from the environment (``XMODAL_DEVICE``,
``XMODAL_PRECISION``), read when an encoder is loaded rather than at import, so one shell, one test
run or one machine can change the default of every command and every ``load_encoder`` call.
This module imports no torch, so the CLI can build its arguments from it cheaply;
:mod:`xmodal.encoders.hardware` turns ``auto`` into what the hardware does well.
"""

from __future__ import annotations

import os
import re

from xmodal.errors import XmodalError

PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")
DEVICE_FORMS = "auto, cpu, cuda, cuda:N, mps"
DEVICE_ENV = "XMODAL_DEVICE"
PRECISION_ENV = "XMODAL_PRECISION"
_DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def requested_precision(precision: str | None = None) -> str:
    """``precision`` when given, else ``$XMODAL_PRECISION``, else ``auto``.

    A bad environment value is an error rather than ``auto``: whoever set it expects it to take
    effect, and silently running another precision would hide the typo.
    """
    if precision is not None:
        return precision
    value = os.environ.get(PRECISION_ENV, "").strip()
    if not value:
        return "auto"
    if value not in PRECISION_CHOICES:
        raise XmodalError(f"{PRECISION_ENV}={value!r} is not one of {', '.join(PRECISION_CHOICES)}")
    return value


def requested_device(device: str | None = None) -> str:
    """``device`` when given, else ``$XMODAL_DEVICE``, else ``auto``."""
    if device is not None:
        return device
    value = os.environ.get(DEVICE_ENV, "").strip()
    if not value:
        return "auto"
    if not _DEVICE_PATTERN.fullmatch(value):
        raise XmodalError(f"{DEVICE_ENV}={value!r} is not one of {DEVICE_FORMS}")
    return value
