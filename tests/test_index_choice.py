"""The index choice policy: a pure function of (n, dim, budget), tested without building indexes."""

from __future__ import annotations

import re

import faiss
import pytest

from xmodal.errors import CollectionError
from xmodal.index import choice

GB, MB = 10**9, 10**6


@pytest.mark.parametrize(
    ("n", "dim", "budget", "factory", "kind"),
    [
        (0, 512, None, "Flat", "flat"),
        (1_000, 512, None, "Flat", "flat"),
        (49_999, 512, None, "Flat", "flat"),
        (50_000, 512, None, "HNSW32", "hnsw"),
        (1_000_000, 512, 10 * GB, "HNSW32", "hnsw"),
        # budget pressure: the HNSW graph no longer fits, full-precision IVF does
        (1_000_000, 512, int(2.2 * GB), "IVF4096,Flat", "ivf-flat"),
        # float vectors no longer fit: PQ codes, the largest m | d that fits
        (1_000_000, 512, 500 * MB, "OPQ64_512,IVF4096,PQ64", "ivf-pq"),
        (1_000_000, 512, 100 * MB, "OPQ32_512,IVF4096,PQ32", "ivf-pq"),
        (1_000_000, 100, 150 * MB, "OPQ50_100,IVF4096,PQ50", "ivf-pq"),
        # above the HNSW size limit an IVF is chosen even with unlimited memory
        (20_000_000, 128, None, "IVF16384,Flat", "ivf-flat"),
        # a small collection under a tiny budget still gets something (the flat scan does not fit)
        (40_000, 512, 50 * MB, "OPQ64_512,IVF1024,PQ64", "ivf-pq"),
    ],
)
def test_policy_table(n, dim, budget, factory, kind):
    picked = choice.choose_index(n, dim, budget)
    assert (picked.factory, picked.kind) == (factory, kind)
    assert picked.reason and picked.memory_bytes >= 0
    if budget is not None and "nothing fits" not in picked.reason:
        assert picked.memory_bytes <= budget


def test_nothing_fits_gives_the_smallest_code_and_says_so():
    picked = choice.choose_index(1_000_000, 96, 1 * MB)
    assert picked.factory == "OPQ1_96,IVF4096,PQ1"
    assert "nothing fits" in picked.reason and picked.memory_bytes > 1 * MB


@pytest.mark.parametrize("n", [0, 10, 77, 78, 1_000, 5_000, 60_000, 1_000_000, 30_000_000])
def test_nlist_is_a_power_of_two_with_39_points_per_centroid(n):
    nlist = choice.ivf_nlist(n)
    assert nlist >= 1 and nlist & (nlist - 1) == 0
    assert nlist == 1 or nlist * 39 <= n
    if n >= 1_000_000:  # far from the training cap: about 4 sqrt(n)
        assert 2 * n**0.5 <= nlist <= 8 * n**0.5


@pytest.mark.parametrize("dim", [16, 64, 96, 100, 384, 512, 768, 1024, 77])
def test_pq_code_size_divides_dim(dim):
    picked = choice.choose_index(2_000_000, dim, 1)  # nothing fits: smallest code
    roomy = choice.choose_index(2_000_000, dim, 100 * GB, kind="ivf-pq")
    for item in (picked, roomy):
        m = int(re.search(r"PQ(\d+)$", item.factory).group(1))
        assert dim % m == 0 and m <= 64
    assert int(re.search(r"PQ(\d+)$", roomy.factory).group(1)) == max(
        m for m in range(1, 65) if dim % m == 0
    )


def test_budget_pressure_walks_down_the_kinds():
    n, dim = 1_000_000, 256
    budgets = [None, choice.hnsw_bytes(n, dim), choice.hnsw_bytes(n, dim) - 1, 200 * MB]
    kinds = [choice.choose_index(n, dim, b).kind for b in budgets]
    assert kinds == ["hnsw", "hnsw", "ivf-flat", "ivf-pq"]


def test_forced_kinds_and_resolve():
    assert choice.choose_index(1_000, 64, kind="hnsw").factory == "HNSW32"
    assert choice.choose_index(1_000, 64, kind="ivf-flat").factory == "IVF16,Flat"
    assert choice.choose_index(10**7, 64, kind="flat").factory == "Flat"
    assert choice.resolve("auto", 100, 64, None).factory == "Flat"
    assert choice.resolve("ivf-pq", 100_000, 64, None).factory == "OPQ64_64,IVF1024,PQ64"
    assert choice.resolve("IVF8,Flat", 10, 64, None).factory == "IVF8,Flat"
    assert [choice.kind_of(f) for f in ("Flat", "HNSW16", "IVF8,Flat", "IVF8,PQ4", "PQ8")] == [
        "flat",
        "hnsw",
        "ivf-flat",
        "ivf-pq",
        "other",
    ]
    with pytest.raises(CollectionError, match="unknown index kind 'lsh'; use one of flat"):
        choice.choose_index(10, 8, kind="lsh")
    with pytest.raises(CollectionError, match="cannot choose an index for -1 vectors"):
        choice.choose_index(-1, 8)


def test_the_chosen_strings_are_valid_faiss_factories():
    for n, dim, budget in [(60_000, 64, None), (10**6, 64, 300 * MB), (10**6, 64, 50 * MB)]:
        factory = choice.choose_index(n, dim, budget).factory
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)  # no training
        assert index.d == dim


@pytest.mark.parametrize(
    ("text", "size"),
    [("4GB", 4 * GB), ("512MiB", 512 * 2**20), ("2g", 2 * GB), ("1000", 1000), ("1.5 kb", 1500)],
)
def test_parse_size(text, size):
    assert choice.parse_size(text) == size


def test_parse_size_refuses_nonsense_and_default_budget_is_positive():
    with pytest.raises(CollectionError, match="write it like 4GB"):
        choice.parse_size("lots")
    assert choice.default_memory_budget() > 0


@pytest.mark.parametrize(
    "key",
    ["auto", "flat", "hnsw", "ivf-flat", "ivf-pq", "Flat", "HNSW32", "HNSW16,SQ8", "IVF8,Flat",
     "IVF16,PQ4x4", "IVF1024_HNSW32,SQ8", "OPQ16_64,IVF1024,PQ16", "PCA32,Flat", "PQ8", "SQ8"],
)  # fmt: skip
def test_index_key_forms_accepted(key):
    assert choice.check_index_key(key) == key


@pytest.mark.parametrize("key", ["bogus", "HNSW", "IVF8", "Flat,IVF8", "hnsw32", " Flat", ""])
def test_unknown_index_key_lists_the_accepted_forms(key):
    message = (
        f"unknown index key {key!r}; use auto, flat, hnsw, ivf-flat, ivf-pq, or a FAISS factory "
        "string: Flat, HNSW<M>[,SQ8|,PQ<m>], IVF<n>,Flat | IVF<n>,SQ8 | IVF<n>,PQ<m>[x<bits>], "
        "PQ<m>, SQ8, optionally after OPQ<m>_<d>, or PCA<d>, (e.g. OPQ16_64,IVF1024,PQ16)"
    )
    with pytest.raises(CollectionError) as caught:
        choice.check_index_key(key)
    assert str(caught.value) == message and "\n" not in message
