"""File names that are not valid UTF-8, stored as SQLite text and read back unchanged.

Python hands out such names (``b'caf\\xe9.jpg'`` on Linux) as str with lone surrogates
(``'caf\\udce9.jpg'``, PEP 383), which SQLite refuses. At the catalog boundary each surrogate
U+DC80..U+DCFF becomes one code point at the very end of Unicode, U+10FF80..U+10FFFF (private
use, found in no real file name); a genuine character from U+10FF7F..U+10FFFF is prefixed with
the escape U+10FF7F, so the mapping stays reversible for every string. One character maps to one
character for every real name, so lengths, prefixes and globs over the stored text still match
the original paths.
"""

from __future__ import annotations

import re

_ESCAPE = "\U0010ff7f"
_SHIFT = 0x10FF00 - 0xDC00  # U+DC80 -> U+10FF80
_TO_DB = re.compile("[\udc80-\udcff\U0010ff7f-\U0010ffff]")
_FROM_DB = re.compile("\U0010ff7f[\U0010ff7f-\U0010ffff]|[\U0010ff80-\U0010ffff]")


def to_db(text: str) -> str:
    """The stored form of a path (or a path pattern)."""
    if text.isascii():
        return text
    return _TO_DB.sub(_encode_char, text)


def from_db(text: str) -> str:
    """The path whose stored form is ``text``."""
    if text.isascii():
        return text
    return _FROM_DB.sub(_decode_char, text)


def _encode_char(match: re.Match[str]) -> str:
    char = match.group()
    if "\udc80" <= char <= "\udcff":
        return chr(ord(char) + _SHIFT)
    return _ESCAPE + char


def _decode_char(match: re.Match[str]) -> str:
    text = match.group()
    if len(text) == 2:
        return text[1]
    return chr(ord(text) - _SHIFT)


def display_path(path: str) -> str:
    """``path`` as valid UTF-8 text for JSON and captions: undecodable bytes become ``\\xff``.

    Such a name is a str with lone surrogates (PEP 383), which no JSON encoder or page can
    carry. The result is for people to read, not a handle: refer to an item by its id.
    """
    if path.isascii():
        return path
    try:
        raw = path.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that stands for no byte
        raw = path.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "backslashreplace")
