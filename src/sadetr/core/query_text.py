"""A user's query sentence as the model sees it: Unicode-normalised, invisible characters removed.

Shared by the HTTP service, the browser app and `sadetr search`, so that a query that is empty once
normalised (only spaces, a zero-width space U+200B, a byte-order mark, bidi marks) is refused everywhere
instead of being encoded as an empty sentence.
"""

from __future__ import annotations

import unicodedata

from sadetr.core.errors import DataError

LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def normalize_query(text: str) -> str:
    """NFKC, a zero-width space made a space, other format characters (Unicode category Cf: joiners,
    byte-order mark, bidi marks) dropped, runs of whitespace made one space.

    >>> normalize_query("  a\u200bman\u00a0opens the\u200d  door ")
    'a man opens the door'
    >>> normalize_query("\u200b\ufeff ")
    ''
    """
    text = unicodedata.normalize("NFKC", text).replace("\u200b", " ")
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    return " ".join(text.split())


def check_query(text: object, max_chars: int, field: str = "query") -> str:
    """The normalised query; `DataError` on `field` when it is not a string, is empty once normalised,
    spans several lines, holds other control characters or is longer than `max_chars`.

    >>> check_query("\u200b", 500)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    sadetr.core.errors.DataError: query: must not be empty (nothing is left once spaces and invisible ...
    """
    if not isinstance(text, str):
        raise DataError(f"must be a string, got {type(text).__name__}", field=field)
    if any(ch in LINE_BREAKS for ch in text):
        raise DataError(f"must be one line of at most {max_chars} characters", field=field)
    query = normalize_query(text)
    if not query:
        raise DataError(
            "must not be empty (nothing is left once spaces and invisible characters are removed)",
            field=field,
        )
    if any(unicodedata.category(ch) == "Cc" for ch in query):
        raise DataError("must not contain control characters", field=field)
    if len(query) > max_chars:
        raise DataError(f"must be one line of at most {max_chars} characters (got {len(query)})", field=field)
    return query
