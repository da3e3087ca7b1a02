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
_EDGE_SPACE = r"^[\s\x{00A0}\x{FEFF}]|[\s\x{00A0}\x{FEFF}]$"


def sql_literal(value: str) -> str:
    """A SQL string literal."""
    return "'" + str(value).replace("'", "''") + "'"


def sql_text(sql: str) -> str:
    """SQL: the trimmed text of a value, NULL when empty.

    Trimming is only attempted on values that start or end with whitespace: most
    don't, and a trim over every value of a big file is what would cost time.
    """
    x = f"CAST({sql} AS VARCHAR)"
    return (
        f"CASE WHEN {x} = '' THEN NULL WHEN regexp_matches({x}, {sql_literal(_EDGE_SPACE)}) "
        f"THEN nullif(trim({x}, {sql_literal(SPACE)}), '') ELSE {x} END"
    )


def plural(n: int, word: str) -> str:
    """``word`` for one, ``word + s`` otherwise."""
    return word if n == 1 else word + "s"
