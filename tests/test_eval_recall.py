"""Recall@k as CLIP_benchmark defines it, on hand-made score matrices with known answers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from xmodal.pipelines.evaluation.recall import (
    MISSED,
    Pairing,
    chance_recall,
    exact_ranks,
    index_ranks,
    ranks_from_scores,
    recall_at,
)

# 3 images; captions 0,1 -> image 0, caption 2 -> image 1, captions 3,4 -> image 2.
OWNER = np.array([0, 0, 1, 2, 2])
T2I = Pairing(OWNER, 3, text_queries=True)
I2T = Pairing(OWNER, 3, text_queries=False)
# scores[caption, image]
SCORES = np.array(
    [
        [0.9, 0.1, 0.2],  # caption 0: own image first -> rank 1
        [0.3, 0.8, 0.5],  # caption 1: image 0 third -> rank 3
        [0.7, 0.6, 0.1],  # caption 2: image 1 second -> rank 2
        [0.2, 0.1, 0.4],  # caption 3: rank 1
        [0.5, 0.6, 0.4],  # caption 4: rank 3
    ],
    dtype=np.float32,
)


def test_text_to_image_each_caption_must_find_its_own_image() -> None:
    positives = T2I.positives(np.arange(5))
    ranks = ranks_from_scores(SCORES, positives)
    assert ranks.tolist() == [1, 3, 2, 1, 3]
    assert recall_at(ranks, (1, 2, 3)) == {1: 0.4, 2: 0.6, 3: 1.0}


def test_image_to_text_is_correct_when_any_caption_is_retrieved() -> None:
    scores = SCORES.T  # scores[image, caption]
    ranks = ranks_from_scores(scores, I2T.positives(np.arange(3)))
    # image 0: its caption c0 scores 0.9, the best -> 1. image 1: c2 scores 0.6 behind c1 (0.8)
    # and tied with c4 (0.6) -> 3. image 2: c3 and c4 score 0.4, only c1 (0.5) above -> 2.
    assert ranks.tolist() == [1, 3, 2]
    assert recall_at(ranks, (1, 2, 3)) == {1: pytest.approx(1 / 3), 2: pytest.approx(2 / 3), 3: 1.0}


def test_a_tie_with_a_negative_counts_against_the_query() -> None:
    scores = np.array([[0.5, 0.5, 0.1], [0.5, 0.5, 0.5]], np.float32)
    positives = np.array([[True, False, False], [False, False, True]])
    assert ranks_from_scores(scores, positives).tolist() == [2, 3]
    # Ties among positives cost nothing: only negatives push the best positive down.
    both = np.array([[True, True, False], [True, True, True]])
    assert ranks_from_scores(scores, both).tolist() == [1, 1]


def test_scores_within_float_rounding_are_ties() -> None:
    scores = np.array([[0.5, 0.5 + 4e-7, 0.49]], np.float32)
    assert ranks_from_scores(scores, np.array([[True, False, False]])).tolist() == [2]
    scores = np.array([[0.5, 0.5 + 1e-4, 0.49]], np.float32)
    assert ranks_from_scores(scores, np.array([[False, True, False]])).tolist() == [1]


def test_index_lists_rank_the_first_positive_and_miss_absent_ones() -> None:
    found = np.array([[2, 0, 1], [1, -1, -1], [0, 1, 2], [2, 1, 0], [1, 0, -1]])
    scores = np.array(
        [[0.9, 0.8, 0.1], [0.7, 0, 0], [0.5, 0.4, 0.3], [0.6, 0.5, 0.2], [0.9, 0.3, 0]], np.float32
    )
    ranks = index_ranks(scores, found, T2I)
    # caption 0 (image 0) at position 2; caption 1: image 0 not listed; caption 2 (image 1) at
    # 2; caption 3 (image 2) first; caption 4 (image 2) not listed (-1 is no row, not image 2).
    assert ranks.tolist() == [2, MISSED, 2, 1, MISSED]
    assert recall_at(ranks, (1, 2)) == {1: 0.2, 2: 0.6}


def test_index_lists_count_listed_ties_against_the_query() -> None:
    found = np.array([[1, 0, 2]])
    scores = np.array([[0.7, 0.7, 0.1]], np.float32)
    assert index_ranks(scores, found, T2I).tolist() == [2]  # image 1 ties with image 0


def test_image_queries_on_index_lists_accept_any_caption() -> None:
    found = np.array([[2, 4, 0], [3, 0, 1], [2, 1, 0]])  # caption ids per image query
    scores = np.array([[3, 2, 1], [3, 2, 1], [3, 2, 1]], np.float32)
    assert index_ranks(scores, found, I2T).tolist() == [3, MISSED, MISSED]


def test_exact_ranks_in_blocks_match_a_brute_force_loop() -> None:
    rng = np.random.default_rng(0)
    owner = np.repeat(np.arange(300), 2)  # 600 captions: more than one block of queries
    images = rng.standard_normal((300, 8)).astype(np.float32)
    texts = images[owner] + rng.standard_normal((600, 8)).astype(np.float32)
    pairing = Pairing(owner, 300, text_queries=True)
    ranks = exact_ranks(texts, images, pairing)
    scores = texts @ images.T
    loop = [
        1 + int(np.sum(np.delete(row, o) >= row[o])) for row, o in zip(scores, owner, strict=True)
    ]
    assert ranks.tolist() == loop
    back = exact_ranks(images, texts, Pairing(owner, 300, text_queries=False))
    expected = []
    for image, row in enumerate(images @ texts.T):
        best = row[owner == image].max()
        expected.append(1 + int(np.sum(row[owner != image] >= best)))
    assert back.tolist() == expected


def test_chance_level_matches_counting() -> None:
    assert chance_recall(10, 1, 1) == pytest.approx(0.1)
    assert chance_recall(10, 1, 5) == pytest.approx(0.5)
    assert chance_recall(10, 10, 1) == 1.0
    assert chance_recall(5, 1, 5) == 1.0
    # 2 positives of 6, k 2: share of 2-subsets touching a positive
    subsets = list(itertools.combinations(range(6), 2))
    share = sum(1 for s in subsets if 0 in s or 1 in s) / len(subsets)
    assert chance_recall(6, 2, 2) == pytest.approx(share)
