"""The backtest report: one self-contained HTML file with the backtest's charts and words.

Place in the flow: in ``views``, beside :mod:`healthscore.views.report`. It draws what
:func:`healthscore.evaluate.backtest.backtest` measured (and, optionally, the learned
challenger of :mod:`healthscore.evaluate.challenger`) for the churn outcome, with the
data of :mod:`healthscore.evaluate.diagnostics`, the figures of
:mod:`healthscore.views.charts` and the template ``templates/backtest_report.html``:

- the figures table per outcome (with ``--vs``: both models and the paired difference)
  and the notes in words (e.g. "does not predict churned better than chance");
- ROC and precision-recall curves of each model and of the challenger (the challenger
  on its held-out dates, beside the weighted model on the same observations);
- lift per score decile, riskiest first;
- a calibration curve: observed churn rate per bin of the model's calibrated
  probability when it has a ``probability:`` section (and the challenger's, which is a
  probability too); else the observed churn rate per score bin;
- score distributions of the observations that churned within the horizon and of
  those that did not;
- with two models, the weight changes old -> new: effective metric weights (overall and
  per segment), pillar weights, anchors and bands, as a chart and tables.

Metrics read as their labels (``Model.metric_label``, as in the terminal and the portfolio
report), each with its key beside it for finding it in the model file; bands read as the
scorecard names them (``Model.band_name``).

plotly.js is embedded once (the file opens offline and fetches nothing); everything from
the data is escaped once for HTML by the templates and once for Plotly in the charts.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from healthscore.evaluate import backtest as bt

# the data behind the page lives in evaluate.diagnostics; importable from here as before
from healthscore.evaluate.diagnostics import WeightChange, report_observations, weight_changes
from healthscore.model import Model
from healthscore.views.format import date_text, number, weight_text
from healthscore.views.report import page_environment, page_globals, write_page

__all__ = [
    "BacktestReportResult",
    "WeightChange",
    "render_backtest_html",
    "report_observations",
    "weight_changes",
    "write_backtest_report",
]

FIGURES = [
    ("recall: flagged at event - lead", "recall"),
    ("opposite band at event - lead", "opposite_share"),
    ("false-positive rate", "false_positive_rate"),
    ("precision of the flag", "precision"),
    ("ROC AUC", "roc_auc"),
    ("PR AUC", "pr_auc"),
    ("score-outcome correlation", "correlation"),
]


@dataclass
class BacktestReportResult:
    """What :func:`write_backtest_report` wrote."""

    path: Path
    bytes: int
    charts: int
    models: int
    weight_changes: int  # metrics whose weight or anchors differ (0 with one model)
    challenger: bool
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        parts = [f"{self.charts} charts"]
        if self.models > 1:
            parts.append(f"{self.weight_changes} metrics changed weight or anchors")
        if self.challenger:
            parts.append("challenger (challenger only)")
        return f"wrote {self.path} ({self.bytes / 1e6:.1f} MB): " + ", ".join(parts)


@dataclass
class OutcomeFigures:
    """One outcome's figures table (``_figures.html``): headers and rows of text."""

    kind: str
    flag: str
    overall: bt.Metrics
    headers: list[str]
    rows: list[list]
    segment_rows: list[list]


@dataclass
class WeightsView:
    """The weight changes old -> new (``_weights.html``)."""

    new: Model
    old: Model
    changes: list[WeightChange]
    names: dict[str, str]  # metric key -> its label
    segments: list[str]
    segment_rows: list[tuple[str, list[str]]]  # metric key, "old -> new" per segment
    pillar_rows: list[list[str]]
    rules_added: str | None  # None: the same rules
    rules_removed: str | None


def write_backtest_report(
    result: bt.BacktestResult,
    observations: list[pd.DataFrame],
    out: str | Path,
    *,
    models: list[Model] | tuple[Model, ...],
    challenger=None,
) -> BacktestReportResult:
    """Write the backtest report to ``out``.

    Parameters
    ----------
    result
        What :func:`healthscore.evaluate.backtest.backtest` returned.
    observations
        Per model, its churn observations
        (:func:`healthscore.evaluate.diagnostics.report_observations`), in the order of
        ``models``.
    out
        The HTML file to write; it embeds plotly.js and needs nothing else to open.
    models
        The backtested model first; with ``--vs``, the other (old) model second: the
        weight changes are shown old -> new.
    challenger
        A :class:`healthscore.evaluate.challenger.ChallengerResult`, drawn beside the models and
        labelled "challenger only".

    Returns
    -------
    BacktestReportResult
        The path, the size and what the page holds.
    """
    if len(observations) != len(models):
        raise ValueError("one observations frame per model")
    page, charts, changes = render_backtest_html(result, observations, models, challenger)
    path = write_page(page, out)
    return BacktestReportResult(
        path=path,
        bytes=path.stat().st_size,
        charts=charts,
        models=len(models),
        weight_changes=sum(1 for c in changes if c.changed),
        challenger=challenger is not None,
        notes=[*result.notes, *(challenger.notes if challenger is not None else [])],
    )


def render_backtest_html(result, observations, models, challenger=None):
    """The page, the number of charts in it, and the weight changes it shows."""
    from healthscore.evaluate.challenger import CHALLENGER_ONLY
    from healthscore.views import charts

    labels = model_labels(models)
    changes = weight_changes(models[0], models[1]) if len(models) > 1 else []
    names = metric_names([c.metric for c in changes], models)
    probability = _calibrated_spec(observations[0], models[0])
    drawn = {}
    curves = _curves(observations, labels, challenger)
    drawn["roc"] = charts.embed(charts.roc_figure(curves), "roc")
    drawn["pr"] = charts.embed(charts.pr_figure(curves), "pr")
    drawn["lift"] = charts.embed(charts.lift_figure(result, labels, challenger), "lift")
    if probability is not None:
        fig = charts.probability_calibration(_probability_series(observations, labels, challenger))
    else:
        fig = charts.score_calibration(observations, labels, models[0].spec.bands)
    drawn["calibration"] = charts.embed(fig, "calibration")
    distributions = []
    for i, obs in enumerate(observations):
        fig = charts.score_distribution(obs, labels[i], models[i].spec.bands)
        distributions.append(charts.embed(fig, f"distribution-{i}"))
    weights = _weights_view(changes, models, names) if len(models) > 1 else None
    if weights is not None:
        fig = charts.weights_figure(changes, labels, names)
        drawn["weights"] = charts.embed(fig, "weights", height=160 + 34 * len(changes))
    if challenger is not None and challenger.importance:
        features = metric_names([f for f, _ in challenger.importance], models)
        fig = charts.importance_figure(challenger.importance, features)
        height = 160 + 26 * len(challenger.importance)
        drawn["challenger-importance"] = charts.embed(fig, "challenger-importance", height)
    risk = result.evaluations.get(bt.RISK)
    page = (
        page_environment()
        .get_template("backtest_report.html")
        .render(
            result=result,
            labels=labels,
            challenger=challenger,
            challenger_only=CHALLENGER_ONLY,
            kpis=_kpis(risk.overall, models[0]) if risk is not None else [],
            risk=risk.overall if risk is not None else None,
            notes=[*result.notes, *(challenger.notes if challenger is not None else [])],
            figures=_figures(result, labels, models[0]),
            probability=probability,
            charts=drawn,
            distributions=distributions,
            weights=weights,
            challenger_rows=_challenger_rows(challenger, models[0])
            if challenger is not None
            else [],
            explained=_explained(challenger, models[0]) if challenger is not None else [],
            metric_label=lambda m: metric_names([m], models)[m],
            title=f"healthscore backtest, {date_text(result.start)} to {date_text(result.end)}",
            **page_globals(),
        )
    )
    return page, len(drawn) + len(distributions), changes


def model_labels(models) -> list[str]:
    """The models' names as the page shows them; two models of one name get new/old."""
    labels = [m.label for m in models]
    if len(labels) > 1 and labels[0] == labels[1]:
        labels = [
            f"{labels[0]} (new, {models[0].version[:8]})",
            f"{labels[1]} (old, {models[1].version[:8]})",
        ]
    return labels


def metric_names(keys, models) -> dict[str, str]:
    """Each metric key's label, from the first of ``models`` that labels it (a metric one
    model no longer has keeps the label the other gives it); a label two metrics share
    gets its key added, so a chart's rows stay apart.

    >>> from healthscore.model import load_model
    >>> metric_names(["days_since_touchpoint", "gone"], [load_model()])
    {'days_since_touchpoint': 'Days since last touchpoint', 'gone': 'gone'}
    """
    out = {}
    for k in keys:
        labels = [m.metric_label(k) for m in models]
        out[k] = next((x for x in labels if x != k), k)
    seen = Counter(out.values())
    return {k: v if seen[v] == 1 or v == k else f"{v} ({k})" for k, v in out.items()}


def _kpis(m: bt.Metrics, model: Model) -> list[tuple[str, bt.Estimate]]:
    return [
        ("ROC AUC", m.roc_auc),
        (f"recall ({model.band_name('red')} before churn)", m.recall),
        ("false-positive rate", m.false_positive_rate),
    ]


def _lift_text(lift) -> str:
    return "-" if not lift or lift[0] is None else f"{number(lift[0])}x"


def _figures(result, labels, model: Model) -> list[OutcomeFigures]:
    out = []
    for kind, ev in result.evaluations.items():
        other = (result.vs_evaluations or {}).get(kind)
        diffs = {d.metric: d.value for d in result.differences.get(kind, [])}
        o = ev.overall
        headers = ["figure", labels[0]] + ([labels[1], "difference"] if other else [])
        rows = []
        for label, key in FIGURES:
            row = [label, getattr(o, key)]
            if other is not None:
                row += [getattr(other.overall, key), diffs.get(key, "")]
            rows.append(row)
        for key in ("10%", "20%"):
            end = "riskiest" if kind == bt.RISK else "healthiest"
            row = [f"recall in the {end} {key} of the book", o.recall_riskiest.get(key, "-")]
            if other is not None:
                row += [other.overall.recall_riskiest.get(key, "-"), ""]
            rows.append(row)
        lead = ["median lead time (days)", number(o.median_lead_days, ".0f")]
        if other is not None:
            lead += [number(other.overall.median_lead_days, ".0f"), ""]
        rows.append(lead)
        top = ["lift, riskiest decile", _lift_text(o.lift)]
        if other is not None:
            top += [_lift_text(other.overall.lift), ""]
        rows.append(top)
        if kind == bt.RISK:
            rows.append(
                [
                    f"{model.band_name('red')} but renewed",
                    f"{o.flagged_but_renewed} ({number(o.flagged_but_renewed_share, '.1%')})",
                ]
            )
            if other is not None:
                oo = other.overall
                share = number(oo.flagged_but_renewed_share, ".1%")
                rows[-1] += [f"{oo.flagged_but_renewed} ({share})", ""]
        segment_rows = [
            [name, f"{m.observations:,}", m.events, m.recall, m.roc_auc, m.false_positive_rate]
            for name, m in ev.segments.items()
        ]
        flag = model.band_name("red" if kind == bt.RISK else "green")
        out.append(OutcomeFigures(kind, flag, o, headers, rows, segment_rows))
    return out


def _curves(observations, labels, challenger) -> list[tuple]:
    """(name, colour, labels, risk, dash) per ROC/PR curve: the models, then the challenger."""
    from healthscore.views.charts import CHALLENGER_COLOR, HELD_OUT_COLOR, NEW_COLOR, OLD_COLOR

    colors = [NEW_COLOR, OLD_COLOR]
    curves = [
        (labels[i], colors[i], obs["label"].to_numpy(bool), -obs["score"].to_numpy(float), "solid")
        for i, obs in enumerate(observations)
    ]
    if challenger is not None and challenger.predictions is not None:
        held = challenger.predictions
        y = held["label"].to_numpy(bool)
        curves += [
            (
                f"{labels[0]}, held-out dates",
                HELD_OUT_COLOR,
                y,
                -held["score"].to_numpy(float),
                "dot",
            ),
            (
                "challenger, held-out dates",
                CHALLENGER_COLOR,
                y,
                held["probability"].to_numpy(),
                "dash",
            ),
        ]
    return curves


def _calibrated_spec(obs: pd.DataFrame, model: Model):
    """The model's churn probability spec when the observations carry its values, else None."""
    spec = getattr(model.spec, "probability", None)
    has = (
        spec is not None
        and getattr(spec, "outcome", bt.RISK) == bt.RISK
        and "probability" in obs
        and obs["probability"].notna().any()
    )
    return spec if has else None


def _probability_series(observations, labels, challenger) -> list[tuple]:
    """(name, colour, probabilities, labels) per calibration curve."""
    from healthscore.views.charts import CHALLENGER_COLOR, NEW_COLOR, OLD_COLOR

    series = []
    for i, obs in enumerate(observations[:2]):
        rows = obs[obs["probability"].notna()]
        if i and rows.empty:
            continue
        color = [NEW_COLOR, OLD_COLOR][i]
        p, y = rows["probability"].to_numpy(float), rows["label"].to_numpy(bool)
        series.append((labels[i], color, p, y))
    if challenger is not None and challenger.predictions is not None:
        held = challenger.predictions
        series.append(
            (
                "challenger, held-out dates",
                CHALLENGER_COLOR,
                held["probability"].to_numpy(float),
                held["label"].to_numpy(bool),
            )
        )
    return series


def _weights_view(changes: list[WeightChange], models, names: dict[str, str]) -> WeightsView:
    new, old = models[0], models[1]
    segments = list(changes[0].segments) if changes else []
    segment_rows = [
        (c.metric, [f"{weight_text(o)} -> {weight_text(n)}" for o, n in c.segments.values()])
        for c in changes
    ]
    pw_old, pw_new = old.pillar_weights(), new.pillar_weights()
    pillar_rows = [
        [
            p,
            weight_text(pw_old.get(p)),
            weight_text(pw_new.get(p)),
            f"{((pw_new.get(p) or 0) - (pw_old.get(p) or 0)) * 100:+.1f} pp",
        ]
        for p in dict.fromkeys([*pw_new, *pw_old])
    ]
    rules_old, rules_new = set(old.spec.rules), set(new.spec.rules)
    added = removed = None
    if rules_old != rules_new:
        added = ", ".join(sorted(rules_new - rules_old)) or "none"
        removed = ", ".join(sorted(rules_old - rules_new)) or "none"
    return WeightsView(
        new, old, changes, names, segments, segment_rows, pillar_rows, added, removed
    )


def _challenger_rows(ch, model: Model | None = None) -> list[list]:
    """The held-out figures of the challenger beside the weighted model: the AUCs with
    their paired difference, then the backtest's figure set for both (the weighted model
    flags its band, the challenger as many of its riskiest per date)."""
    diff = {d.metric: d.value for d in ch.differences}
    rows = [
        ["ROC AUC", ch.roc_auc, ch.weighted_roc_auc, diff.get("roc_auc", "")],
        ["PR AUC", ch.pr_auc, ch.weighted_pr_auc, diff.get("pr_auc", "")],
    ]
    if not ch.figures:
        return rows
    c, w = ch.figures["challenger"], ch.figures["weighted"]
    end = "healthiest" if ch.outcome == bt.GOOD else "riskiest"
    for key, value in c.recall_riskiest.items():
        rows.append([f"recall in the {end} {key} of the book", value, w.recall_riskiest[key], ""])
    rows.append(["lift, riskiest decile", _lift_text(c.lift), _lift_text(w.lift), ""])
    band = model.band_name(ch.flag_band) if model is not None else ch.flag_band
    flag = f"flag list ({band}; the challenger: as many per date)"
    rows.append([f"{flag}: recall", c.recall, w.recall, ""])
    rows.append([f"{flag}: false-positive rate", c.false_positive_rate, w.false_positive_rate, ""])
    rows.append([f"{flag}: precision", number(c.precision, ".1%"), number(w.precision, ".1%"), ""])
    if w.flagged_but_renewed_share is not None:
        rows.append(
            [
                f"{flag}: renewed anyway",
                number(c.flagged_but_renewed_share, ".1%"),
                number(w.flagged_but_renewed_share, ".1%"),
                "",
            ]
        )
    return rows


def _explained(ch, model: Model) -> list[tuple]:
    """The challenger's riskiest accounts, each with the weighted model's score and band
    (the band as the model names it)."""
    if not ch.explanations:
        return []
    scores = ch.predictions.set_index(["account_id", "as_of"])
    out = []
    for e in ch.explanations:
        key = (e.account_id, e.as_of)
        s = scores.loc[key] if key in scores.index else None
        band = None if s is None else model.band_name(s["band"])
        out.append((e, None if s is None else float(s["score"]), band))
    return out
