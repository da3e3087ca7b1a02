"""What a model needs from the store before it can score: its tables, its declared
columns with usable types, and its fitted percentiles; and which of its tables hold no
row at all, so that their metrics count as missing data rather than as real zeros.

Place in the flow: the first step of the engine, shared by one-date scoring
(:mod:`healthscore.engine.asof`) and many-date scoring (:mod:`healthscore.engine.timeline`).
"""

from __future__ import annotations

from healthscore.errors import ScoringError
from healthscore.model import Model
from healthscore.store import Store


def tables_needed(model: Model) -> list[str]:
    """The store tables a model's expression reads."""
    names = [n for n in model.tables_used() if n != "subscriptions"] + ["subscriptions"]
    texts = [m.formula or "" for m in model.spec.metrics.values()]
    texts += [model.spec.population or ""] + [r.when for r in model.spec.rules.values()]
    if any("has_flag" in t for t in texts):
        names.append("flags")
    return names


def empty_tables(store: Store, model: Model) -> list[str]:
    """The tables the model's metrics read that hold no row at all (never loaded).

    An account with no tickets in a table that has tickets has a real zero; a tickets
    table with no rows says nothing about anyone, so its metrics take the missing-data
    policy (:func:`metrics_without_evidence`). Tables no metric reads (subscriptions
    for the population only, flags for ``has_flag``) may well be empty: not listed.
    """
    read = [m.from_ for m in model.spec.metrics.values() if m.aggregate]
    return store.empty_tables([t for t in tables_needed(model) if t in read])


def metrics_without_evidence(model: Model, empty) -> dict[str, str]:
    """Metric -> the empty table it rests on: aggregates over an empty table, and the
    formulas that use such a metric (in dependency order)."""
    from healthscore import expressions as ex  # sqlglot and Ibis: on first use

    empty = set(empty)
    out = {n: m.from_ for n, m in model.spec.metrics.items() if m.aggregate and m.from_ in empty}
    for name in model.formula_order():
        used = [d for _, d in ex.names_in(model.spec.metrics[name].formula)]
        hit = next((out[d] for d in used if d in out), None)
        if hit is not None:
            out[name] = hit
    return out


def empty_tables_note(model: Model, empty) -> str | None:
    """The warning that names the empty tables and the metrics that rest on them."""
    if not empty:
        return None
    blind = metrics_without_evidence(model, empty)
    scored = {m for _, m, _ in model.scored_metrics()}
    shown = [m for m in blind if m in scored] or list(blind)
    return (
        f"no rows loaded in {', '.join(empty)}: an empty table is no evidence, so "
        f"{', '.join(shown)} count as missing data (their missing-data policy applies and "
        "coverage shows it); load the table to score from it"
    )


def check_scorable(store: Store, model: Model) -> None:
    """Raise when the model cannot score this store: unfitted percentiles, missing columns."""
    unfitted = model.unfitted_percentiles()
    if unfitted:
        raise ScoringError(
            f"percentile normalisation of {', '.join(unfitted)} is not fitted yet",
            hint="run `healthscore model fit-percentiles --as-of <date>` once",
        )
    _check_declared_columns(store, model)


def _check_declared_columns(store: Store, model: Model) -> None:
    """Every extra column the model declares must be in the store, with a usable type."""
    problems = []
    for table, cols in model.spec.columns.items():
        have = store.columns(table)
        for col, typ in cols.items():
            if col not in have:
                problems.append(
                    f"{table}.{col} is declared in the model but the store has no such column "
                    "(load a file that has it)"
                )
            elif typ == "timestamp" and not have[col].startswith("timestamp"):
                problems.append(f"{table}.{col} is declared timestamp but stored as {have[col]}")
            elif typ == "string" and have[col] == "boolean":
                # a `map:` of Yes/No would then match nothing: every value would be missing
                problems.append(
                    f"{table}.{col} is declared string but stored as boolean (the file's "
                    "yes/no values were read as true/false): declare it boolean and "
                    "normalise it with bad: 0, good: 1"
                )
    if problems:
        raise ScoringError(f"{model.file}: " + "; ".join(problems))
