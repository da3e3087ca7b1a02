"""CSV files healthscore writes: safe to open in a spreadsheet, replaced atomically.

Place in the flow: the bottom layer, beside :mod:`healthscore.core.files`. Every CSV a
command writes (``score --format csv``, ``trends --format csv``, ``load --rejects``)
goes through :func:`write_csv` or :func:`csv_bytes`.

A spreadsheet runs a cell that starts with ``=``, ``+``, ``-`` or ``@`` (and, in some,
tab or carriage return, or any of them behind spaces it trims) as a formula, so an
account, CSM or segment name such as ``=HYPERLINK(...)`` would run on the reader's
machine. As OWASP recommends ("CSV injection"), :func:`neutralize` prefixes such text
cells with a single quote, which spreadsheets show as text. Only text cells are touched:
numeric columns stay numbers (``-12.5`` in a score column is written as it is), and a
text cell that is just a number (``-3``, ``+1.5e3``) is left alone, since it cannot run
anything. Column names are text cells too. ``raw=True`` writes every value as it is,
for a program that reads the file.

Examples
--------
>>> import pyarrow as pa
>>> names = ["=1+2", "-3", "Acme", "@SUM(A1)", None]
>>> t = pa.table({"name": names, "score": [1.5, -2.0, 3.0, 4.0, 5.0]})
>>> print(csv_bytes(t).decode(), end="")
"name","score"
"'=1+2",1.5
"-3",-2
"Acme",3
"'@SUM(A1)",4
,5
>>> print(csv_bytes(t, raw=True).decode().splitlines()[1])
"=1+2",1.5
"""

from __future__ import annotations

import os
from array import array

import pyarrow as pa
import pyarrow.compute as pc

from healthscore.core.files import atomic_path

#: a text cell starting with one of these is run as a formula by some spreadsheet; the
#: full-width forms (U+FF1D, U+FF0B, U+FF0D, U+FF20) too, which a spreadsheet in an East
#: Asian locale may read as the ASCII signs; and behind leading spaces, line breaks or
#: invisible characters (a no-break space, a zero-width space, a byte-order mark), which
#: a spreadsheet may trim on import before it looks at the cell
FORMULA_START = r"^[\s\p{Z}\p{Cf}]*[=+\-@\t\r\x{ff1d}\x{ff0b}\x{ff0d}\x{ff20}]"
#: ... unless it is just a number (spaces around it aside), which runs nothing
PLAIN_NUMBER = r"^ *[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)? *$"


def neutral_text(value: str) -> str:
    """One text cell as :func:`neutralize` writes it.

    >>> neutral_text("=cmd|' /C calc'!A0"), neutral_text("-5"), neutral_text("a-b")
    ("'=cmd|' /C calc'!A0", '-5', 'a-b')
    """
    data = value.encode()
    offsets = pa.py_buffer(array("i", [0, len(data)]))
    # made from its bytes: pyarrow's conversion of Python values imports pandas
    cell = pa.Array.from_buffers(pa.string(), 1, [None, offsets, pa.py_buffer(data)])
    return _neutral_column(cell)[0].as_py()


def neutralize(table: pa.Table) -> pa.Table:
    """``table`` with every text cell (and column name) that a spreadsheet would run as a
    formula prefixed with ``'``; numbers, dates and other types are left as they are."""
    columns, names = [], []
    for name, column in zip(table.column_names, table.columns, strict=True):
        names.append(neutral_text(name))
        columns.append(_neutral_column(column))
    return pa.table(columns, names=names)


def _neutral_column(column):
    typ = column.type
    if pa.types.is_dictionary(typ):
        column = column.cast(typ.value_type)
        typ = typ.value_type
    if not (pa.types.is_string(typ) or pa.types.is_large_string(typ)):
        return column
    risky = pc.and_(
        pc.match_substring_regex(column, FORMULA_START),
        pc.invert(pc.match_substring_regex(column, PLAIN_NUMBER)),
    )
    quoted = pc.utf8_replace_slice(column, start=0, stop=0, replacement="'")
    return pc.if_else(risky, quoted, column)  # risky is null only where the cell is


def csv_bytes(table: pa.Table, *, raw: bool = False) -> bytes:
    """``table`` as CSV (header first), neutralized unless ``raw``."""
    import pyarrow.csv as pacsv

    sink = pa.BufferOutputStream()
    pacsv.write_csv(table if raw else neutralize(table), sink)
    return sink.getvalue().to_pybytes()


def write_csv(
    table: pa.Table, path: str | os.PathLike, *, raw: bool = False, param: str | None = None
) -> None:
    """Write ``table`` as CSV to ``path`` (neutralized unless ``raw``), atomically: a
    failure leaves the old file or none (see :func:`healthscore.core.files.atomic_path`).
    ``param`` is the parameter that named the file, for the error's hint."""
    with atomic_path(path, param=param) as tmp:
        write_csv_into(table, tmp, raw=raw)


def write_csv_into(table: pa.Table, tmp: str | os.PathLike, *, raw: bool = False) -> None:
    """Write ``table`` as CSV (neutralized unless ``raw``) into ``tmp``, the temporary
    path of an :func:`~healthscore.core.files.atomic_path` the caller holds: for a file
    that goes into place only once other work has succeeded (a load's rejects)."""
    import pyarrow.csv as pacsv

    pacsv.write_csv(table if raw else neutralize(table), tmp)
