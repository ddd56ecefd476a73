"""Pipeline pieces that need no model: worker policy, the prepare stream (sources: test_sources)."""

from __future__ import annotations

import pytest

from xmodal.pipelines import workers


def test_decoding_workers_leave_cpu_cores_to_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workers, "usable_cores", lambda: 2)
    assert workers.default_workers("cpu") == 0
    assert workers.default_workers("cuda") == 2
    monkeypatch.setattr(workers, "usable_cores", lambda: 32)
    assert workers.default_workers("cpu") == 8
    assert workers.default_workers("cuda:0") == 16
