"""`POST /v1/ingest/{table}`: canonical rows as JSON, validated as `healthscore load`
validates a file, appended without re-reading the whole table; and the lists of what
the Segment routes parked (`GET /v1/ingest/rejects`, `GET /v1/ingest/pending`).

Place in the flow: a router of ``service/``, through ``sources`` (the checks of a file,
for rows in memory: :func:`healthscore.sources.rows.check_rows`) and ``store``
(:meth:`healthscore.store.Store.append`); it marks the accounts it changed for the
rescorer. :func:`read_json` (the body, size-capped while it is read, gzip accepted) is
shared with :mod:`healthscore.service.segment`.

The body is ``{"rows": [{column: value, ...}, ...]}``: a row is a JSON object of the
table's columns (``healthscore load``'s JSON lines, one object per row); a batch is
validated whole and written whole or not at all. Invalid rows get 400 with one problem
per bad value, ``row`` being the row's index in ``rows`` (from 0).
"""

from __future__ import annotations

import zlib

from fastapi import APIRouter, HTTPException, Query, Request
from starlette.concurrency import run_in_threadpool

from healthscore.core.tables import TABLES
from healthscore.errors import HealthscoreError
from healthscore.service import auth, parked, text
from healthscore.service.bodies import TWICE, Twice, loads
from healthscore.service.settings import Settings
from healthscore.store import ColumnTypeError

router = APIRouter(prefix="/v1", tags=["ingest"])

#: the input tables a client may write (scores are computed, not sent)
INPUT_TABLES = tuple(t for t in TABLES if t != "scores")


class IngestError(HealthscoreError):
    """A request the ingest routes refuse as a whole (status on the exception)."""

    def __init__(self, message: str, status: int = 400, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.status = status


async def read_body(request: Request, settings: Settings) -> bytes:
    """The request body, decompressed when ``Content-Encoding: gzip`` (every member of it,
    as ``gzip -d`` reads concatenated files; bytes after the last that are not gzip are
    an error); 413 as soon as it passes ``settings.max_body_bytes`` (as sent, or once
    decompressed), without reading further: a gzip bomb stops at the limit, not at the
    end of its expansion."""
    limit = settings.max_body_bytes
    too_big = IngestError(
        f"the request body is larger than {limit:,} bytes",
        status=413,
        hint="send fewer rows a request",
    )
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_big
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip"):
        raise IngestError(f"Content-Encoding {encoding!r} is not accepted (gzip is)", status=415)
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS) if encoding == "gzip" else None
    parts, sent, size = [], 0, 0
    async for chunk in request.stream():
        sent += len(chunk)
        if sent > limit:
            raise too_big
        if inflate is None:
            parts.append(chunk)
            size = sent
            continue
        try:
            data = chunk
            while data:
                if inflate.eof:  # the next member (gzip members may follow one another)
                    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
                out = inflate.decompress(data, limit + 1 - size)
                parts.append(out)
                size += len(out)
                if size > limit:
                    raise too_big
                # past a member's end: the bytes after it, read as the next member (bytes
                # that are not one are invalid gzip, never silently dropped)
                data = inflate.unused_data if inflate.eof else inflate.unconsumed_tail
        except zlib.error as e:
            raise IngestError(f"the body is not valid gzip: {e}") from None
    if inflate is not None and not inflate.eof and sent:
        raise IngestError("the gzip body ends before its end")
    return b"".join(parts)


async def read_json(request: Request, settings: Settings):
    """The body as JSON (400 saying why when it is not: see
    :func:`healthscore.service.bodies.loads`; an object naming a key twice is read as a
    :class:`~healthscore.service.bodies.Twice`, which the caller refuses where it is)."""
    return loads(await read_body(request, settings))


def _table(table: str) -> str:
    if table == "scores":
        raise IngestError(
            "scores are computed by healthscore, not ingested",
            status=404,
            hint="tables: " + ", ".join(INPUT_TABLES),
        )
    if table not in INPUT_TABLES:
        raise IngestError(
            f"unknown table {table!r}", status=404, hint="tables: " + ", ".join(INPUT_TABLES)
        )
    return table


def json_body(schema: dict, example: dict) -> dict:
    """The OpenAPI description of a JSON body a route reads itself (size-capped)."""
    content = {"application/json": {"schema": schema, "example": example}}
    return {"requestBody": {"required": True, "content": content}}


ROWS_BODY = json_body(
    {
        "type": "object",
        "required": ["rows"],
        "properties": {
            "rows": {
                "type": "array",
                "items": {"type": "object", "additionalProperties": True},
                "description": "canonical rows of the table, as one JSON lines row each",
            }
        },
    },
    {"rows": [{"event_id": "e1", "account_id": "ACC-00102", "event": "login",
               "ts": "2025-06-30T09:15:00Z"}]},
)  # fmt: skip


@router.post(
    "/ingest/{table}",
    dependencies=[auth.require("ingest", table_param="table")],
    openapi_extra=ROWS_BODY,
)
async def ingest(table: str, request: Request) -> dict:
    """Insert or update rows of an input table, by primary key.

    Body: ``{"rows": [{column: value, ...}, ...]}`` (at most ``max_batch_rows`` rows;
    ``Content-Encoding: gzip`` accepted). The rows are checked as ``healthscore load``
    checks a file; any invalid row refuses the whole batch (400, ``problems`` naming
    each row by its index and the column), and nothing is written. A re-sent row is
    ``unchanged``. Rows naming an account the store does not hold are written, and
    counted in ``unknown_accounts``, as ``healthscore load`` does."""
    state = request.app.state.service
    settings: Settings = state.settings
    _table(table)
    body = await read_json(request, settings)
    if not isinstance(body, dict) or not isinstance(body.get("rows"), list):
        raise IngestError(
            'the body must be a JSON object {"rows": [...]}',
            hint='e.g. {"rows": [{"event_id": "e1", "account_id": "A1", "ts": "2025-06-30"}]}',
        )
    if isinstance(body, Twice):
        raise IngestError(f"the body's {body.names[0]!r} is {TWICE}, nothing written")
    others = sorted(set(body) - {"rows"})
    if others:  # a field of another client's API (e.g. an upsert mode) is not ignored
        raise IngestError(
            f"the body holds {', '.join(map(repr, others))}, which this route does not "
            'take (only "rows"), nothing written',
            hint='send {"rows": [...]}; each row is an object of the table\'s columns',
        )
    rows = body["rows"]
    if len(rows) > settings.max_batch_rows:
        raise IngestError(
            f"{len(rows):,} rows in one batch; at most {settings.max_batch_rows:,}",
            status=413,
            hint="split the rows into several requests",
        )
    return await run_in_threadpool(_write, state, table, rows)


def _write(state, table: str, rows: list) -> dict:
    from healthscore.errors import Problem, SourceError
    from healthscore.sources.rows import check_rows

    if not rows:
        return {"table": table, "inserted": 0, "updated": 0, "unchanged": 0,
                "unknown_accounts": 0, "accounts_changed": 0}  # fmt: skip
    as_text = _few_extra_columns(state, table, rows)
    # a row naming a column twice (as `healthscore load` refuses it), and text no store
    # (nor Arrow) can take
    twice = [
        Problem(TWICE, row=i, column=str(name))
        for i, r in enumerate(rows)
        if isinstance(r, Twice)
        for name in r.names
    ]
    unstorable = sorted(twice + text.row_problems(rows), key=lambda p: p.row)
    if unstorable:
        n = len({p.row for p in unstorable})
        raise SourceError.collect(
            unstorable,
            f"{table} batch: {n} invalid row{'s' if n != 1 else ''}, nothing written",
        )
    with check_rows(rows, table, text_columns=as_text) as batch:
        data = batch.data.read_all()
        try:
            with state.ingest_access() as store:  # behind at most one other batch
                result = store.append(table, data, columns=batch.supplied)
        except ColumnTypeError as e:
            raise _by_row(e, table, rows) from None
    state.touched(result.accounts)
    out = {
        "table": table,
        "inserted": result.inserted,
        "updated": result.updated,
        "unchanged": result.unchanged,
        "unknown_accounts": result.unknown_accounts,
        "accounts_changed": len(result.accounts),
    }
    if result.unknown_accounts:
        out["note"] = (
            f"{result.unknown_accounts} rows name an account not in the accounts table; they "
            "are stored (as `healthscore load` does) and count once the account is sent"
        )
    return out


def _by_row(e, table: str, rows: list):
    """A :class:`~healthscore.store.ColumnTypeError` of a batch as its invalid rows, each
    named by its index in ``rows`` (found by its key; a key derived by the reader, by
    its place among the rows, which follow the batch's order)."""
    from healthscore.errors import Problem, SourceError

    pk = TABLES[table].primary_key
    where: dict[str, int] = {}
    for i, r in enumerate(rows):
        key = r.get(pk)
        if isinstance(key, str | int) and not isinstance(key, bool):
            where.setdefault(str(key).strip(), i)
    problems = []
    for (position, key), p in zip(e.misfits, e.problems, strict=True):
        row = where.get(str(key), position)
        reason = f"does not convert to the column's {e.expected} without loss"
        problems.append(Problem(reason, row=row, column=p.column, got=p.got, expected=p.expected))
    n = len({p.row for p in problems})
    return SourceError.collect(
        sorted(problems, key=lambda p: p.row),
        f"{table} batch: {n} invalid row{'s' if n != 1 else ''}: column {e.column!r} holds "
        f"{e.expected} values, nothing written",
    )


def _few_extra_columns(state, table: str, rows: list) -> set[str]:
    """The extra columns ``table`` holds as text, where the batch has extra columns
    (read as text: :func:`~healthscore.sources.check_rows`'s ``text_columns``).

    400 when the batch adds columns to ``table`` (names it does not hold yet) and would
    make it hold more than ``max_extra_columns`` beyond its canonical ones: each new name
    is a column added to the table, and a batch naming 3,000 held the store for minutes;
    or adds one whose name is longer than a column's may be
    (:data:`~healthscore.store.MAX_COLUMN_NAME`), refused here before any row is read.
    Names are compared whatever their case, as the store compares them."""
    from healthscore.store import column_name_problem, text_columns

    limit = state.settings.max_extra_columns
    own = TABLES[table].columns.keys()
    names = {k for r in rows if isinstance(r, dict) for k in r if isinstance(k, str)}
    extra = {n.casefold() for n in names} - set(own)
    if not extra:
        return set()
    with state.store_access() as store:
        held = store.columns(table)  # one catalog read: the names and their types
    stored = {c.casefold() for c in held} - set(own)
    as_text = text_columns(held) - set(own)
    new = extra - stored
    for name in sorted(n for n in names if n.casefold() in new):
        too_long = column_name_problem(name)
        if too_long:
            raise IngestError(
                f"{table} batch: {too_long}, nothing written",
                hint="send it under a shorter key; extra columns are kept as columns of the table",
            )
    if new and len(stored | new) > limit:
        raise IngestError(
            f"{table} batch: {len(new):,} new columns would make {len(stored | new):,} "
            f"beyond the table's own; at most {limit:,}, nothing written",
            hint="send the table's columns (docs/data.md) and a few extra ones; "
            "extra columns are kept as columns of the table",
        )
    return as_text


#: the largest offset a store can bind (a 64-bit integer); past it the query failed
_OFFSET = Query(0, ge=0, le=2**63 - 1)


@router.get("/ingest/rejects", dependencies=[auth.require("read")])
def rejects(request: Request, limit: int = Query(100, ge=1), offset: int = _OFFSET) -> dict:
    """Messages the Segment routes refused, newest first, with the reason."""
    return _parked(request, parked.REJECTS, limit, offset)


@router.get("/ingest/pending", dependencies=[auth.require("read")])
def pending(request: Request, limit: int = Query(100, ge=1), offset: int = _OFFSET) -> dict:
    """Segment messages waiting for a `group` call to link their user to an account."""
    return _parked(request, parked.PENDING, limit, offset)


def _parked(request: Request, table: str, limit: int, offset: int) -> dict:
    state = request.app.state.service
    if limit > state.settings.max_page:  # as GET /v1/accounts says it
        raise HTTPException(
            422, f"`limit` {limit} is more than a page holds ({state.settings.max_page})"
        )
    with state.store_access() as store:
        total, items = parked.listing(store, table, limit, offset)
    return {"total": total, "items": items}
