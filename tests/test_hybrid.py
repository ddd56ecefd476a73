"""Keyword and hybrid search on a hand-built collection: FTS5 ranks, RRF fused by hand."""

from __future__ import annotations

import numpy as np
import pytest

from xmodal.encoders.spec import EncoderSpec
from xmodal.errors import XmodalError
from xmodal.index import Collection
from xmodal.index.keywords import KeywordQueryError
from xmodal.index.records import Record
from xmodal.pipelines.hybrid import rrf
from xmodal.pipelines.search import Retriever

SPEC = EncoderSpec("hand-made", "r1", 4, "clip")
QUERY = np.array([0.9, 0.4, 0.1, 0.0], np.float32) / np.linalg.norm([0.9, 0.4, 0.1, 0.0])
# Vector ranks for QUERY: item 0, 1, 2, 3. Keyword ranks for "dog": item 3 (caption and name),
# then item 2 (caption only); items 0 and 1 do not mention dogs.
ITEMS = [
    ("/p/cat.jpg", "a cat on a sofa"),
    ("/p/red.jpg", "a red car"),
    ("/p/park.jpg", "a dog in a park"),
    ("/p/dog.jpg", "a dog"),
]


class FixedEncoder:
    """Every text embeds to QUERY: the vector ranking is fixed by construction."""

    spec = SPEC

    def encode_texts(self, texts):
        return np.repeat(QUERY[None, :], len(texts), axis=0)


@pytest.fixture
def collection(tmp_path):
    with Collection.create(tmp_path / "c", SPEC.to_dict()) as writer:
        writer.add(np.eye(4, dtype=np.float32), [Record(p, caption=c) for p, c in ITEMS])
        writer.commit()
    with Collection.open(tmp_path / "c") as reader:
        yield reader


def _search(collection, text, **options):
    return Retriever(FixedEncoder(), collection).search(text, **options)


def test_keyword_mode_ranks_by_bm25_over_captions_and_names(collection) -> None:
    hits = _search(collection, "dog", mode="keyword")
    assert [h.record.path for h in hits] == ["/p/dog.jpg", "/p/park.jpg"]
    assert hits[0].score > hits[1].score
    # Plain words match any of them; stems match ("cats" finds "cat").
    assert {h.record.path for h in _search(collection, "cats sofa car", mode="keyword")} == {
        "/p/cat.jpg",
        "/p/red.jpg",
    }
    # FTS5 syntax is honoured when used.
    assert [h.record.path for h in _search(collection, '"a dog in"', mode="keyword")] == [
        "/p/park.jpg"
    ]


@pytest.mark.parametrize(
    ("weight", "expected"),
    [
        # w/(60+keyword rank) + (1-w)/(60+vector rank), ranks from 1
        (0.5, [(3, 0.5 / 61 + 0.5 / 64), (2, 0.5 / 62 + 0.5 / 63), (0, 0.5 / 61), (1, 0.5 / 62)]),
        (0.2, [(2, 0.2 / 62 + 0.8 / 63), (3, 0.2 / 61 + 0.8 / 64), (0, 0.8 / 61), (1, 0.8 / 62)]),
        (1.0, [(3, 1 / 61), (2, 1 / 62)]),
    ],
)
def test_hybrid_is_reciprocal_rank_fusion(collection, weight, expected) -> None:
    hits = _search(collection, "dog", mode="hybrid", keyword_weight=weight)
    ids = collection.ids_for_paths(p for p, _ in ITEMS)
    by_item = {ids[p]: n for n, (p, _) in enumerate(ITEMS)}
    assert [(by_item[h.id], h.score) for h in hits] == [
        (item, pytest.approx(score, abs=1e-12)) for item, score in expected
    ]


def test_vector_mode_is_unchanged(collection) -> None:
    hits = _search(collection, "dog", k=2)
    assert [h.record.path for h in hits] == ["/p/cat.jpg", "/p/red.jpg"]


def test_rrf_ties_go_to_the_smaller_id() -> None:
    tie = 0.5 / 61 + 0.5 / 62
    assert rrf([(0.5, [7, 3]), (0.5, [3, 7])]) == [(3, tie), (7, tie)]


def test_keyword_syntax_error_is_one_line(collection) -> None:
    with pytest.raises(KeywordQueryError) as caught:
        _search(collection, "dog AND", mode="keyword")
    assert str(caught.value) == (
        "bad keyword query 'dog AND': fts5: syntax error near \"\"; plain words match any of "
        'them; FTS5 syntax: "a phrase", word*, AND, OR, NOT, caption:word, name:word'
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mode": "fuzzy"}, "mode must be vector, keyword or hybrid, got 'fuzzy'"),
        (
            {"mode": "hybrid", "keyword_weight": 1.5},
            "keyword weight must be between 0 and 1, got 1.5",
        ),
        (
            {"mode": "keyword", "threshold": 0.2},
            "the threshold is a cosine score; use it in vector or hybrid mode",
        ),
        (
            {"mode": "keyword", "negative": "cat"},
            "keyword mode has no negative text; write 'word NOT other' or use hybrid mode",
        ),
    ],
)
def test_options_keyword_mode_cannot_honour(collection, options, message) -> None:
    with pytest.raises(XmodalError) as caught:
        _search(collection, "dog", **options)
    assert str(caught.value) == message


def test_removed_items_never_match_keywords(collection, tmp_path) -> None:
    with Collection.open(tmp_path / "c", writable=True) as writer:
        dog = writer.ids_for_paths(["/p/dog.jpg"])["/p/dog.jpg"]
        writer.remove([dog])
        assert [h.record.path for h in writer.keyword_search("dog")] == ["/p/park.jpg"]  # staged
        writer.commit()
    # The handle opened before the removal still reads its own generation ...
    assert len(collection.keyword_search("dog")) == 2
    with Collection.open(tmp_path / "c") as reader:  # ... a new one never sees the item
        assert [h.record.path for h in reader.keyword_search("dog")] == ["/p/park.jpg"]
        assert dog not in {
            h.id for h in Retriever(FixedEncoder(), reader).search("dog", mode="hybrid")
        }


def test_replaced_file_is_found_by_its_new_caption_only(tmp_path) -> None:
    with Collection.create(tmp_path / "c", SPEC.to_dict()) as writer:
        writer.add(np.eye(4, dtype=np.float32)[:1], [Record("/p/x.jpg", caption="a zebra")])
        writer.commit()
        writer.add(np.eye(4, dtype=np.float32)[:1], [Record("/p/x.jpg", caption="a horse")])
        writer.commit()
        assert writer.keyword_search("zebra") == []
        assert [h.record.caption for h in writer.keyword_search("horse")] == ["a horse"]


def test_without_captions_file_names_serve_and_no_match_says_why(tmp_path) -> None:
    with Collection.create(tmp_path / "c", SPEC.to_dict()) as writer:
        writer.add(np.eye(4, dtype=np.float32)[:2], [Record("/p/red_dog.jpg"), Record("/p/b.jpg")])
        writer.commit()
        assert [h.record.path for h in _search(writer, "dog", mode="keyword")] == ["/p/red_dog.jpg"]
        with pytest.raises(XmodalError) as caught:
            _search(writer, "zebra", mode="keyword")
    assert str(caught.value) == (
        "no file name matches 'zebra' and this collection has no captions to search; index "
        "captions (e.g. --caption-column) or use vector mode"
    )


def test_api_mode_field_and_syntax_error_is_400(collection) -> None:
    from starlette.testclient import TestClient

    from xmodal.app import AppConfig
    from xmodal.app.server import create_app

    app = create_app(Retriever(FixedEncoder(), collection), config=AppConfig(max_k=50))
    with TestClient(app) as client:
        ok = client.post("/api/search", json={"text": "dog", "mode": "keyword"})
        bad = client.post("/api/search", json={"text": "dog AND", "mode": "keyword"})
        wrong = client.post("/api/search", json={"text": "dog", "mode": "fuzzy"})
    assert ok.status_code == 200
    assert [r["path"] for r in ok.json()["results"]] == ["/p/dog.jpg", "/p/park.jpg"]
    assert bad.status_code == 400 and bad.json()["detail"].startswith("bad keyword query 'dog AND'")
    assert wrong.status_code == 400
    assert wrong.json()["detail"] == "The search mode must be vector, keyword or hybrid."
