"""Load one file into the store: read and validate it, put rejects aside, write it.

Place in the flow: the top of ``sources``; it reads with
:func:`~healthscore.sources.read.stream_source` and writes through the store, the only
holder of a connection.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

from healthscore.core.files import atomic_path
from healthscore.core.tables import get_table
from healthscore.errors import StoreError
from healthscore.sources.read import Progress, stream_source
from healthscore.sources.rejects import write_rejects
from healthscore.store import LoadResult, Store, load_memory_limit


def load_file(
    store: Store,
    table: str,
    path: str | Path,
    mapping: dict[str, str | list[str]] | None = None,
    *,
    date_format: str | None = None,
    number_format: str | None = None,
    key: list[str] | None = None,
    rejects: str | Path | None = None,
    account_from: str | None = None,
    constants: dict[str, str] | None = None,
    values: dict[str, dict[str, str | None]] | None = None,
    progress: Progress | None = None,
    domains: dict[str, tuple[float | None, float | None]] | None = None,
    raw: bool = False,
) -> LoadResult:
    """Read, validate and load one file; with ``rejects`` invalid rows go to that CSV
    (formula-like text neutralized for spreadsheets unless ``raw``).

    ``mapping`` renames columns (a list of names feeds several columns from one).
    ``account_from`` names a canonical table (e.g. ``subscriptions``) whose primary key
    the file carries instead of ``account_id``; the account is looked up in the store.
    ``constants`` gives a column the file lacks one value on every row. ``values``
    recodes a source column's values (``{column: {text: new text or None}}``); rows whose
    key or a required value is recoded to None are skipped and counted. ``number_format``
    says how numbers are written, ``key`` names the columns a missing primary key is
    built from. ``domains``
    (``{column: (min, max)}``) bounds a column's values. See
    :func:`healthscore.sources.read_source`; :func:`healthscore.sources.read_spec` reads
    all of these from a load spec file.

    Rows whose key is stored already keep the stored values of the columns this file
    does not supply, so files with different columns about the same rows add up.

    A file of any size loads in bounded memory: its valid rows stream from the reading
    into the store batch by batch, and the checks on them (one row per key, accounts
    not known yet) and the comparison with the stored rows run in the store, as SQL.
    ``progress(step, fraction)`` hears of each step (from another thread while a first
    load writes its rows: :meth:`~healthscore.store.Store.load`).
    """

    lookup = None
    if account_from:
        ref_key = get_table(account_from).primary_key
        ref = store.table(account_from).select(ref_key, "account_id").to_pyarrow().to_pydict()
        if not ref[ref_key]:
            raise StoreError(
                f"`account_from` {account_from}: the store's {account_from} table is empty",
                hint=f"load {account_from} first",
            )
        lookup = (ref_key, dict(zip(ref[ref_key], ref["account_id"], strict=True)))
    with (
        stream_source(
            path,
            table,
            mapping,
            date_format=date_format,
            number_format=number_format,
            key=key,
            allow_rejects=rejects is not None,
            account_lookup=lookup,
            constants=constants,
            values=values,
            domains=domains,
            progress=progress,
            memory_limit=load_memory_limit(),
            text_columns=store.text_columns(table),
        ) as batch,
        ExitStack() as stack,
    ):
        n_rejected = 0
        if rejects is not None:  # written even when empty, so an old rejects file never lingers
            # ... and renamed into place only once the rows are in: a failed load writes
            # nothing, and an old rejects file stays as it was
            tmp = stack.enter_context(atomic_path(rejects, param="rejects"))
            n_rejected = write_rejects(batch, tmp, raw=raw, into_temporary=True)
        result = store.load(
            table,
            batch.data,
            rejected=n_rejected,
            skipped=batch.skipped,
            columns=batch.supplied,
            progress=progress,
            rows=batch.valid,
            unique_keys=batch.unique_keys,
        )
    result.skip_reason = batch.skip_reason
    result.warnings = list(batch.warnings)
    return result
