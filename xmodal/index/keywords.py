"""The keyword index: SQLite FTS5 over each item's caption and file name, inside the catalog.

The FTS table lives in the catalog database and triggers on ``items`` keep it in step with every
insert and physical delete, in the same transaction; its rowid is the item id. Rows of ``items``
are versioned (``xmodal.index.versions``): a removed item's text stays in the FTS table until its
row is purged, and every query keeps only hits whose item row is visible in the reader's
generation. So a reader's keyword and vector results come from one generation, and a removed
item can never be found by keyword. (BM25's document statistics count the retired rows not yet
purged: scores may differ slightly from a freshly built index, rankings within one generation
are consistent.) Catalogs written before the index existed get it built from their rows when the
next writer moves them into the versioned database.

Queries: plain words (``red dog``) match items holding ANY of the words, ranked by BM25 (an
item holding more of them, or rarer ones, ranks higher), as web search engines do. A query
using FTS5 syntax (``"a phrase"``, ``word*``, ``AND``/``OR``/``NOT`` in capitals, ``NEAR``,
parentheses, ``caption:`` or ``name:`` column filters) is passed to FTS5 as written; a syntax
error there is a ``KeywordQueryError`` naming the query. Words are stemmed (Porter) and accents
folded, so "dogs" finds "dog" and "cafe" finds "café"; file names split at punctuation
(``red_dog-02.jpg`` holds red, dog, 02 and jpg).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence

from xmodal.errors import XmodalError

TABLE = "keywords"
# The file name: everything after the last "/" (rtrim strips the trailing non-slash characters).
_NAME = "substr({p}, length(rtrim({p}, replace({p}, '/', ''))) + 1)"
_SCHEMA = (
    f"CREATE VIRTUAL TABLE IF NOT EXISTS {TABLE} USING fts5(caption, name, "
    "tokenize = 'porter unicode61 remove_diacritics 2')",
    "CREATE TRIGGER IF NOT EXISTS items_keywords_insert AFTER INSERT ON items BEGIN "
    f"INSERT INTO {TABLE} (rowid, caption, name) VALUES "
    f"(new.id, new.caption, {_NAME.format(p='new.path')}); END",
    "CREATE TRIGGER IF NOT EXISTS items_keywords_delete AFTER DELETE ON items BEGIN "
    f"DELETE FROM {TABLE} WHERE rowid = old.id; END",
    "CREATE TRIGGER IF NOT EXISTS items_keywords_update AFTER UPDATE OF path, caption ON items "
    f"BEGIN UPDATE {TABLE} SET caption = new.caption, name = {_NAME.format(p='new.path')} "
    "WHERE rowid = new.id; END",
)
_FILL = f"INSERT INTO {TABLE} (rowid, caption, name) SELECT id, caption, {_NAME} FROM items"
# Characters and operators that make a query FTS5 syntax rather than plain words.
_SYNTAX = re.compile(r'["():*^+{}]|\b(AND|OR|NOT|NEAR)\b')
_WORD = re.compile(r"\w+")
_HELP = (
    'plain words match any of them; FTS5 syntax: "a phrase", word*, AND, OR, NOT, '
    "caption:word, name:word"
)


class KeywordQueryError(XmodalError):
    """A keyword query is empty or not valid FTS5 syntax."""


def has_table(conn: sqlite3.Connection) -> bool:
    query = "SELECT count(*) FROM sqlite_master WHERE name = ?"
    return bool(conn.execute(query, (TABLE,)).fetchone()[0])


def create_tables(conn: sqlite3.Connection) -> None:
    """Create the index and its triggers; an older catalog's rows are indexed once, here."""
    existed = has_table(conn)
    for statement in _SCHEMA:
        conn.execute(statement)
    if not existed:
        conn.execute(_FILL.format(p="path"))


def match_expression(text: str) -> str:
    """The FTS5 expression for a user's query; see the module docstring."""
    if _SYNTAX.search(text):
        return text.strip()
    words = _WORD.findall(text)
    if not words:
        raise KeywordQueryError(f"keyword query {text.strip()!r} has no words to look for")
    return " OR ".join(f'"{word}"' for word in dict.fromkeys(words))


def search(
    conn: sqlite3.Connection, text: str, k: int, where: tuple[str, Sequence], vis: str
) -> list[tuple[int, float]]:
    """The ``k`` best ``(id, score)`` for ``text``, best first; score is -BM25 (higher better).

    ``where`` is ``(sql, params)`` of a filter on ``items`` and ``vis`` the condition selecting
    the item rows of the reader's generation, both applied before ranking.
    """
    expression = match_expression(text)
    sql = (
        f"SELECT rowid, bm25({TABLE}) FROM {TABLE} WHERE {TABLE} MATCH ? AND EXISTS "
        f"(SELECT 1 FROM items WHERE id = {TABLE}.rowid AND {vis} AND ({where[0]}))"
    )
    params: list = [expression, *where[1]]
    sql += " ORDER BY rank, rowid LIMIT ?"
    try:
        rows = conn.execute(sql, [*params, int(k)]).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such" in str(exc):  # a missing table is not the user's query's fault
            raise
        raise KeywordQueryError(f"bad keyword query {text.strip()!r}: {exc}; {_HELP}") from None
    return [(int(item), -float(score)) for item, score in rows]


def has_captions(conn: sqlite3.Connection, vis: str) -> bool:
    """True when at least one item has a non-blank caption."""
    query = f"SELECT EXISTS (SELECT 1 FROM items WHERE trim(coalesce(caption, '')) != '' AND {vis})"
    return bool(conn.execute(query).fetchone()[0])
