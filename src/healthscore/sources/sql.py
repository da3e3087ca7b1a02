"""SQL text for the scratch queries that read a file: literals and trimmed text.

Place in the flow: the bottom of :mod:`healthscore.sources`. Every step of a read builds
DuckDB SQL over the file's columns; these helpers quote a value and give a value's
trimmed text (whitespace stripped, empty as NULL: the first rule every value meets).

>>> sql_literal("O'Brien")
"'O''Brien'"
"""

from __future__ import annotations

# Whitespace stripped around every value: space, tab, CR, LF, no-break space, BOM.
SPACE = " \t\r\n\u00a0\ufeff"


def sql_literal(value: str) -> str:
    """A SQL string literal."""
    return "'" + str(value).replace("'", "''") + "'"


def sql_text(sql: str) -> str:
    """SQL: the trimmed text of a value, NULL when empty.

    Trimming is only attempted on values that start or end with whitespace: most
    don't, and a trim over every value of a big file is what would cost time. The
    edges are compared character by character (``prefix``/``suffix``: half the time of
    a regular expression, which every value of a text column meets twice in a load).
    """
    x = f"CAST({sql} AS VARCHAR)"
    edge = " OR ".join(f"{side}({x}, {_char(c)})" for side in ("prefix", "suffix") for c in SPACE)
    return (
        f"CASE WHEN {x} = '' THEN NULL WHEN {edge} "
        f"THEN nullif(trim({x}, {sql_literal(SPACE)}), '') ELSE {x} END"
    )


def _char(c: str) -> str:
    """SQL: the one character ``c`` (``chr``: a literal tab or line break would be hard to
    read in the SQL an error shows)."""
    return f"chr({ord(c)})"


def plural(n: int, word: str) -> str:
    """``word`` for one, ``word + s`` otherwise."""
    return word if n == 1 else word + "s"
