"""Value maps: recode a column's values before they are coerced; skip rows sent to nothing.

Place in the flow: between reading the raw rows and coercing them in
:func:`~healthscore.sources.read_source`. A value map (``values``, from a load spec's
``values:``) replaces a column's stripped text exactly (``Churned`` → ``churned``); other
values pass through. A value sent to nothing (None) in a column that lands in the primary
key or a required column skips its row: counted, not rejected. A key no row holds is
reported as a warning, with values the column does hold.
"""

from __future__ import annotations

from healthscore.core.tables import DERIVABLE_KEYS, Table
from healthscore.sources.columns import FileColumns
from healthscore.sources.sql import SPACE, sql_literal, sql_text
from healthscore.store.scratch import ScratchConnection


def recode(db: ScratchConnection, spec: Table, cols: FileColumns) -> tuple[int, str | None, list]:
    """View ``raw_file``: the rows as read, value maps applied; rows sent to nothing skipped.

    A row is skipped when a value is mapped to nothing (NULL) in a column that lands in
    the primary key or a required column: it is not loaded, and not an invalid row.
    Filtering here keeps the numbers (``__row``) of the other rows as they are in the
    file. Returns how many rows are skipped, why, and warnings about keys no row holds.
    """
    needed = set(spec.required)
    if spec.name not in DERIVABLE_KEYS and not cols.key:
        needed.add(spec.primary_key)
    replace, skips = [], []
    for c in cols.columns:
        vmap = cols.values.get(c.source)
        if vmap is None:
            continue
        text = sql_text(c.sql)
        whens = " ".join(
            f"WHEN {sql_literal(k)} THEN {'NULL' if v is None else sql_literal(v)}"
            for k, v in vmap.items()
        )
        replace.append(f"CASE {text} {whens} ELSE CAST({c.sql} AS VARCHAR) END AS {c.sql}")
        lands = {c.name} | {a.name for a in cols.aliases if a.index == c.index}
        nothing = [k for k, v in vmap.items() if v is None or not str(v).strip(SPACE)]
        if lands & needed and nothing:
            keys = ", ".join(sql_literal(k) for k in nothing)
            skips.append((c, nothing, f"{text} IN ({keys})"))
    if not replace:
        db.execute("CREATE VIEW raw_file AS SELECT * FROM raw_read")
        return 0, None, []
    warnings = unmatched_keys(db, cols)
    where = ""
    skipped, reason = 0, None
    if skips:
        any_skip = " OR ".join(f"coalesce({cond}, false)" for _, _, cond in skips)
        where = f"WHERE NOT ({any_skip})"
        found = ", ".join(
            f"list(DISTINCT {sql_text(c.sql)}) FILTER (WHERE {cond})" for c, _, cond in skips
        )
        skipped, *seen = db.execute(
            f"SELECT count(*) FILTER (WHERE {any_skip}), {found} FROM raw_read"
        ).fetchone()
        parts = [
            f"{c.source} maps to nothing ({', '.join(k for k in nothing if k in hit)})"
            for (c, nothing, _), hit in zip(skips, seen, strict=True)
            if hit
        ]
        reason = " or ".join(parts) or None
    db.execute(
        f"CREATE VIEW raw_file AS SELECT * REPLACE ({', '.join(replace)}) FROM raw_read {where}"
    )
    return skipped, reason, warnings


def unmatched_keys(db: ScratchConnection, cols: FileColumns) -> list[str]:
    """A value-map key that no row holds (a typo, ``007`` read by YAML as 7, a number
    column holding ``1.0``) recodes nothing: say so, with values the column does hold."""
    warnings = []
    for c in cols.columns:
        vmap = cols.values.get(c.source)
        if vmap is None:
            continue
        text = sql_text(c.sql)
        keys = ", ".join(sql_literal(k) for k in vmap)
        hit, sample = db.execute(
            f"SELECT list(DISTINCT {text}) FILTER (WHERE {text} IN ({keys})), "
            f"list(DISTINCT {text}) FILTER (WHERE {text} IS NOT NULL) FROM raw_read"
        ).fetchone()
        missing = [k for k in vmap if k not in set(hit or [])]
        if missing:
            held = sorted(sample or [])
            shown = ", ".join(repr(v) for v in held[:10]) + (" ..." if len(held) > 10 else "")
            warnings.append(
                f"{cols.file}: values of {c.source!r}: "
                f"{', '.join(repr(k) for k in missing)} match no value in the file; "
                f"it holds {shown or 'no values'} (quote keys in the spec to keep "
                "their spelling)"
            )
    return warnings
