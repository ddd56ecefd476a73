"""The rows of a segment being written, read block by block: memory bounded at any size.

A merge takes the live rows of its members, which sit in their float16 files (memory maps), plus
perhaps the rows a writer staged (float32, in memory). Joining them into one float32 array in the
index's space would cost ``n * 4 * dim`` bytes on top of the index being built: 2 GB per million
512-d rows, which is what made merges the peak of a large import. A ``RowSet`` instead names the
pieces and hands out the rows on demand, projected to the index's space and converted to float32
one block at a time: ``blocks`` (in order, for filling an index), ``raw_blocks`` (in order, in
the stored space, for the float16 file) and indexing by a slice or sorted positions (training
samples, tuning queries and blockwise ground truth read the rows that way).
"""

from __future__ import annotations

import mmap
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

BLOCK_ROWS = 16384

Project = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Piece:
    """Raw rows (a float16 memory map or float32 array) and the positions of them to take."""

    rows: np.ndarray
    positions: np.ndarray | None = None  # sorted; None takes every row

    def __len__(self) -> int:
        return len(self.rows) if self.positions is None else len(self.positions)

    def take(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of this piece (in its own numbering), raw."""
        if self.positions is None:
            return read_rows(self.rows, start, stop)
        return self.pick(np.arange(start, stop))

    def pick(self, positions: np.ndarray) -> np.ndarray:
        """Rows at sorted ``positions`` of this piece (in its own numbering), raw."""
        if self.positions is not None:
            positions = self.positions[positions]
        if not len(positions):
            return np.asarray(self.rows[:0])
        out = np.asarray(self.rows[positions])
        _forget(self.rows, int(positions[0]), int(positions[-1]) + 1)
        return out


class RowSet:
    """The concatenation of ``pieces``, seen in the index's space through ``project``."""

    def __init__(self, pieces: Sequence[Piece], project: Project, dim: int) -> None:
        self.pieces = [piece for piece in pieces if len(piece)]
        self.project = project
        self.dim = dim  # the index's (projected) dimension
        self._starts = [0]
        for piece in self.pieces:
            self._starts.append(self._starts[-1] + len(piece))

    @classmethod
    def of(cls, rows: np.ndarray) -> RowSet:
        """A RowSet over one float32 array already in the index's space."""
        return cls([Piece(rows)], lambda block: np.ascontiguousarray(block, np.float32),
                   rows.shape[1] if rows.ndim == 2 else 0)  # fmt: skip

    def __len__(self) -> int:
        return self._starts[-1]

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self), self.dim)

    def raw_blocks(self, size: int | None = None) -> Iterator[np.ndarray]:
        """The raw rows in order, at most ``size`` (default BLOCK_ROWS) at a time."""
        size = size or BLOCK_ROWS
        for piece in self.pieces:
            for start in range(0, len(piece), size):
                yield piece.take(start, min(start + size, len(piece)))

    def blocks(self, size: int | None = None) -> Iterator[np.ndarray]:
        """The rows in order, projected, float32 and contiguous, at most ``size`` at a time."""
        for block in self.raw_blocks(size):
            yield self._projected(block)

    def __getitem__(self, key: slice | np.ndarray) -> np.ndarray:
        """Projected float32 rows: a slice (step 1) or sorted integer positions.

        Each piece's rows are projected straight into the output: the memory beyond the
        result is one piece's raw rows, not a second copy of everything.
        """
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step != 1:
                raise ValueError("RowSet slices take every row")
            positions = np.arange(start, max(start, stop))
        else:
            positions = np.asarray(key, np.int64)
        out = np.empty((len(positions), self.dim), np.float32)
        done = 0
        for i, piece in enumerate(self.pieces):
            lo, hi = np.searchsorted(positions, self._starts[i : i + 2])
            if hi == lo:
                continue
            local = positions[lo:hi] - self._starts[i]
            if len(local) == local[-1] - local[0] + 1:  # a run: a slice, no fancy index
                raw = piece.take(int(local[0]), int(local[-1]) + 1)
            else:
                raw = piece.pick(local)
            out[done : done + len(raw)] = self.project(raw)
            done += len(raw)
        return out

    def sample(self, limit: int) -> np.ndarray:
        """Evenly spaced rows, at most ``limit`` of them (all rows when there are few)."""
        if len(self) <= limit:
            return self[:]
        return self[np.linspace(0, len(self) - 1, limit).astype(np.int64)]

    def _projected(self, block: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(self.project(block), np.float32)


def read_rows(rows: np.ndarray, start: int, stop: int) -> np.ndarray:
    """A copy of ``rows[start:stop]``; from a file's memory map, without keeping its pages mapped.

    Pages of a memory-mapped file stay in the process's resident set once touched, so reading
    a million float16 rows through the map would count 1 GB against the process for as long as
    the map lives. After the copy the range is ``madvise(MADV_DONTNEED)``'d: the pages leave this
    process (a later read faults them in again, from the page cache) and memory stays one block.
    """
    out = np.array(rows[start:stop])
    _forget(rows, start, stop)
    return out


def _forget(rows: np.ndarray, start: int, stop: int) -> None:
    """Unmap the pages of rows ``start:stop`` of a whole-file memory map (else nothing)."""
    mapped = rows.base
    if not isinstance(rows, np.memmap) or not isinstance(mapped, mmap.mmap) or stop <= start:
        return
    row_bytes = rows.strides[0]
    offset = rows.offset % mmap.ALLOCATIONGRANULARITY  # where numpy's map puts row 0
    first = offset + start * row_bytes
    aligned = first - first % mmap.PAGESIZE
    end = min(offset + stop * row_bytes, len(mapped))
    if end > aligned:
        mapped.madvise(mmap.MADV_DONTNEED, aligned, end - aligned)
