"""The Python API the CLI and the service are thin layers over.

Place in the flow: the facade, above every capability. One function per capability;
each takes a store and a model (or paths) and returns a result object or an Arrow
table, and prints nothing. The logic lives below: the engine scores, evaluate judges,
views render.
"""

from __future__ import annotations

from pathlib import Path

from healthscore.core.time import parse_as_of
from healthscore.demo.run import DemoResult, run_demo
from healthscore.engine.asof import backfill as history
from healthscore.engine.asof import explain, explain_change, score, score_expr
from healthscore.engine.inputs import check_scorable, tables_needed
from healthscore.engine.trends import rapid_declines
from healthscore.errors import ScoringError
from healthscore.model import Model, load_model
from healthscore.sources.load import load_file
from healthscore.store import Store

__all__ = [
    "DemoResult",
    "check_scorable",
    "explain",
    "explain_change",
    "fit_percentiles",
    "history",
    "load_file",
    "parse_as_of",
    "rapid_declines",
    "run_demo",
    "score",
    "score_expr",
    "tables_needed",
]


def fit_percentiles(
    store: Store, model_path: str | Path, as_of=None, out: str | Path | None = None
) -> Model:
    """Fit the model's percentile normalisations as of a date; write them into the file.

    Writes to ``out`` (default: the model file itself) and returns the fitted model,
    whose version differs from the unfitted one.
    """
    from healthscore.evaluate.percentiles import fit_percentiles as fit  # noqa: I001
    from healthscore.evaluate.percentiles import write_fitted_model

    d = parse_as_of(as_of)
    model = load_model(model_path)
    fitted = fit(store, model, d)
    if not fitted:
        raise ScoringError(
            f"{model_path}: no scored metric uses `percentile:` normalisation; nothing to fit"
        )
    return write_fitted_model(model_path, fitted, d, out or model_path)
