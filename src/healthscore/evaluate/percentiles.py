"""Fit percentile normalisation once, at a named date, and store it in the model file.

Place in the flow: after ``metrics`` (it reads raw metric values as of the fit date
through the store) and before scoring with the fitted model. Percentile normalisation
is never live: the breakpoints are fitted once for a model version and written into
the model as piecewise points per segment, so a score never moves because a peer's
data moved, and one account can be rescored alone.

For each scored metric with ``percentile:``, the raw values of the accounts in the
population at the fit date are cut at the configured quantiles (per segment when
``by_segment``, and always for all accounts under ``'*'``). Quantile q scores 100·q
(``better: higher``) or 100·(1 − q) (``better: lower``); where several quantiles fall on
the same value (e.g. many zeros) the value gets their average score.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np

from healthscore.core.modelfile import date_text, edit_model_text, flow_list, save_model_text
from healthscore.engine.inputs import empty_tables, tables_needed
from healthscore.engine.metrics import MetricBuilder
from healthscore.errors import ScoringError
from healthscore.model import HEALTH, Model, load_model_text
from healthscore.store import Store


def fit_points(values: np.ndarray, quantiles: list[float], better: str) -> list[list[float]]:
    """Piecewise points [[raw, score], ...] for one group of raw values.

    >>> fit_points(np.array([0, 0, 0, 5, 10]), [0, 0.5, 1], "higher")
    [[0.0, 25.0], [10.0, 100.0]]
    """
    values = values[~np.isnan(values)]
    if values.size == 0:
        return []
    qs = sorted(quantiles)
    xs = np.quantile(values, qs, method="linear")
    by_x: dict[float, list[float]] = {}
    for q, x in zip(qs, xs, strict=True):
        score = 100.0 * q if better == "higher" else 100.0 * (1.0 - q)
        by_x.setdefault(round(float(x), 12), []).append(score)
    return [[x, round(sum(s) / len(s), 9)] for x, s in sorted(by_x.items())]


def fit_percentiles(
    store: Store, model: Model, as_of: datetime
) -> dict[tuple[str, str, str], dict]:
    """Fitted points for every percentile metric of every scorecard:
    (scorecard, pillar, metric) -> {segment: points}. Each scorecard fits within its own
    population and segments."""
    out = {}
    for card in model.scorecard_names():
        view = model.scorecard(card)
        for (p, m), points in _fit_view(store, view, as_of).items():
            out[(card, p, m)] = points
    return out


def _fit_view(store: Store, model: Model, as_of: datetime) -> dict[tuple[str, str], dict]:
    targets = [(p, m, u) for p, m, u in model.scored_metrics() if u.percentile is not None]
    if not targets:
        return {}
    # an empty table's metrics have no values: fitting them on zeros would be wrong
    tables = store.tables(tables_needed(model))
    raw = MetricBuilder(model, tables, empty_tables(store, model)).build(as_of)
    data = store.execute(raw.select("segment", *[m for _, m, _ in targets])).to_pydict()
    if not data["segment"]:
        raise ScoringError(
            f"no account is in the {model.scorecard_name} scorecard as of {as_of:%Y-%m-%d}; "
            "nothing to fit"
        )
    segments = np.array([s if s is not None else "" for s in data["segment"]], dtype=object)
    out = {}
    for p, m, use in targets:
        values = np.array([np.nan if v is None else float(v) for v in data[m]], dtype=float)
        spec = use.percentile
        points = {"*": fit_points(values, spec.quantiles, spec.better)}
        if spec.by_segment:
            for seg in sorted(set(segments) - {""}):
                pts = fit_points(values[segments == seg], spec.quantiles, spec.better)
                if pts:
                    points[seg] = pts
        if not points["*"]:
            raise ScoringError(f"metric {m!r} has no values as of {as_of:%Y-%m-%d}; cannot fit")
        out[(p, m)] = points
    return out


def write_fitted_model(
    path: str | Path, fitted: dict[tuple[str, str, str], dict], as_of: datetime, out: str | Path
) -> Model:
    """Write the model at ``path`` with fitted points into ``out``, keeping comments."""

    def edit(doc) -> None:
        for (card, pillar, metric), points in fitted.items():
            pillars = doc["pillars"] if card == HEALTH else doc["scorecards"][card]["pillars"]
            spec = pillars[pillar]["metrics"][metric]["percentile"]
            spec["fitted_at"] = date_text(as_of)
            spec["points"] = {seg: flow_list(pts) for seg, pts in points.items()}

    text = edit_model_text(Path(path).read_text(encoding="utf-8"), edit)
    return save_model_text(text, out, load_model_text)
