"""sources: file -> validated canonical rows; the store writes them.

Place in the flow: the first stage. :func:`read_source` reads one data file (CSV/TSV,
Parquet or JSON lines) into one canonical table of :mod:`healthscore.core.tables`: it renames
columns (``mapping``), coerces every canonical column to its type, checks
each row, and returns a :class:`SourceBatch` holding the valid rows as a ``pyarrow.Table``
plus, when asked for, the invalid ones with their reasons; :func:`stream_source` gives the
valid rows of a file of any size as a stream of record batches instead. Nothing here
writes anywhere except :func:`write_rejects`; ``store`` loads the batch.

The work is done by DuckDB in a scratch in-memory connection the store opens
(:mod:`healthscore.store.scratch`), one set-based query per step, so a 10-million-row
Parquet file of events is read in seconds. Python only touches the rows already found
invalid, to word their messages. One module per step: :mod:`~healthscore.sources.formats`
(which reader, row numbers), :mod:`~healthscore.sources.columns` (names),
:mod:`~healthscore.sources.recode` (value maps), :mod:`~healthscore.sources.coerce`
(types, dates), :mod:`~healthscore.sources.checks` (required columns and values, keys,
duplicates), :mod:`~healthscore.sources.rejects`, composed in
:mod:`~healthscore.sources.read`; :mod:`~healthscore.sources.spec` reads load spec files
and :mod:`~healthscore.sources.load` puts a file into the store.

Rules, in the order a row meets them:

- whitespace around values is stripped and an empty value is NULL, for every type;
- each canonical column is coerced: text, whole numbers, numbers (currency symbols and
  codes dropped, digits grouped as ``number_format`` says; without it ``1,234.5`` is read
  and ``1,234`` alone refused), booleans (``true/false, t/f, yes/no, y/n, 1/0``) and UTC
  timestamps (ISO 8601 dates and times, offsets converted to UTC, ``2024/03/01``, or the
  ``date_format`` given); native Parquet timestamps and dates pass through;
- required columns must have a value; enum columns (``surveys.kind``...) must hold one
  of their values, compared and stored lower-cased; an interval's end may not be before
  its start; a primary key may appear once in a file (the later row is the invalid one);
- negative quantities and amounts are valid (credits, refunds).

A source column may feed several canonical columns (``mapping={"Customer ID":
["account_id", "outcome_id"]}``), and its values may be recoded before they are coerced
(``values`` in a load spec file, see :func:`read_spec`): a value recoded to nothing in
the primary key or a required column skips its row, which is counted, not rejected.

An event table's file without its id (``event_id``, ``outcome_id``...) gets one derived
from the row: the md5 hex of the values that identify the event as text
(:data:`~healthscore.core.tables.DERIVED_KEY_COLUMNS`, NULL as empty) and its occurrence
number among identical rows, joined by ``\\x1f``; ``key`` names the columns instead.
Re-reading a file gives the same ids, and exact duplicate rows stay distinct events.

Rows are numbered as a user finds them: CSV rows as in a spreadsheet (the header is
row 1, the first data row is 2; blank lines count), JSON lines by line number, Parquet
rows from 1. An empty file, or a CSV without a header on line 1, is an error.

Examples
--------
>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "accounts.csv").write_text(
...     "account_id,name,signup_date,seats\\n"
...     "A1, Acme ,2024-03-01,12\\n"
...     "A2,Globex,2024-03-01T12:00:00+02:00,3\\n"
... )
>>> batch = read_source(d / "accounts.csv", "accounts", {"signup_date": "created_at"})
>>> batch.data.column_names
['account_id', 'name', 'segment', 'csm', 'created_at', 'seats']
>>> batch.data.column("name").to_pylist()
['Acme', 'Globex']
>>> [str(t) for t in batch.data.column("created_at").to_pylist()]
['2024-03-01 00:00:00', '2024-03-01 10:00:00']
>>> _ = (d / "tickets.csv").write_text(
...     "ticket_id,account_id,opened_at,closed_at\\n"
...     "T1,A1,2024-03-01,2024-02-01\\n"
... )
>>> try:
...     read_source(d / "tickets.csv", "tickets")
... except SourceError as e:
...     print(str(e).replace(str(d) + "/", ""))  # doctest: +NORMALIZE_WHITESPACE
tickets.csv: 1 invalid row, nothing loaded:
  tickets.csv:2: closed_at: is before opened_at
  (got '2024-02-01', expected at or after opened_at '2024-03-01')
"""

from healthscore.errors import SourceError
from healthscore.sources.coerce import ARROW_TYPES, DATE_FORMAT_HINT, EXPECTED
from healthscore.sources.columns import MAP_HINT
from healthscore.sources.formats import EXTENSIONS
from healthscore.sources.read import SourceBatch, read_source, stream_source
from healthscore.sources.rejects import write_rejects
from healthscore.sources.spec import LoadSpec, parse_constants, parse_key, parse_mapping, read_spec

__all__ = [
    "ARROW_TYPES",
    "DATE_FORMAT_HINT",
    "EXPECTED",
    "EXTENSIONS",
    "MAP_HINT",
    "LoadSpec",
    "SourceBatch",
    "SourceError",
    "parse_constants",
    "parse_key",
    "parse_mapping",
    "read_source",
    "read_spec",
    "stream_source",
    "write_rejects",
]
