"""Ray, imported lazily: connect to a cluster (or start a local one) and keep its output quiet."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from types import ModuleType

from xmodal.errors import XmodalError

log = logging.getLogger(__name__)

INSTALL_HINT = "Ray is not installed; install it with: pip install 'xmodal[ray]'"


def import_ray() -> ModuleType:
    """The ``ray`` module with Ray Data, or an XmodalError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401  (the streaming pipeline needs the Data library too)
    except ImportError as exc:
        raise XmodalError(f"{INSTALL_HINT} ({exc})") from exc
    return ray


@contextlib.contextmanager
def connected(address: str | None) -> Iterator[ModuleType]:
    """A Ray session for one run: reuse an initialised one, else connect or start locally.

    ``address`` is a cluster address ("ray://head:10001", "head:6379" or "auto"); None starts a
    local cluster on this machine. Only a session started here is shut down afterwards, so a
    caller (a notebook, a test) that initialised Ray itself keeps it.
    """
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise XmodalError(
            f"cannot connect to the Ray cluster at {address or 'a new local cluster'}: {exc}; "
            "start it with 'ray start --head' or check the address"
        ) from exc
    log.info("Ray resources: %s", ray.cluster_resources())
    try:
        yield ray
    finally:
        ray.shutdown()


def quiet_data_context(ray: ModuleType) -> None:
    """Results must come back in input order (ids follow it); no progress bars in batch logs."""
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    with contextlib.suppress(AttributeError):  # renamed across Ray releases
        context.print_on_execution_start = False
