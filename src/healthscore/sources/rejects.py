"""Rejects: the invalid rows of a file, as read, with their row numbers and reasons.

Place in the flow: beside the valid rows of :func:`~healthscore.sources.read_source`.
With ``allow_rejects``, invalid rows are not an error: they are fetched as read (text,
before any value map) with ``_row`` (the number a user sees) and ``_reason`` (every
problem of the row), and :func:`write_rejects` writes them to a CSV file for fixing
(through :func:`healthscore.core.csvout.write_csv`: atomic, safe in a spreadsheet).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

from healthscore.core.csvout import write_csv, write_csv_into
from healthscore.errors import Problem
from healthscore.sources.columns import FileColumns
from healthscore.store.scratch import ScratchConnection, fetch_arrow

if TYPE_CHECKING:
    from healthscore.sources.read import SourceBatch


def fetch_rejects(
    db: ScratchConnection,
    cols: FileColumns,
    problems: list[Problem],
    internal_row: dict[int, int],
) -> pa.Table:
    """The rows in ``__bad`` as read, with ``_row`` and ``_reason`` first."""
    select = ", ".join(f"CAST({c.sql} AS VARCHAR)" for c in cols.columns)
    table = fetch_arrow(
        db.sql(
            f"SELECT __row, {select} FROM raw_read "  # as read, before any value map
            "WHERE __row IN (SELECT r FROM __bad) ORDER BY __row"
        )
    )
    reasons: dict[int, list[str]] = {}
    for p in problems:
        reasons.setdefault(p.row, []).append(
            str(Problem(p.reason, column=p.column, got=p.got, expected=p.expected, hint=p.hint))
        )
    shown = {internal: user for user, internal in internal_row.items()}
    user_rows = [shown[r] for r in table.column(0).to_pylist()]
    columns = {
        "_row": pa.array(user_rows, pa.int64()),
        "_reason": pa.array(["; ".join(reasons[r]) for r in user_rows], pa.string()),
    }
    for i, c in enumerate(cols.columns, start=1):
        columns[c.source] = table.column(i).cast(pa.string())
    return pa.table(columns)


def write_rejects(
    batch: SourceBatch, path, *, raw: bool = False, into_temporary: bool = False
) -> int:
    """Write ``batch.reject_rows`` to ``path`` as CSV and return how many rows it holds.

    With no rejects the file is still written (header ``_row,_reason`` only), so a
    rejects file left over from an earlier load never lingers. The file is replaced
    atomically, and text a spreadsheet would run as a formula (``=...``) gets a leading
    ``'`` unless ``raw`` (see :mod:`healthscore.core.csvout`). With ``into_temporary``,
    ``path`` is the temporary path of an :func:`~healthscore.core.files.atomic_path` the
    caller holds, renamed into place only once the load succeeded.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from healthscore.sources import read_source
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "users.csv").write_text("user_id,account_id\\nU1,A1\\nU2,\\n")
    >>> write_rejects(read_source(d / "users.csv", "users", allow_rejects=True), d / "r.csv")
    1
    >>> print((d / "r.csv").read_text().strip())
    "_row","_reason","user_id","account_id"
    3,"account_id: required value is empty","U2",
    """
    rows = batch.reject_rows
    if rows is None:
        rows = pa.table({"_row": pa.array([], pa.int64()), "_reason": pa.array([], pa.string())})
    if into_temporary:
        write_csv_into(rows, path, raw=raw)
    else:
        write_csv(rows, path, raw=raw, param="rejects")
    return rows.num_rows
