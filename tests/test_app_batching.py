"""Concurrent text queries are encoded together, with the same vectors as one at a time."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from xmodal.app.batching import TextBatcher, batched


class SlowEncoder:
    """Records each encode_texts call; the first call blocks until released."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.release = threading.Event()
        self.spec = "the spec"
        self.fail_on: str | None = None

    def encode_texts(self, texts, **options):
        self.calls.append(list(texts))
        if len(self.calls) == 1:
            self.release.wait(10)
        if self.fail_on in texts:
            raise RuntimeError("encoder broke")
        return np.array([[float(len(t)), 1.0] for t in texts], dtype=np.float32)

    def encode_images(self, images):
        return "images passed through"


def _run_concurrently(batcher: TextBatcher, texts: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}

    def run(text: str) -> None:
        try:
            out[text] = batcher.encode_texts([text])
        except Exception as exc:
            out[text] = exc

    threads = [threading.Thread(target=run, args=(t,)) for t in texts]
    threads[0].start()
    wait_for(lambda: batcher.wrapped.calls, "the first text never reached the encoder")
    for thread in threads[1:]:
        thread.start()
    wait_for(
        lambda: len(batcher._pending) == len(texts) - 1,
        f"{len(texts) - 1} texts never queued behind the first",
    )
    batcher.wrapped.release.set()
    for thread in threads:
        thread.join(10)
    assert not any(t.is_alive() for t in threads), "a caller still waits 10 s after the release"
    return out


def wait_for(condition, failure: str, timeout: float = 10.0) -> None:
    """Poll ``condition`` until it holds; fail with ``failure`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{failure} (waited {timeout:g} s)")
        time.sleep(0.001)


def test_texts_arriving_during_an_encode_share_the_next_pass():
    batcher = TextBatcher(SlowEncoder())
    texts = ["a", "bb", "ccc", "dddd", "eeeee"]
    out = _run_concurrently(batcher, texts)
    assert batcher.wrapped.calls[0] == ["a"]
    assert sorted(batcher.wrapped.calls[1]) == ["bb", "ccc", "dddd", "eeeee"]
    assert len(batcher.wrapped.calls) == 2 and batcher.batches == 2
    for text in texts:  # each caller gets its own row
        assert np.array_equal(out[text], [[float(len(text)), 1.0]])


def test_batches_are_capped():
    batcher = TextBatcher(SlowEncoder(), max_batch=2)
    _run_concurrently(batcher, ["a", "b", "c", "d", "e"])
    assert [len(call) for call in batcher.wrapped.calls] == [1, 2, 2]


def test_an_encoder_error_reaches_every_waiter_of_that_batch():
    encoder = SlowEncoder()
    encoder.fail_on = "bad"
    batcher = TextBatcher(encoder)
    out = _run_concurrently(batcher, ["first", "bad", "other"])
    assert np.array_equal(out["first"], [[5.0, 1.0]])
    assert isinstance(out["bad"], RuntimeError) and isinstance(out["other"], RuntimeError)
    assert batcher.encode_texts(["again"]).shape == (1, 2)  # not stuck afterwards


def test_other_calls_pass_through():
    encoder = SlowEncoder()
    encoder.release.set()
    batcher = TextBatcher(encoder)
    assert batcher.spec == "the spec"
    assert batcher.encode_images([]) == "images passed through"
    assert batcher.encode_texts(["a", "b"]).shape == (2, 2)
    assert batcher.batches == 0
    with pytest.raises(ValueError, match="max_batch must be at least 1"):
        TextBatcher(encoder, max_batch=0)


def test_batched_retriever_matches_the_plain_one(tiny_clip_dir, tmp_path):
    from xmodal.encoders import load_encoder
    from xmodal.index import Collection, Record
    from xmodal.pipelines.search import Retriever

    encoder = load_encoder(str(tiny_clip_dir), device="cpu", precision="fp32")
    vectors = encoder.encode_texts([f"item {i}" for i in range(20)])
    with Collection.create(tmp_path / "c", encoder.spec.to_dict(), index_key="flat") as c:
        c.add(vectors, [Record(path=f"/x/{i}.jpg") for i in range(20)])
        c.commit()
    plain = Retriever(encoder, Collection.open(tmp_path / "c"))
    fast = batched(plain)
    assert isinstance(fast.encoder, TextBatcher) and batched(fast) is fast
    assert batched("not a retriever") == "not a retriever"
    queries = ["item 3", "item 17", "something else", "item 8"]
    expected = {q: plain.search(q, k=5) for q in queries}
    got: dict[str, list] = {}

    def run(q: str) -> None:
        got[q] = fast.search(q, k=5, negative="zebra")
        got[q + "+"] = fast.search(q, k=5)

    threads = [threading.Thread(target=run, args=(q,)) for q in queries * 3]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for q in queries:
        for hits, want in (
            (got[q + "+"], expected[q]),
            (got[q], plain.search(q, k=5, negative="zebra")),
        ):
            assert [h.id for h in hits] == [h.id for h in want]
            assert [h.score for h in hits] == pytest.approx([h.score for h in want], abs=1e-5)
    plain.collection.close()


def test_waits_in_these_tests_are_bounded():
    """A regression that never batches must fail the test with a reason, not hang the suite."""
    started = time.monotonic()
    with pytest.raises(pytest.fail.Exception, match=r"never queued \(waited 0.2 s\)"):
        wait_for(lambda: False, "never queued", timeout=0.2)
    assert time.monotonic() - started < 5
