"""What a model needs from the store before it can score: its tables, its declared
columns with usable types, and its fitted percentiles.

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
