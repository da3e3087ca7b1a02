"""File formats: which reader reads a file, its columns, row numbers and read errors.

Place in the flow: the first step of :func:`~healthscore.sources.read_source`. A file's
extension picks its format: CSV (``.csv`` commas, or ``;``, tab or ``|`` when the header
has no comma; ``.tsv`` tabs; ``.txt`` detected), Parquet or JSON lines. A
:class:`DataFile` gives the DuckDB reader over it, its header as read, the row numbers a
user sees (CSV rows as in a spreadsheet: the header is row 1; JSON lines by line number,
blank lines counted; Parquet rows from 1) and a reader's error worded for the user.

>>> format_of("events.ndjson"), format_of("accounts.TSV")
('json', 'csv')
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field

import pyarrow.parquet as pq

from healthscore.errors import SourceError
from healthscore.sources.sql import plural, sql_literal
from healthscore.store.scratch import ScratchConnection, ScratchError, error_detail

CSV_EXTENSIONS = (".csv", ".tsv", ".txt")
PARQUET_EXTENSIONS = (".parquet", ".pq")
JSON_EXTENSIONS = (".jsonl", ".ndjson", ".json")
EXTENSIONS = CSV_EXTENSIONS + PARQUET_EXTENSIONS + JSON_EXTENSIONS

#: how a read error names each format
_FORMAT_NAMES = {"csv": "CSV", "json": "JSON lines (one object per line)", "parquet": "Parquet"}


def format_of(file: str) -> str:
    """``csv``, ``parquet`` or ``json`` by the file's extension."""
    lower = file.lower()
    for fmt, exts in (
        ("csv", CSV_EXTENSIONS),
        ("parquet", PARQUET_EXTENSIONS),
        ("json", JSON_EXTENSIONS),
    ):
        if lower.endswith(exts):
            return fmt
    raise SourceError(
        f"{file}: unknown file type", hint="accepted extensions: " + ", ".join(EXTENSIONS)
    )


@dataclass
class DataFile:
    """One file to read: its path, format and (CSV) delimiter."""

    path: str
    fmt: str
    delim: str | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        # .csv means commas (unless its header has none but has ';', tab or '|') and .tsv
        # tabs; a .txt file's delimiter is detected.
        lower = self.path.lower()
        if lower.endswith(".tsv"):
            self.delim = "\t"
        elif lower.endswith(".csv"):
            with open(self.path, "rb") as f:
                header = f.readline(65536)
            if b"," in header or not any(d in header for d in (b";", b"\t", b"|")):
                self.delim = ","

    def describe(self, db: ScratchConnection) -> tuple[list[str], list[str]]:
        """The file's column names and DuckDB types, as the typed reader sees them."""
        try:
            rel = db.sql(f"SELECT * FROM {self.reader_sql(typed=True)}")
            return list(rel.columns), [str(t) for t in rel.types]
        except ScratchError as e:
            raise self.read_error(e) from None

    def reader_sql(self, typed: bool, json_columns: str = "") -> str:
        """The DuckDB table function reading the file: types sniffed, or text (``typed``
        False: CSV all text; JSON the ``json_columns`` given)."""
        lit = sql_literal(self.path)
        if self.fmt == "csv":
            opts = ", header = true, skip = 0"
            if self.delim:
                opts += f", delim = {sql_literal(self.delim)}"
            if not typed:
                opts += ", all_varchar = true"
            return f"read_csv({lit}{opts})"
        if self.fmt == "json":
            opts = ", format = 'newline_delimited'"
            opts += ", sample_size = -1" if typed else f", columns = {json_columns}"
            return f"read_json({lit}{opts})"
        return f"read_parquet({lit}, file_row_number = true)"

    def read_error(self, e: Exception) -> SourceError:
        """The reader's error worded for the user: a ragged CSV row by number, else the
        driver's detail with a hint for the common causes."""
        if self.fmt == "csv" and self.delim:
            ragged = _ragged_row(self.path, self.delim)
            if ragged:
                row, found, expected = ragged
                return SourceError(
                    f"{self.path}:{row}: has {found} {plural(found, 'field')}, the header "
                    f"has {expected}",
                    hint="quote values that contain the delimiter" if found > expected else None,
                )
        detail = error_detail(e)
        hint = None
        if "utf-8" in detail.lower():
            hint = "save the file as UTF-8"
        elif self.fmt == "json":
            detail = detail.replace(" Try auto-detecting the JSON format", "")
            hint = "write one JSON object per line; a file holding a JSON array is not read"
        return SourceError(
            f"{self.path}: cannot read as {_FORMAT_NAMES[self.fmt]}: {detail}", hint=hint
        )

    def header_names(self) -> list[str]:
        """The header exactly as written (Parquet, CSV with a known delimiter; else [])."""
        if self.fmt == "parquet":
            return pq.read_schema(self.path).names
        if self.fmt == "csv" and self.delim:
            with open(self.path, encoding="utf-8", errors="replace", newline="") as f:
                return next(csv.reader(f, delimiter=self.delim), [])
        return []

    def user_rows(self, rows: list[int]) -> dict[int, int]:
        """Map internal row numbers to those a user sees in the file."""
        if self.fmt != "json":
            return {r: r for r in rows}
        # The JSON reader skips blank lines; count them back in to give line numbers.
        result, want, record = {}, iter(rows), 0
        target = next(want, None)
        with open(self.path, "rb") as f:
            for line_no, line in enumerate(f, start=1):
                if target is None:
                    break
                if line.strip():
                    record += 1
                    while target == record:
                        result[target] = line_no
                        target = next(want, None)
        return result | {r: r for r in rows if r not in result}


def _ragged_row(file: str, delim: str) -> tuple[int, int, int] | None:
    """First CSV row whose field count differs from the header's: (row, found, expected).

    Only called once DuckDB has refused the file, to say where it went wrong.
    """
    try:
        with open(file, newline="", encoding="utf-8") as f:
            rows = csv.reader(f, delimiter=delim)
            header = next(rows, None)
            if header is None:
                return None
            row = 1
            for fields in rows:
                if not fields:  # blank lines are skipped, as DuckDB does
                    continue
                row += 1
                if len(fields) != len(header):
                    return row, len(fields), len(header)
    except (UnicodeDecodeError, csv.Error):
        return None
    return None
