"""Rows in memory (a JSON batch sent to the service) validated as a file is.

Place in the flow: beside :func:`~healthscore.sources.read.stream_source`, for rows
that arrive as Python objects instead of a file (``POST /v1/ingest/{table}``, the
Segment routes). :func:`check_rows` writes them as JSON lines to a private temporary
file and reads that with :func:`~healthscore.sources.read.stream_source`, so a batch
meets exactly the rules ``healthscore load`` applies to a JSON lines file: the same
coercion, dates, keys, domains, enums and derived event ids. What differs is only how
a problem is located: by the row's index in the batch (from 0), not a line of a file.

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
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from healthscore.core.tables import DERIVABLE_KEYS
from healthscore.errors import Problem, SourceError
from healthscore.sources.columns import canonical_table
from healthscore.sources.read import SourceBatch, stream_source
from healthscore.sources.sql import plural

_SCALARS = (str, int, float, bool, type(None))


def row_problems(rows: list) -> list[Problem]:
    """Rows that are not flat JSON objects: one problem each (row = index, from 0)."""
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
    return problems


@contextmanager
def check_rows(
    rows: list[dict],
    table: str,
    *,
    allow_rejects: bool = False,
) -> Iterator[SourceBatch]:
    """The valid rows of ``rows`` for canonical table ``table``, as
    :func:`~healthscore.sources.read.stream_source` gives a file's (read ``data``
    inside the ``with`` block).

    Without ``allow_rejects`` any invalid row raises :class:`SourceError` listing every
    problem (``row``: the index in ``rows``, from 0; ``column``; reason), and nothing is
    returned. With it, ``rejects`` holds the problems (rows as indexes) and the valid
    rows are returned.
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
                    stream_source(path, spec.name, allow_rejects=True, shared_scratch=True)
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


def _relocate(problems: list[Problem], index: list[int]) -> None:
    """Problems located by line of the temporary file, relocated to indexes in the batch."""
    for p in problems:
        p.file = None
        if p.row is not None:
            p.row = index[p.row - 1]


def _collect(problems: list[Problem], label: str) -> SourceError:
    n = len({p.row for p in problems})
    return SourceError.collect(
        problems, f"{label}: {n} invalid {plural(n, 'row')}, nothing written"
    )
