"""IVF inverted lists in their own file: merged on disk from parts, memory-mapped by readers.

An IVF index is a small trained part (coarse centroids, codebooks) plus inverted lists holding
every row's code. FAISS can keep the lists in a separate file (``OnDiskInvertedLists``) that a
reader memory-maps instead of loading, and can merge the lists of several part indexes into
such a file (``merge_from_multiple``, what ``faiss.contrib.ondisk.merge_ondisk`` runs). This is
how indexes far larger than RAM are built from parts (clip-retrieval / autofaiss build LAION's
that way) and how xmodal's Ray builder assembles a segment: each part is written to a scratch
file as it arrives, then all are mapped and merged into one lists file, so the driver holds one
part at a time, never the whole segment.

In a collection such a segment has a fourth file, ``<segment>.lists.ivfdata``, listed in the
manifest with its size and sha256 like every other file (``manifest.Segment.lists``). The index
file names its lists file; readers open it from the index file's own directory
(``IO_FLAG_ONDISK_SAME_DIR``) and read-only (``IO_FLAG_READ_ONLY``).

FAISS reports some of this on stdout ("resizing ...", "updating ondisk filename ..."), which
would corrupt a command's ``--json`` output: those calls run with stdout sent to stderr.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import faiss

from xmodal.index.durable import fsync_path

SUFFIX = ".ivfdata"
_STDOUT = threading.Lock()


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send what C code writes to file descriptor 1 to stderr for the duration."""
    with _STDOUT:
        sys.stdout.flush()
        saved = os.dup(1)
        try:
            os.dup2(2, 1)
            yield
        finally:
            os.dup2(saved, 1)
            os.close(saved)


def lists_of(index: faiss.Index) -> faiss.OnDiskInvertedLists | None:
    """The on-disk inverted lists of an IVF ``index`` (through any wrapper); None otherwise."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None:
        return None
    lists = faiss.downcast_InvertedLists(ivf.invlists)
    return lists if isinstance(lists, faiss.OnDiskInvertedLists) else None


def merge_parts(index: faiss.Index, part_files: Sequence[Path], path: Path) -> int:
    """Fill the trained, empty IVF ``index`` with the lists of the part indexes in
    ``part_files`` (in order), written to ``path``; returns the number of rows.

    The parts are memory-mapped (``IO_FLAG_MMAP``), not loaded; rows keep the ids they were
    added with. ``path`` is fsynced before this returns.
    """
    ivf = faiss.extract_index_ivf(index)
    if ivf.ntotal:
        raise ValueError("merge_parts fills an empty index")
    parts, pointers = [], faiss.InvertedListsPtrVector()
    for part_file in part_files:
        part = faiss.read_index(str(part_file), faiss.IO_FLAG_MMAP)
        part_ivf = faiss.extract_index_ivf(part)
        parts.append(part)  # keeps each part's lists alive until the merge is done
        pointers.push_back(part_ivf.invlists)
    lists = faiss.OnDiskInvertedLists(ivf.nlist, ivf.code_size, str(path))
    with stdout_to_stderr():
        total = lists.merge_from_multiple(pointers.data(), pointers.size(), False, False)
    ivf.replace_invlists(lists, True)
    lists.this.disown()  # owned by the index now
    ivf.ntotal = total
    if index is not ivf:
        index.ntotal = total  # a wrapper (pre-transform) does not see the merge
    del parts
    fsync_path(path)
    return total


def publish(lists: faiss.OnDiskInvertedLists, final: Path) -> None:
    """Give the lists file (fsynced where it was written) its segment name; the index keeps
    its memory map and will name ``final`` when written."""
    os.replace(lists.filename, final)
    lists.filename = str(final)
