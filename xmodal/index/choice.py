"""Index choice: collection size, dimension and a memory budget in, a FAISS factory string out.

A pure function, tested without building anything (autofaiss's best idea, without its many
arguments). The policy, in order of preference:

====================  ====================================  ==================================
kind                  when                                  why
====================  ====================================  ==================================
``Flat``              n < FLAT_MAX_VECTORS (50k) and fits   exact, and a scan of 50k rows takes
                                                            about a millisecond per query
``HNSW32``            n <= HNSW_MAX_VECTORS (10M) and the   best recall per query time in RAM;
                      vectors plus graph fit the budget     the graph costs 2*M links per row
``IVF{nlist},Flat``   the float vectors (no graph) fit      full-precision rows, a coarse
                                                            quantizer picks the lists to scan
``OPQ{m}_{d},IVF{nlist},PQ{m}``  nothing above fits         m bytes per row: compression
====================  ====================================  ==================================

Memory estimates (bytes), all including the id map the collection wraps every index in
(``IndexIDMap2``: an 8-byte id array plus a hash map id -> position, about 40 bytes per entry):

- Flat: ``n * 4d``; HNSW: ``n * (4d + 2*M*4 + 8)`` (level-0 links, upper levels and level
  bookkeeping); IVF-Flat: ``n * (4d + 8) + nlist * 4d`` (codes plus ids in the lists,
  centroids); IVF-PQ: ``n * (m + 8) + nlist * 4d + 256 * 4d + 4d^2`` (codes, ids, centroids,
  PQ codebooks, OPQ rotation).

``nlist`` is about ``4 * sqrt(n)`` rounded to a power of two, and at most ``n / 39`` (FAISS wants
39 training points per centroid). ``m`` is the largest divisor of ``d`` that is at most 64 and
fits the budget (PQ needs ``d % m == 0``).

The budget is an argument; ``None`` means unlimited. Callers that want the machine's default use
``default_memory_budget()``: ``DEFAULT_BUDGET_FRACTION`` (half) of total RAM.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

from xmodal.errors import CollectionError

FLAT_MAX_VECTORS = 50_000
HNSW_MAX_VECTORS = 10_000_000
HNSW_M = 32
MAX_PQ_BYTES = 64
MIN_POINTS_PER_CENTROID = 39
DEFAULT_BUDGET_FRACTION = 0.5
ID_MAP_BYTES = 48  # IndexIDMap2: int64 id array + unordered_map entry per vector

# Keys the collection resolves at commit time; any other key is a literal FAISS factory string.
AUTO = "auto"
ALIASES = ("flat", "hnsw", "ivf-flat", "ivf-pq")
KINDS = ("flat", "hnsw", "ivf-flat", "ivf-pq")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


@dataclass(frozen=True)
class IndexChoice:
    """The factory string for a collection, its kind, estimated memory and why it was chosen."""

    factory: str
    kind: str
    memory_bytes: int
    reason: str


def choose_index(
    n_vectors: int,
    dim: int,
    memory_budget_bytes: int | None = None,
    *,
    kind: str | None = None,
) -> IndexChoice:
    """Pick a factory string for ``n_vectors`` rows of ``dim``; ``kind`` forces one family."""
    if n_vectors < 0 or dim < 1:
        raise CollectionError(f"cannot choose an index for {n_vectors} vectors of dim {dim}")
    if kind is not None and kind not in KINDS:
        raise CollectionError(f"unknown index kind {kind!r}; use one of {', '.join(KINDS)}")
    budget = math.inf if memory_budget_bytes is None else memory_budget_bytes
    n, nlist = n_vectors, ivf_nlist(n_vectors)
    within = f"within the budget of {_human(budget)}"
    options = [
        ("flat", "Flat", flat_bytes(n, dim), n < FLAT_MAX_VECTORS),
        ("hnsw", f"HNSW{HNSW_M}", hnsw_bytes(n, dim), n <= HNSW_MAX_VECTORS),
        ("ivf-flat", f"IVF{nlist},Flat", ivf_flat_bytes(n, dim, nlist), True),
    ]
    for name, factory, memory, size_ok in options:
        if kind == name or (kind is None and size_ok and memory <= budget):
            why = "forced" if kind else _REASONS[name].format(n=n, within=within)
            return IndexChoice(factory, name, memory, why)
    return _choose_pq(n, dim, nlist, budget, forced=kind == "ivf-pq")


_REASONS = {
    "flat": "{n} vectors: exact search is fast enough, {within}",
    "hnsw": "{n} vectors: too many for an exact scan; vectors and graph fit {within}",
    "ivf-flat": "{n} vectors: an HNSW graph would not fit, full-precision IVF fits {within}",
}


def _choose_pq(n: int, dim: int, nlist: int, budget: float, *, forced: bool) -> IndexChoice:
    """The largest PQ code (m bytes, m | d, m <= 64) that fits; the smallest if none does."""
    candidates = [m for m in range(min(MAX_PQ_BYTES, dim), 0, -1) if dim % m == 0]
    fitting = [m for m in candidates if ivf_pq_bytes(n, dim, nlist, m) <= budget]
    m = fitting[0] if fitting else candidates[-1]
    memory = ivf_pq_bytes(n, dim, nlist, m)
    if forced:
        reason = "forced"
    elif fitting:
        reason = f"{n} vectors: float vectors do not fit {_human(budget)}; {m}-byte PQ codes do"
    else:
        reason = f"{n} vectors: nothing fits {_human(budget)}; the smallest PQ code ({m} bytes)"
    return IndexChoice(f"OPQ{m}_{dim},IVF{nlist},PQ{m}", "ivf-pq", memory, reason)


def ivf_nlist(n_vectors: int) -> int:
    """About 4*sqrt(n), as a power of two, with at least 39 training points per centroid."""
    if n_vectors < 2 * MIN_POINTS_PER_CENTROID:
        return 1
    target = 2 ** round(math.log2(4 * math.sqrt(n_vectors)))
    cap = 2 ** int(math.log2(n_vectors // MIN_POINTS_PER_CENTROID))
    return max(1, min(target, cap))


def flat_bytes(n: int, dim: int) -> int:
    return n * (4 * dim + ID_MAP_BYTES)


def hnsw_bytes(n: int, dim: int, m: int = HNSW_M) -> int:
    return n * (4 * dim + 2 * m * 4 + 8 + ID_MAP_BYTES)


def ivf_flat_bytes(n: int, dim: int, nlist: int) -> int:
    return n * (4 * dim + 8 + ID_MAP_BYTES) + nlist * 4 * dim


def ivf_pq_bytes(n: int, dim: int, nlist: int, m: int) -> int:
    tables = nlist * 4 * dim + 256 * 4 * dim + 4 * dim * dim
    return n * (m + 8 + ID_MAP_BYTES) + tables


def kind_of(factory: str) -> str:
    """The family of a literal factory string ("other" for anything this module does not make)."""
    if factory == "Flat":
        return "flat"
    if factory.startswith("HNSW"):
        return "hnsw"
    if "IVF" in factory:
        return "ivf-pq" if "PQ" in factory else "ivf-flat"
    return "other"


# The factory strings a collection accepts: what this module makes plus the usual FAISS variants.
_CODE = r"(?:Flat|PQ\d+(?:x\d+)?|SQ(?:4|6|8|fp16|bf16))"
_FACTORY = re.compile(
    rf"^(?:(?:OPQ\d+(?:_\d+)?|PCAR?\d+),)?"
    rf"(?:{_CODE}|HNSW\d+(?:,{_CODE})?|IVF\d+(?:_HNSW\d+)?,{_CODE})$"
)
KEY_FORMS = (
    "auto, flat, hnsw, ivf-flat, ivf-pq, or a FAISS factory string: Flat, HNSW<M>[,SQ8|,PQ<m>], "
    "IVF<n>,Flat | IVF<n>,SQ8 | IVF<n>,PQ<m>[x<bits>], PQ<m>, SQ8, optionally after OPQ<m>_<d>, "
    "or PCA<d>, (e.g. OPQ16_64,IVF1024,PQ16)"
)


def check_index_key(index_key: str) -> str:
    """Refuse an index key this project cannot build, listing the accepted keys and forms.

    Checked by form only, before anything is built: whether FAISS can build a well-formed
    string for a given dimension (PQ<m> needs m | d) is known only once the dimension is.
    """
    if not isinstance(index_key, str):
        raise CollectionError(f"index key must be a string, got {type(index_key).__name__}")
    refuse_id_map(index_key)
    if index_key == AUTO or index_key in ALIASES or _FACTORY.match(index_key):
        return index_key
    raise CollectionError(f"unknown index key {index_key!r}; use {KEY_FORMS}")


def refuse_id_map(index_key: str) -> None:
    """The collection wraps every index in its own id map; a second one would break ids."""
    if "IDMap" in index_key:
        raise CollectionError(
            f"index_key {index_key!r} must not contain IDMap: the collection maps ids itself; "
            "drop the IDMap part (for example use 'Flat')"
        )


def is_managed(index_key: str) -> bool:
    """True for keys resolved at commit ("auto" and the aliases), False for factory strings."""
    return index_key == AUTO or index_key in ALIASES


def resolve(index_key: str, n_vectors: int, dim: int, budget: int | None) -> IndexChoice:
    """The choice for a collection key: auto and aliases are chosen, factory strings kept."""
    if index_key == AUTO:
        return choose_index(n_vectors, dim, budget)
    if index_key in ALIASES:
        return choose_index(n_vectors, dim, budget, kind=index_key)
    return IndexChoice(index_key, kind_of(index_key), 0, "explicit factory string")


def default_memory_budget() -> int:
    """DEFAULT_BUDGET_FRACTION of total RAM (from sysconf, else /proc/meminfo, else 4 GB)."""
    total = 0
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        try:
            with open("/proc/meminfo", encoding="ascii") as handle:
                for line in handle:
                    if line.startswith("MemTotal:"):
                        total = int(line.split()[1]) * 1024
        except OSError:
            pass
    return int((total or 8 * 10**9) * DEFAULT_BUDGET_FRACTION)


def parse_size(text: str) -> int:
    """Bytes of a size such as "4GB", "512MiB", "2g" or "1000000"."""
    match = _SIZE.match(text)
    if not match:
        raise CollectionError(f"cannot read the size {text!r}; write it like 4GB, 512MB or 2GiB")
    value, unit = float(match.group(1)), (match.group(2) or "").lower()
    prefix = unit[:1] if unit[:1] in "kmgt" else ""
    base = 1024 ** ("kmgt".index(prefix) + 1) if prefix and "i" in unit else _UNITS[prefix]
    return int(value * base)


def _human(size: float) -> str:
    if math.isinf(size):
        return "no limit"
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000:
            return f"{size:.0f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"
