"""File formats: which reader reads a file, its columns, row numbers and read errors.

Place in the flow: the first step of :func:`~healthscore.sources.read_source`. A file's
extension picks its format: CSV (``.csv`` commas, or ``;``, tab or ``|`` when the header
has no comma; ``.tsv`` tabs; ``.txt`` detected), Parquet or JSON lines. A
:class:`DataFile` gives the DuckDB reader over it, its header as read, the row numbers a
user sees (CSV rows as in a spreadsheet: the header is row 1, blank lines counted; JSON
lines by line number; Parquet rows from 1) and a reader's error worded for the user.

>>> format_of("events.ndjson"), format_of("accounts.TSV")
('json', 'csv')
"""

from __future__ import annotations

import codecs
import csv
import json
import os
import re
import shutil
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from healthscore.core.files import disk_reason
from healthscore.core.limits import MAX_JSON_DEPTH
from healthscore.errors import OutputError, SourceError
from healthscore.sources.sql import plural, sql_literal
from healthscore.store.scratch import ScratchConnection, ScratchError, error_detail

CSV_EXTENSIONS = (".csv", ".tsv", ".txt")
PARQUET_EXTENSIONS = (".parquet", ".pq")
JSON_EXTENSIONS = (".jsonl", ".ndjson", ".json")
EXTENSIONS = CSV_EXTENSIONS + PARQUET_EXTENSIONS + JSON_EXTENSIONS

#: what an empty line is made of (a UTF-8 byte order mark included)
_BLANK = b" \t\r\n\xef\xbb\xbf"
_NO_HEADER = {"csv": ": no header row"}

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
    #: False once a CSV is found to mix CRLF and LF line ends, and nothing else wrong
    strict: bool = field(init=False, default=True)
    #: a JSON lines file's keys as written, when the reader renamed some
    json_header: list[str] = field(init=False, default_factory=list)
    #: what the reader reads: ``path``, or a copy of a JSON lines file without the UTF-8
    #: byte order mark it starts with (DuckDB's JSON reader refuses one); see :meth:`open`
    source: str = field(init=False, default="")

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
        self.source = self.path

    def __enter__(self) -> DataFile:
        """Ready to read: a JSON lines file that starts with a UTF-8 byte order mark is
        copied without it into a private temporary file (removed on exit), as a CSV's is
        skipped by its reader; lines keep their numbers."""
        if self.fmt == "json":
            with open(self.path, "rb") as f:
                if f.read(3) == codecs.BOM_UTF8:
                    self.source = self._copy_without_bom(f)
        return self

    def _copy_without_bom(self, f) -> str:
        """The rest of ``f`` copied into a private temporary file; a copy cut short (a
        full disk) is removed and is an error naming the temporary folder."""
        folder = tempfile.gettempdir()
        try:
            fd, copy = tempfile.mkstemp(prefix="healthscore-", suffix=".jsonl")
        except OSError as e:
            raise self._copy_error(folder, e) from None
        try:
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(f, out, _BLOCK)
        except BaseException as e:
            os.remove(copy)
            if isinstance(e, OSError):
                raise self._copy_error(folder, e) from None
            raise
        return copy

    def _copy_error(self, folder: str, e: OSError) -> OutputError:
        reason = disk_reason(e)
        return OutputError(
            f"{self.path}: cannot copy it without its byte order mark into the temporary "
            f"folder {folder}: {reason[0] if reason else e.strerror or e}",
            hint="free space there, or set TMPDIR to a folder with room you may write to",
            path=Path(folder),
        )

    def __exit__(self, *exc) -> None:
        if self.source != self.path:
            os.remove(self.source)
            self.source = self.path

    def describe(self, db: ScratchConnection) -> tuple[list[str], list[str]]:
        """The file's column names and DuckDB types, as the typed reader sees them."""
        try:
            rel = db.sql(f"SELECT * FROM {self.reader_sql(typed=True)}")
        except ScratchError as e:
            # DuckDB's strict reader refuses a file whose lines end in CRLF and LF both
            # (a last line appended by another tool); once nothing else is found wrong,
            # read it again leniently.
            if self.fmt != "csv" or not self.strict:
                raise self.read_error(e) from None
            found = _diagnose(self.path, self.delim)
            if found.problem or not found.mixed_newlines:
                raise self.read_error(e, found) from None
            self.strict = False
            return self.describe(db)
        names = list(rel.columns)
        if self.fmt == "json" and names == ["json"]:
            # a line holding a list or a plain value makes the reader read every line
            # as one column 'json'
            problem = _json_problem(self.path)
            if problem:
                line, cause, hint = problem
                raise SourceError(f"{self.path}:{line}: {cause}", hint=hint)
        if self.fmt == "json" and any(_MADE_UP.match(n) for n in names):
            self._check_json_keys(db, names)
        return names, [str(t) for t in rel.types]

    def _check_json_keys(self, db: ScratchConnection, names: list[str]) -> None:
        """The reader renames a key repeated but for case (``Account_ID_1``) and an empty
        one (``C1``), and then reads no value for it: an empty key is refused here, and
        the keys as written kept for :meth:`header_names` (whose caller refuses twins)."""
        keys = self._json_keys(db)
        if "" in keys:
            raise SourceError(
                f'{self.path}: a row has an empty key ("": ...); its values have no column',
                hint="give the key a name in the file",
            )
        if any(n not in keys for n in names):
            self.json_header = keys

    def check_not_empty(self) -> None:
        """A file with nothing in it, or a CSV without a header on its first line, is an
        error: an empty export is a failed export far more often than no data."""
        if os.path.getsize(self.path) == 0:
            raise SourceError(
                f"{self.path}: the file is empty (0 bytes)" + _NO_HEADER.get(self.fmt, ""),
                hint="check the export that wrote it; a file with no rows still has a header",
            )
        if self.fmt != "csv":
            return
        with open(self.path, "rb") as f:
            first = f.readline(65536)
            rest = first
            while rest and not rest.strip(_BLANK):
                rest = f.read(65536)
        if not first.strip(_BLANK):
            if not rest:
                raise SourceError(
                    f"{self.path}: the file holds only blank lines: no header row",
                    hint="a CSV file starts with a header row naming its columns",
                )
            raise SourceError(
                f"{self.path}:1: the first line is blank; the header (column names) must "
                "be on line 1",
                hint="delete the blank lines above the header",
            )

    def check_nesting(self) -> None:
        """A JSON lines row nested more than :data:`~healthscore.core.limits.MAX_JSON_DEPTH`
        levels deep is an error naming its line, before the driver reads it (DuckDB's
        JSON reader takes the process down on a row nested tens of thousands deep).

        The file is read in blocks, counting each line's ``[`` and ``{`` (NumPy, at
        memory speed); only a line holding more than the bound is walked character by
        character, strings skipped.
        """
        if self.fmt != "json":
            return
        import numpy as np

        carry = 0  # opening brackets of the line the last block ended in
        with open(self.path, "rb") as f:
            while block := f.read(_BLOCK):
                b = np.frombuffer(block, np.uint8)
                opened = np.cumsum((b == 0x5B) | (b == 0x7B), dtype=np.int32)
                ends = opened[b == 0x0A]
                per_line = np.diff(ends, prepend=0, append=opened[-1])
                per_line[0] += carry
                if per_line.max() > MAX_JSON_DEPTH:
                    _deep_line(self.path)  # rare: walk those lines themselves
                carry = int(per_line[-1])

    def reader_sql(self, typed: bool, json_columns: str = "") -> str:
        """The DuckDB table function reading the file: types sniffed, or text (``typed``
        False: CSV all text; JSON the ``json_columns`` given)."""
        lit = sql_literal(self.source)
        if self.fmt == "csv":
            opts = ", header = true, skip = 0"
            if self.delim:
                # RFC 4180 quoting, not sniffed: one badly quoted value must not make the
                # sniffer read every quote as text
                opts += f", delim = {sql_literal(self.delim)}, quote = '\"', escape = '\"'"
            if not self.strict:
                opts += ", strict_mode = false"
            if not typed:
                opts += ", all_varchar = true"
            return f"read_csv({lit}{opts})"
        if self.fmt == "json":
            opts = ", format = 'newline_delimited'"
            opts += ", sample_size = -1" if typed else f", columns = {json_columns}"
            return f"read_json({lit}{opts})"
        return f"read_parquet({lit}, file_row_number = true)"

    def read_error(self, e: Exception, found: _Diagnosis | None = None) -> SourceError:
        """The reader's error worded for the user: for a CSV the first line our own reading
        finds wrong (not UTF-8, a quote never closed, a row with more or fewer fields than
        the header) and why; else the driver's detail."""
        if self.fmt == "csv":
            found = found or _diagnose(self.path, self.delim)
            if found.problem:
                line, cause, hint = found.problem
                return SourceError(f"{self.path}:{line}: {cause}", hint=hint)
        if self.fmt == "json":
            # the driver's line numbers are off (one past, blank lines not counted)
            problem = _json_problem(self.path)
            if problem:
                line, cause, hint = problem
                return SourceError(f"{self.path}:{line}: {cause}", hint=hint)
        detail = error_detail(e)
        hint = None
        if self.fmt == "json":
            detail = detail.replace(" Try auto-detecting the JSON format", "")
            detail = re.sub(r"Malformed JSON in file .*?, at byte \d+ in line \d+: ", "", detail)
            hint = _ONE_OBJECT
            if "utf-8" in detail.lower() or "unicode" in detail.lower():
                hint = "save the file as UTF-8"
        return SourceError(
            f"{self.path}: cannot read as {_FORMAT_NAMES[self.fmt]}: {detail}", hint=hint
        )

    def header_names(self) -> list[str]:
        """The header exactly as written (Parquet, CSV with a known delimiter; else [])."""
        if self.fmt == "parquet":
            return pq.read_schema(self.path).names
        if self.fmt == "json":
            return self.json_header
        if self.fmt == "csv" and self.delim:
            with open(self.path, encoding="utf-8", errors="replace", newline="") as f:
                return next(csv.reader(f, delimiter=self.delim), [])
        return []

    def _json_keys(self, db: ScratchConnection) -> list[str]:
        """Every key of a JSON lines file's objects, in order of first sight (a scan)."""
        lit = sql_literal(self.source)
        rows = db.execute(
            "SELECT k FROM (SELECT unnest(json_keys(json)) AS k, generate_subscripts("
            "json_keys(json), 1) AS i, n FROM (SELECT json, row_number() OVER () AS n FROM "
            f"read_json_objects({lit}, format = 'newline_delimited'))) "
            "GROUP BY k ORDER BY min(n * 100000 + i)"
        ).fetchall()
        return [k for (k,) in rows]

    def user_rows(self, rows: list[int]) -> dict[int, int]:
        """Map internal row numbers to those a user sees in the file.

        The readers skip blank lines; a spreadsheet shows them, and a text editor shows
        a JSON line's number, so both count them back in (a CSV value spanning lines is
        one row, as in a spreadsheet).
        """
        if self.fmt == "parquet" or not rows:
            return {r: r for r in rows}
        result, want = {}, iter(sorted(rows))
        target = next(want, None)
        with ExitStack() as stack:
            if self.fmt == "json":
                f = stack.enter_context(open(self.path, "rb"))
                records = (n for n, line in enumerate(f, start=1) if line.strip())
            else:
                # internal numbers: the header is 1, the first data record 2, blank lines
                # skipped
                f = stack.enter_context(
                    open(self.path, newline="", encoding="utf-8-sig", errors="replace")
                )
                reader = csv.reader(f, delimiter=self.delim or ",")
                records = (n for n, fields in enumerate(reader, start=1) if fields)
            for record, user_row in enumerate(records, start=1):
                while target == record:
                    result[target] = user_row
                    target = next(want, None)
                if target is None:
                    break
        return result | {r: r for r in rows if r not in result}


# a name DuckDB's JSON reader makes up: for a key repeated but for case, or an empty key
_MADE_UP = re.compile(r"^(.*_\d+|C\d+)$")

#: bytes read at a time when a file is looked through
_BLOCK = 1 << 22


def _deep_line(file: str) -> None:
    """Raise naming the first line of a JSON lines file nested more than
    :data:`~healthscore.core.limits.MAX_JSON_DEPTH` deep (brackets inside strings are
    text)."""
    with open(file, "rb") as f:
        for line_no, line in enumerate(f, start=1):
            if line.count(b"[") + line.count(b"{") <= MAX_JSON_DEPTH:
                continue
            depth, in_text, escaped = 0, False, False
            for byte in line:
                if in_text:
                    if escaped:
                        escaped = False
                    elif byte == 0x5C:  # backslash
                        escaped = True
                    elif byte == 0x22:  # quote
                        in_text = False
                elif byte == 0x22:
                    in_text = True
                elif byte in (0x5B, 0x7B):  # [ {
                    depth += 1
                    if depth > MAX_JSON_DEPTH:
                        raise SourceError(
                            f"{file}:{line_no}: a value nested more than {MAX_JSON_DEPTH} "
                            "levels deep",
                            hint='a row is one flat JSON object: {"column": value, ...}',
                        )
                elif byte in (0x5D, 0x7D):  # ] }
                    depth -= 1


_ONE_OBJECT = "write one JSON object per line; a file holding a JSON array is not read"
_JSON_KINDS = {list: "a list", str: "a string", bool: "true or false", type(None): "null"}


def _json_problem(file: str) -> tuple[int, str, str | None] | None:
    """The first line of a JSON lines file that is not one JSON object: (line, cause,
    hint), lines numbered as a text editor shows them; None if every line is one.
    Text that is UTF-16 or not UTF-8 is named as such (a UTF-8 byte order mark is not
    a problem). Only called once the driver has refused the file, or read a line that
    is no object."""
    with open(file, "rb") as f:
        if _utf16(f.read(4)):
            return 1, "the file is UTF-16 text", "save the file as UTF-8"
        f.seek(0)
        for line_no, line in enumerate(f, start=1):
            if line_no == 1:
                line = line.removeprefix(codecs.BOM_UTF8)
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as e:
                return line_no, _not_utf8(line, e), "save the file as UTF-8"
            text = text.rstrip()
            if not text.strip():
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as e:
                cause = f"{e.msg} (character {e.pos + 1})"
                if e.pos >= len(text):
                    cause = "the line ends inside a JSON value"
            else:
                if isinstance(value, dict):
                    continue
                cause = f"the line holds {_JSON_KINDS.get(type(value), 'a number')}, not an object"
            return line_no, f"cannot read as {_FORMAT_NAMES['json']}: {cause}", _ONE_OBJECT
    return None


def _utf16(head: bytes) -> bool:
    """Whether a file's first bytes show UTF-16 text: its byte order mark, or (without
    one) a zero byte beside each of its first two ASCII characters."""
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return True
    return len(head) == 4 and bool(
        (head[1] == head[3] == 0 and head[0] and head[2])
        or (head[0] == head[2] == 0 and head[1] and head[3])
    )


def _not_utf8(line: bytes, e: UnicodeDecodeError) -> str:
    """Why a line is not UTF-8 text: its first bad byte and where."""
    bad = line[e.start : e.start + 1].hex()
    return f"not UTF-8 text (byte 0x{bad} at character {e.start + 1})"


@dataclass
class _Diagnosis:
    """What our own reading of a CSV the driver refused finds: the first problem as
    (line, cause, hint), and whether its lines end in both CRLF and LF."""

    problem: tuple[int, str, str | None] | None = None
    mixed_newlines: bool = False


def _diagnose(file: str, delim: str | None) -> _Diagnosis:
    """Read a CSV the driver refused, to say where and why: text that is not UTF-8, a
    quote never closed or stray inside a quoted value, a row whose field count differs
    from the header's (rows numbered as a spreadsheet shows them). Only called once
    DuckDB has refused the file."""
    found = _Diagnosis()
    crlf = lf = 0
    with open(file, "rb") as f:
        if _utf16(f.read(4)):
            found.problem = (1, "the file is UTF-16 text", "save the file as UTF-8")
            return found
        f.seek(0)
        for line_no, line in enumerate(f, start=1):
            if line.endswith(b"\r\n"):
                crlf += 1
            elif line.endswith(b"\n"):
                lf += 1
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as e:
                found.problem = (line_no, _not_utf8(line, e), "save the file as UTF-8")
                return found
    found.mixed_newlines = crlf > 0 and lf > 0
    if delim:
        found.problem = _csv_problem(file, delim)
    return found


def _csv_problem(file: str, delim: str) -> tuple[int, str, str | None] | None:
    """The first quoting error or ragged row of a UTF-8 CSV: (line or row, cause, hint)."""
    with open(file, newline="", encoding="utf-8-sig") as f:
        rows = csv.reader(f, delimiter=delim, strict=True)
        start, expected, row = 1, None, 0
        try:
            for fields in rows:
                row += 1  # a spreadsheet row: blank lines count
                if expected is None:
                    expected = len(fields)
                elif fields and len(fields) != expected:
                    found = len(fields)
                    return (
                        row,
                        f"has {found} {plural(found, 'field')}, the header has {expected}",
                        "quote values that contain the delimiter" if found > expected else None,
                    )
                start = rows.line_num + 1
        except csv.Error as e:
            if "unexpected end of data" in str(e):
                return (
                    start,
                    "a quoted value opened on this line is never closed",
                    'close the quote, or double a quote inside a value ("")',
                )
            return (
                rows.line_num,
                f"a quote inside a quoted value ({e})",
                'double a quote inside a quoted value (""), or quote the whole value',
            )
    return None
