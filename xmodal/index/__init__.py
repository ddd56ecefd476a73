"""Vectors in, hits out: the collection (FAISS index + SQLite catalog + raw embeddings).

This package works on numpy arrays only; it never imports torch, transformers or the encoders.
"""

from xmodal.index.collection import Collection
from xmodal.index.generations import CollectionInfo
from xmodal.index.records import Hit, Record

__all__ = ["Collection", "CollectionInfo", "Hit", "Record"]
