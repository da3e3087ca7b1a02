"""Rows in memory (a JSON batch sent to the service) validated as a file is.

Place in the flow: beside :func:`~healthscore.sources.read.stream_source`, for rows
that arrive as Python objects instead of a file (``POST /v1/ingest/{table}``, the
Segment routes). A batch meets exactly the rules ``healthscore load`` applies to a JSON
lines file of the same rows: the same coercion, dates, keys, domains, enums and derived
event ids. What differs is only how a problem is located: by the row's index in the
batch (from 0), not a line of a file.

Two ways, one set of rules. A batch of canonical columns only (a service's usual batch)
is read in memory (:func:`~healthscore.sources.read.read_text_rows`: its values as the
JSON lines reader's text, coerced and checked in one query, a few milliseconds for
1,000 rows). A batch that has an invalid row, or extra columns (typed as a JSON reader
types them), is written as JSON lines to a private temporary file and read with
:func:`~healthscore.sources.read.stream_source`, which words every problem.

A value must be text, a number, true/false or null (a nested object or list is a
problem of its row). A required column no row carries is reported on every row, so
each row of the batch says what it lacks.

Examples
--------
>>> with check_rows([{"user_id": "U1", "account_id": "A1"}], "users") as batch:
...     batch.data.read_all().column("user_id").to_pylist()
['U1']
>>> try:
...     with check_rows([{"user_id": "U1"}, {"user_id": "U2", "account_id": "A"}], "users"):
...         pass
... except SourceError as e:
...     print(e)
users batch: 1 invalid row, nothing written:
  row 0: account_id: required value is empty
"""

from __future__ import annotations

import json
import math
import re
import tempfile
from collections.abc import Collection, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pyarrow as pa

from healthscore.core.tables import DERIVABLE_KEYS
from healthscore.errors import Problem, SourceError
from healthscore.sources.columns import canonical_table
from healthscore.sources.read import SourceBatch, read_text_rows, stream_source
from healthscore.sources.sql import SPACE, plural

_SCALARS = (str, int, float, bool, type(None))


def row_problems(rows: list) -> list[Problem]:
    """Rows that are not flat JSON objects of scalars, and numbers JSON cannot hold (NaN,
    infinities, from Python callers): one problem each (row = index, from 0)."""
    problems = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            problems.append(Problem("a row must be a JSON object", row=i, got=type(row).__name__))
            continue
        for k, v in row.items():
            if not isinstance(v, _SCALARS):
                problems.append(
                    Problem(
                        "a value must be text, a number, true/false or null",
                        row=i,
                        column=str(k),
                        got=type(v).__name__,
                    )
                )
            elif isinstance(v, float) and not math.isfinite(v):  # JSON has no NaN
                problems.append(Problem("not a finite number", row=i, column=str(k), got=repr(v)))
    return problems


@contextmanager
def check_rows(
    rows: list[dict],
    table: str,
    *,
    allow_rejects: bool = False,
    text_columns: Collection[str] = (),
) -> Iterator[SourceBatch]:
    """The valid rows of ``rows`` for canonical table ``table``, as
    :func:`~healthscore.sources.read.stream_source` gives a file's (read ``data``
    inside the ``with`` block).

    Without ``allow_rejects`` any invalid row raises :class:`SourceError` listing every
    problem (``row``: the index in ``rows``, from 0; ``column``; reason), and nothing is
    returned. With it, ``rejects`` holds the problems (rows as indexes) and the valid
    rows are returned. ``text_columns``: extra columns read as text whatever their values
    (those the store holds as text: a number as its JSON text, as `healthscore load`
    reads a JSON lines file).
    """
    spec = canonical_table(table)
    label = f"{spec.name} batch"
    bad = row_problems(rows)
    skip = {p.row for p in bad}
    kept = [(i, r) for i, r in enumerate(rows) if i not in skip]
    if not kept:
        if bad:
            raise _collect(bad, label)
        raise SourceError(f"{label}: no rows", hint='send {"rows": [{...}, ...]}')
    # a required column no row carries: every row says it lacks it
    present = {k for _, r in kept for k in r}
    pk = spec.primary_key
    missing = [
        c
        for c in spec.required
        if c not in present and not (c == pk and spec.name in DERIVABLE_KEYS)
    ]
    if not bad and not missing:
        fast = _in_memory(rows, spec, label)
        if fast is not None:
            yield fast
            return
    with tempfile.TemporaryDirectory(prefix="healthscore-rows-") as d:
        path = Path(d) / f"{spec.name}.jsonl"
        with open(path, "w", encoding="utf-8") as f:
            for _, r in kept:
                extra = {c: None for c in missing}
                f.write(json.dumps({**extra, **r}, ensure_ascii=False, allow_nan=False) + "\n")
        index = [i for i, _ in kept]  # line n of the file is rows[index[n - 1]]
        with ExitStack() as stack:
            # rejects allowed here, so that every problem of the batch is listed at once
            try:
                batch = stack.enter_context(
                    stream_source(
                        path,
                        spec.name,
                        allow_rejects=True,
                        shared_scratch=True,
                        text_columns=text_columns,
                    )
                )
            except SourceError as e:  # the batch as a whole (a read error): no row to name
                raise SourceError(
                    str(e.message).replace(str(path), label), e.problems, e.hint
                ) from None
            _relocate(batch.rejects, index)
            batch.rejects = sorted(bad + batch.rejects, key=lambda p: p.row)
            if batch.rejects and not allow_rejects:
                raise _collect(batch.rejects, label)
            batch.file = label
            yield batch


class _NotText(Exception):
    """A value the in-memory reading does not take (a float that is not finite)."""


def _text(value) -> str | None:
    """A scalar as the JSON lines reader reads it as text: a string as is, a number or
    boolean as :func:`json.dumps` writes it, None as NULL."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if not math.isfinite(value):
        raise _NotText  # not reached: row_problems refuses it
    return float.__repr__(value)


def _text_column(values: list) -> pa.Array:
    """One column's values as text (:func:`_text`); a column of text and nulls as is."""
    try:
        column = pa.array(values, pa.string())  # only text and None: no value to convert
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([_text(v) for v in values], pa.string())
    return column


def _in_memory(rows: list[dict], spec, label: str) -> SourceBatch | None:
    """The batch read in memory when every key of every row is a canonical column and
    every row is valid; else None (the temporary file's reading words the problems)."""
    names = set()
    for r in rows:
        names.update(r)
    if not names <= spec.columns.keys():
        return None  # extra columns (or a column named in another case)
    pk = spec.primary_key
    order = [c for c in spec.columns if c in names]
    try:
        text = pa.table({c: _text_column([r.get(c) for r in rows]) for c in order})
    except (_NotText, pa.ArrowException):
        return None
    derive = any(
        not (v.strip(SPACE) if isinstance(v, str) else v is not None)
        for v in (r.get(pk) for r in rows)
    )
    return read_text_rows(text, spec.name, label, derive)


def _relocate(problems: list[Problem], index: list[int]) -> None:
    """Problems located by line of the temporary file, relocated to indexes in the batch,
    in their reasons and hints too (a duplicate's "first seen at row N", the row a
    number format was seen on: a line there, an index here)."""

    def moved(text: str | None) -> str | None:
        if text is None:
            return None
        return _ROW.sub(
            lambda m: f"{m[1]}{index[int(m[2]) - 1]}" if 0 < int(m[2]) <= len(index) else m[0],
            text,
        )

    for p in problems:
        p.file = None
        if p.row is not None:
            p.row = index[p.row - 1]
        p.reason = moved(p.reason)
        p.hint = moved(p.hint)


#: how a reason or hint names a row of the temporary file (e.g. a duplicate's "first
#: seen at row 3", :mod:`~healthscore.sources.checks`; "row 3: '7,5'" in a hint)
_ROW = re.compile(r"(\brows? )(\d+)\b")


def _collect(problems: list[Problem], label: str) -> SourceError:
    n = len({p.row for p in problems})
    return SourceError.collect(
        problems, f"{label}: {n} invalid {plural(n, 'row')}, nothing written"
    )
