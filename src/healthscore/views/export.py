"""Results as files: JSON, CSV and Parquet, to a file (atomically) or to stdout.

Place in the flow: ``views``, beside :mod:`healthscore.views.terminal` (the tables a
person reads); the CLI's ``--format``/``--out`` end here. Files are written through
:mod:`healthscore.core.files` (a temporary file renamed into place, so a full disk leaves
the old file or none) and CSV through :mod:`healthscore.core.csvout` (text cells a
spreadsheet would run as formulas are neutralized unless ``raw``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from healthscore.core.files import atomic_write, write_text_atomic

if TYPE_CHECKING:
    import pyarrow as pa


def json_text(data: Any) -> str:
    """``data`` as the JSON the commands print (dates as ISO text)."""
    return json.dumps(data, indent=1, default=str) + "\n"


def write_text(text: str, out: Path | None, *, param: str = "out") -> None:
    """``text`` to the file ``out`` (atomically), or to stdout when None."""
    if out is None:
        sys.stdout.write(text)
    else:
        write_text_atomic(out, text, param=param, newline=None)


def write_rows(
    rows: pa.Table, fmt: str, out: Path | None, *, raw: bool = False, param: str = "out"
) -> None:
    """One row per account as ``csv`` (to ``out`` or stdout) or ``parquet`` (to ``out``)."""
    if fmt == "csv":
        if out is None:
            from healthscore.core.csvout import csv_bytes  # pyarrow: only when writing CSV

            sys.stdout.write(csv_bytes(rows, raw=raw).decode())
        else:
            from healthscore.core.csvout import write_csv

            write_csv(rows, out, raw=raw, param=param)
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        if out is None:
            raise ValueError("parquet needs a file")
        # a file object, not a name: on an error pyarrow removes the file it was named,
        # which for a device or a pipe written in place (/dev/full) is the device itself
        with atomic_write(out, "wb", param=param) as f:
            pq.write_table(rows, f)
    else:
        raise ValueError(f"not a rows format: {fmt}")
