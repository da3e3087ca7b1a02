"""The backtest report: one self-contained HTML file with the backtest's charts and words.

Place in the flow: a consumer at the end, beside ``report``. It draws what
:func:`healthscore.evaluate.backtest.backtest` measured (and, optionally, the learned
challenger of :mod:`healthscore.evaluate.challenger`) for the churn outcome:

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

Plotly's JavaScript is embedded once (the file opens offline and fetches nothing);
everything from the data is HTML-escaped, in the charts too.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from healthscore.core.time import dates_between
from healthscore.engine.history import SCORES
from healthscore.errors import HealthscoreError
from healthscore.evaluate import backtest as bt
from healthscore.model import Model
from healthscore.store import Store
from healthscore.views.report import CSS, _Charts, _num, _table, esc

NEW_COLOR, OLD_COLOR, CHALLENGER_COLOR, HELD_OUT_COLOR = "#3c6fd6", "#ef8a3c", "#8e44ad", "#7b8794"
CHURNED_COLOR, RETAINED_COLOR = "#d64545", "#2e9e5b"
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
class WeightChange:
    """One metric's effective weight (pillar weight x share) in the old and new model."""

    metric: str
    pillar: str | None
    old: float | None  # None: not scored by that model
    new: float | None
    anchors_old: str
    anchors_new: str
    segments: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)

    @property
    def change(self) -> float:
        return (self.new or 0.0) - (self.old or 0.0)


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


# --- inputs -------------------------------------------------------------------------------


def report_observations(
    store: Store, result: bt.BacktestResult, models: list[Model] | tuple[Model, ...]
) -> list[pd.DataFrame]:
    """The churn observations of each model at the backtest's dates, as the report draws them.

    With two models, only the (account, date) pairs both have are kept (as the backtest
    measures them). A ``probability`` column holds the stored calibrated probability
    (empty when the model has no ``probability:`` section).
    """
    dates = dates_between(result.start, result.end, result.every)
    frames = [bt.observations(store, m, dates, result.horizon, bt.RISK)[0] for m in models]
    if len(frames) > 1:
        key = ["account_id", "as_of"]
        both = frames[0][key]
        for f in frames[1:]:
            both = both.merge(f[key])
        frames = [f.merge(both, on=key).reset_index(drop=True) for f in frames]
    return [_with_probability(store, m, f) for m, f in zip(models, frames, strict=True)]


def _with_probability(store: Store, model: Model, obs: pd.DataFrame) -> pd.DataFrame:
    t = store.stored(SCORES)
    if "probability" not in t.columns or obs.empty:
        return obs.assign(probability=np.nan)
    t = t.filter(
        t.model_version == model.version,
        t.scorecard == model.scorecard_name,
        t.probability.notnull(),
    )
    p = store.execute(t.select("account_id", "as_of", "probability")).to_pandas()
    return obs.merge(p, on=["account_id", "as_of"], how="left")


def weight_changes(new: Model, old: Model) -> list[WeightChange]:
    """Each metric scored by either model: effective weights old -> new, overall and per segment."""
    pillar_of = {m: p for p, m, _ in old.scored_metrics()}
    pillar_of.update({m: p for p, m, _ in new.scored_metrics()})
    uses_old = {m: u for _, m, u in old.scored_metrics()}
    uses_new = {m: u for _, m, u in new.scored_metrics()}
    w_old, w_new = old.metric_weights(), new.metric_weights()
    segments = list(dict.fromkeys([*old.segment_names(), *new.segment_names()]))
    seg_old = {s: old.metric_weights(s) for s in segments}
    seg_new = {s: new.metric_weights(s) for s in segments}
    out = []
    for m in dict.fromkeys([*uses_new, *uses_old]):
        out.append(
            WeightChange(
                metric=m,
                pillar=pillar_of.get(m),
                old=w_old.get(m),
                new=w_new.get(m),
                anchors_old=_anchors(uses_old.get(m)),
                anchors_new=_anchors(uses_new.get(m)),
                segments={s: (seg_old[s].get(m), seg_new[s].get(m)) for s in segments},
            )
        )
    out.sort(key=lambda c: (-abs(c.change), c.metric))
    return out


def _anchors(use) -> str:
    """How a metric becomes 0-100, in short: ``bad 0 -> good 20``, ``points``, ``map`` ..."""
    if use is None:
        return "not scored"
    if use.bad is not None:
        return f"bad {_g(use.bad)}, good {_g(use.good)}"
    if use.points is not None:
        return "points " + " ".join(f"{_g(x)}:{_g(y)}" for x, y in use.points)
    if use.map is not None:
        return "map " + ", ".join(f"{k}:{_g(v)}" for k, v in use.map.items())
    return f"percentile ({use.percentile.better} is better)"


def _g(x: float) -> str:
    return f"{x:g}"


def _changed(c: WeightChange) -> bool:
    moved = any(
        _r(o) != _r(n) for o, n in [(c.old, c.new), *c.segments.values()]
    )  # rounding: weights are normalised shares
    return moved or c.anchors_old != c.anchors_new


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 9)


# --- writing ------------------------------------------------------------------------------


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
        Per model, its churn observations (:func:`report_observations`), in the order
        of ``models``.
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
    page, charts, changes = render_html(result, observations, models, challenger)
    path = Path(out)
    try:
        path.write_text(page, encoding="utf-8")
    except OSError as e:
        raise HealthscoreError(f"{path}: cannot write the report ({e.strerror})") from None
    return BacktestReportResult(
        path=path,
        bytes=path.stat().st_size,
        charts=charts,
        models=len(models),
        weight_changes=sum(1 for c in changes if _changed(c)),
        challenger=challenger is not None,
        notes=[*result.notes, *(challenger.notes if challenger is not None else [])],
    )


# --- rendering ------------------------------------------------------------------------------


def render_html(result, observations, models, challenger=None):
    """The page, the number of charts in it, and the weight changes it shows."""
    chart = _Charts()
    labels = _labels(models)
    colors = [NEW_COLOR, OLD_COLOR]
    changes = weight_changes(models[0], models[1]) if len(models) > 1 else []
    parts = [_head(result), _headline(result, labels, challenger)]
    parts.append(_notes(result, challenger))
    parts.append(_figures_section(result, labels))
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
    parts.append("<section id='roc-pr'><h2>Ranking: ROC and precision-recall curves</h2>")
    parts.append(
        "<p class='sub'>Churn within the horizon, ranked by risk (lowest score first). "
        "The diagonal is chance. "
        + (
            "The challenger is trained on the early dates and drawn on the held-out dates "
            "only, beside the weighted model on the same observations."
            if challenger is not None
            else ""
        )
        + "</p>"
    )
    parts.append(chart(_roc(curves), "roc"))
    parts.append(chart(_pr(curves), "pr"))
    parts.append("</section>")
    parts.append("<section id='lift'><h2>Lift per score decile</h2>")
    parts.append(
        "<p class='sub'>Churn rate of each tenth of the observations, riskiest first, over "
        "the overall rate: 1 is no better than a random pick.</p>"
    )
    parts.append(chart(_lift_chart(result, labels, challenger), "lift"))
    parts.append("</section>")
    parts.append(_calibration_section(chart, observations, models, labels, challenger))
    parts.append("<section id='distributions'><h2>Score distributions</h2>")
    parts.append(
        "<p class='sub'>Scores of the observations followed by churn within the horizon, "
        "and of the others (share of each group per 5-point bin).</p>"
    )
    for i, obs in enumerate(observations):
        parts.append(chart(_distribution(obs, labels[i], models[i]), f"distribution-{i}"))
    parts.append("</section>")
    if len(models) > 1:
        parts.append(_weights_section(chart, changes, models, labels))
    if challenger is not None:
        parts.append(_challenger_section(chart, challenger, labels[0]))
    parts.append(
        f"<footer>healthscore backtest report, model {esc(result.model_label)} "
        f"{esc(result.model_version[:12])}, generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
        "</footer></main></body></html>\n"
    )
    return "\n".join(parts), chart.count, changes


def _plain(text: str) -> str:
    """A label for a chart: Plotly shows &lt; &gt; &amp; as text and parses no tag then."""
    return html.escape(str(text), quote=False)


def _labels(models) -> list[str]:
    labels = [m.label for m in models]
    if len(labels) > 1 and labels[0] == labels[1]:
        labels = [
            f"{labels[0]} (new, {models[0].version[:8]})",
            f"{labels[1]} (old, {models[1].version[:8]})",
        ]
    return labels


EXTRA_CSS = """
.challenger{border-left:6px solid #8e44ad}
.only{display:inline-block;background:#f3e9f8;color:#5b2c6f;padding:2px 8px;border-radius:8px;
font-weight:600}
td.up{color:#2e7d32}td.down{color:#c62828}
"""


def _head(result) -> str:
    title = f"healthscore backtest, {result.start:%Y-%m-%d} to {result.end:%Y-%m-%d}"
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{esc(title)}</title><style>{CSS}{EXTRA_CSS}</style></head><body><main>"
    )


def _headline(result, labels, challenger) -> str:
    ev = result.evaluations.get(bt.RISK)
    kpis = []
    if ev is not None:
        m = ev.overall
        for name, value in (
            ("ROC AUC", m.roc_auc),
            ("recall (red before churn)", m.recall),
            ("false-positive rate", m.false_positive_rate),
        ):
            interval = (
                f"95 % {value.lo:.2f}-{value.hi:.2f}" if value.lo is not None else "no interval"
            )
            kpis.append(
                f"<div class='kpi'>{esc(name)}<b>{_num(value.value, '.2f')}</b>{interval}</div>"
            )
        kpis.append(
            f"<div class='kpi'>churn events judged<b>{m.events}</b>{m.positives} of "
            f"{m.observations:,} observations positive</div>"
        )
    vs = f" vs {esc(labels[1])}" if len(labels) > 1 else ""
    ch = "; with a learned challenger (challenger only)" if challenger is not None else ""
    return (
        f"<section id='headline'><h1>Backtest of {esc(labels[0])}{vs}</h1>"
        f"<div class='sub'>model {esc(result.model_version[:12])}; observations every "
        f"{esc(result.every)} from {result.start:%Y-%m-%d} to {result.end:%Y-%m-%d}; an outcome "
        f"within {esc(result.horizon)} counts; recall judges the score {esc(result.lead)} before "
        f"the outcome; 95 % intervals from a bootstrap over accounts{esc(ch)}</div>"
        f"<div class='kpis'>{''.join(kpis)}</div></section>"
    )


def _notes(result, challenger) -> str:
    notes = [*result.notes, *(challenger.notes if challenger is not None else [])]
    if not notes:
        return ""
    items = "".join(f"<li>{esc(n)}</li>" for n in notes)
    return (
        "<section class='warnings' id='notes'><h2>What the evidence says</h2>"
        f"<ul>{items}</ul></section>"
    )


def _figures_section(result, labels) -> str:
    out = ["<section id='figures'><h2>Figures</h2>"]
    for kind, ev in result.evaluations.items():
        other = (result.vs_evaluations or {}).get(kind)
        diffs = {d.metric: d.value for d in result.differences.get(kind, [])}
        o = ev.overall
        flag = "red" if kind == bt.RISK else "green"
        out.append(
            f"<h3>{esc(kind)} (flag: {flag})</h3><p class='sub'>{o.events} events judged, "
            f"{o.positives} of {o.observations:,} observations positive, base rate "
            f"{_pct(o.base_rate)}</p>"
        )
        headers = ["figure", labels[0]] + ([labels[1], "difference"] if other else [])
        rows = []
        for label, key in FIGURES:
            row = [esc(label), esc(getattr(o, key))]
            if other is not None:
                row += [esc(getattr(other.overall, key)), esc(diffs.get(key, ""))]
            rows.append(row)
        lead = ["median lead time (days)", _num(o.median_lead_days, ".0f")]
        if other is not None:
            lead += [_num(other.overall.median_lead_days, ".0f"), ""]
        rows.append(lead)
        top = ["lift, riskiest decile", _lift1(o.lift)]
        if other is not None:
            top += [_lift1(other.overall.lift), ""]
        rows.append(top)
        if kind == bt.RISK:
            renewed = [
                "red but renewed",
                f"{o.flagged_but_renewed} ({_pct(o.flagged_but_renewed_share)})",
            ]
            if other is not None:
                oo = other.overall
                renewed += [f"{oo.flagged_but_renewed} ({_pct(oo.flagged_but_renewed_share)})", ""]
            rows.append(renewed)
        numeric = set(range(1, len(headers)))
        out.append(_table(headers, rows, numeric, f"figures figures-{esc(kind)}"))
        seg_rows = [
            [
                esc(name),
                f"{m.observations:,}",
                str(m.events),
                esc(m.recall),
                esc(m.roc_auc),
                esc(m.false_positive_rate),
            ]
            for name, m in ev.segments.items()
        ]
        if seg_rows:
            out.append(f"<p class='sub'>{esc(kind)} by segment ({esc(labels[0])})</p>")
            out.append(
                _table(
                    ["segment", "observations", "events", "recall", "ROC AUC", "FPR"],
                    seg_rows,
                    {1, 2, 3, 4, 5},
                    "segments",
                )
            )
    out.append("</section>")
    return "\n".join(out)


def _pct(x) -> str:
    return "-" if x is None else f"{x:.1%}"


def _lift1(lift) -> str:
    return "-" if not lift or lift[0] is None else f"{lift[0]:.1f}x"


# charts ------------------------------------------------------------------------------------


def _go():
    import plotly.graph_objects as go

    return go


def _roc(curves):
    from sklearn.metrics import roc_auc_score, roc_curve

    go = _go()
    fig = go.Figure()
    for name, color, y, risk, dash in curves:
        if not (0 < y.sum() < len(y)):
            continue
        fpr, tpr, _ = roc_curve(y, risk)
        auc = roc_auc_score(y, risk)
        fig.add_trace(
            go.Scatter(
                x=fpr,
                y=tpr,
                mode="lines",
                name=f"{_plain(name)} (AUC {auc:.2f})",
                line={"color": color, "dash": dash, "width": 2},
            )
        )
    fig.add_trace(
        go.Scatter(
            x=[0, 1], y=[0, 1], mode="lines", name="chance", line={"color": "#bbb", "dash": "dot"}
        )
    )
    fig.update_layout(
        title="ROC curve (churn)",
        xaxis_title="false-positive rate",
        yaxis_title="true-positive rate",
        xaxis={"range": [0, 1]},
        yaxis={"range": [0, 1.02]},
    )
    return fig


def _pr(curves):
    from sklearn.metrics import average_precision_score, precision_recall_curve

    go = _go()
    fig = go.Figure()
    base = None
    for name, color, y, risk, dash in curves:
        if not (0 < y.sum() < len(y)):
            continue
        precision, recall, _ = precision_recall_curve(y, risk)
        ap = average_precision_score(y, risk)
        fig.add_trace(
            go.Scatter(
                x=recall,
                y=precision,
                mode="lines",
                line_shape="hv",
                name=f"{_plain(name)} (AP {ap:.2f})",
                line={"color": color, "dash": dash, "width": 2},
            )
        )
        base = base if base is not None else float(y.mean())
    if base is not None:
        fig.add_trace(
            go.Scatter(
                x=[0, 1],
                y=[base, base],
                mode="lines",
                name=f"chance (base rate {base:.1%})",
                line={"color": "#bbb", "dash": "dot"},
            )
        )
    fig.update_layout(
        title="Precision-recall curve (churn)",
        xaxis_title="recall",
        yaxis_title="precision",
        xaxis={"range": [0, 1]},
        yaxis={"range": [0, 1.02]},
    )
    return fig


def _lift_chart(result, labels, challenger):
    go = _go()
    fig = go.Figure()
    deciles = [f"{i}" for i in range(1, 11)]
    series = [(labels[0], NEW_COLOR, result.evaluations[bt.RISK].overall.lift)]
    if result.vs_evaluations and bt.RISK in result.vs_evaluations:
        series.append((labels[1], OLD_COLOR, result.vs_evaluations[bt.RISK].overall.lift))
    if challenger is not None and challenger.predictions is not None:
        held = challenger.predictions
        y = held["label"].to_numpy(bool)
        series.append(
            (
                "challenger, held-out dates",
                CHALLENGER_COLOR,
                bt.lift_by_decile(-held["probability"].to_numpy(float), y, True),
            )
        )
    for name, color, lift in series:
        if not lift:
            continue
        fig.add_trace(
            go.Bar(
                x=deciles[: len(lift)],
                y=[v if v is not None else 0 for v in lift],
                name=_plain(name),
                marker_color=color,
                hovertemplate="decile %{x}: lift %{y:.2f}<extra></extra>",
            )
        )
    fig.add_hline(y=1, line={"color": "#999", "dash": "dot"})
    fig.update_layout(
        title="Lift per decile, riskiest first (churn)",
        xaxis_title="score decile (1 = lowest scores)",
        yaxis_title="churn rate / overall rate",
        barmode="group",
    )
    return fig


def _calibration_section(chart, observations, models, labels, challenger) -> str:
    go = _go()
    obs, model = observations[0], models[0]
    spec = getattr(model.spec, "probability", None)
    has_prob = (
        spec is not None
        and getattr(spec, "outcome", bt.RISK) == bt.RISK
        and "probability" in obs
        and obs["probability"].notna().any()
    )
    out = ["<section id='calibration'><h2>Calibration</h2>"]
    fig = go.Figure()
    if has_prob:
        fitted = getattr(spec, "fitted_until", None)
        out.append(
            "<p class='sub'>Observed churn rate per bin of predicted probability (tenths of "
            f"the observations) against the mean predicted: on the diagonal is well "
            f"calibrated. The model's probability is of {esc(spec.describe())}"
            + (f", fitted on outcomes up to {esc(fitted)}" if fitted else "")
            + "; dates it was fitted on are in-sample.</p>"
        )
        rows = obs[obs["probability"].notna()]
        x, y, n = _reliability(rows["probability"].to_numpy(float), rows["label"].to_numpy(bool))
        fig.add_trace(_calibration_trace(labels[0], NEW_COLOR, x, y, n))
        if len(observations) > 1 and observations[1]["probability"].notna().any():
            o = observations[1][observations[1]["probability"].notna()]
            x, y, n = _reliability(o["probability"].to_numpy(float), o["label"].to_numpy(bool))
            fig.add_trace(_calibration_trace(labels[1], OLD_COLOR, x, y, n))
        if challenger is not None and challenger.predictions is not None:
            held = challenger.predictions
            x, y, n = _reliability(
                held["probability"].to_numpy(float), held["label"].to_numpy(bool)
            )
            fig.add_trace(
                _calibration_trace("challenger, held-out dates", CHALLENGER_COLOR, x, y, n)
            )
        top = max([0.05, *(max(t.x) for t in fig.data), *(max(t.y) for t in fig.data)]) * 1.05
        fig.add_trace(
            go.Scatter(
                x=[0, top],
                y=[0, top],
                mode="lines",
                name="perfect",
                line={"color": "#bbb", "dash": "dot"},
            )
        )
        fig.update_layout(
            title="Calibration: observed vs predicted churn probability",
            xaxis_title="mean predicted probability",
            yaxis_title="observed churn rate",
        )
    else:
        out.append(
            "<p class='sub'>The model has no <code>probability:</code> section (see "
            "<code>healthscore model fit-probability</code>), so this shows the observed "
            "churn rate per 10-point score bin; the dotted lines are the band thresholds. A "
            "useful score has the rate falling as the score rises.</p>"
        )
        for i, o in enumerate(observations):
            x, rate, n = _rate_per_bin(o)
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=rate,
                    mode="lines+markers",
                    name=_plain(labels[i]),
                    line={"color": [NEW_COLOR, OLD_COLOR][i]},
                    customdata=n,
                    hovertemplate="score %{x}: churn rate %{y:.1%} of %{customdata} "
                    "observations<extra></extra>",
                )
            )
        bands = model.spec.bands
        for v in (bands.yellow, bands.green):
            fig.add_vline(x=v, line={"color": "#bbb", "dash": "dot"})
        fig.update_layout(
            title="Observed churn rate per score bin",
            xaxis_title="score (bin centre)",
            yaxis_title="churn rate within the horizon",
            xaxis={"range": [0, 100]},
            yaxis={"tickformat": ".0%"},
        )
    out.append(chart(fig, "calibration"))
    out.append("</section>")
    return "\n".join(out)


def _calibration_trace(name, color, x, y, n):
    go = _go()
    return go.Scatter(
        x=x,
        y=y,
        mode="lines+markers",
        name=_plain(name),
        line={"color": color},
        customdata=n,
        hovertemplate="predicted %{x:.1%}: observed %{y:.1%} of %{customdata} "
        "observations<extra></extra>",
    )


def _reliability(p: np.ndarray, y: np.ndarray, bins: int = 10):
    """Mean predicted and observed rate per bin of (about) equal size, lowest first."""
    order = np.argsort(p, kind="stable")
    parts = [part for part in np.array_split(order, min(bins, len(p))) if len(part)]
    return (
        [float(p[part].mean()) for part in parts],
        [float(y[part].mean()) for part in parts],
        [len(part) for part in parts],
    )


def _rate_per_bin(obs: pd.DataFrame):
    score = obs["score"].to_numpy(float)
    y = obs["label"].to_numpy(bool)
    idx = np.clip((score // 10).astype(int), 0, 9)
    x, rate, n = [], [], []
    for b in range(10):
        mask = idx == b
        if mask.any():
            x.append(b * 10 + 5)
            rate.append(float(y[mask].mean()))
            n.append(int(mask.sum()))
    return x, rate, n


def _distribution(obs: pd.DataFrame, label: str, model: Model):
    go = _go()
    fig = go.Figure()
    y = obs["label"].to_numpy(bool)
    for name, mask, color in (
        (f"churned within the horizon ({int(y.sum()):,})", y, CHURNED_COLOR),
        (f"did not churn ({int((~y).sum()):,})", ~y, RETAINED_COLOR),
    ):
        fig.add_trace(
            go.Histogram(
                x=obs["score"].to_numpy(float)[mask],
                name=name,
                histnorm="percent",
                xbins={"start": 0, "end": 100, "size": 5},
                marker_color=color,
                opacity=0.6,
            )
        )
    for v in (model.spec.bands.yellow, model.spec.bands.green):
        fig.add_vline(x=v, line={"color": "#999", "dash": "dot"})
    fig.update_layout(
        barmode="overlay",
        title=f"Scores of churned vs retained observations, {_plain(label)}",
        xaxis_title="score",
        yaxis_title="% of the group",
        xaxis={"range": [0, 100]},
    )
    return fig


def _weights_section(chart, changes: list[WeightChange], models, labels) -> str:
    go = _go()
    new, old = models[0], models[1]
    out = [
        "<section id='weights'><h2>Weight changes, old -> new</h2>",
        f"<p class='sub'>Old: {esc(labels[1])} ({esc(old.version[:12])}); new: "
        f"{esc(labels[0])} ({esc(new.version[:12])}). Effective weight = pillar weight x the "
        "metric's share of its pillar; the weights of a model add up to 100 %.</p>",
    ]
    metrics = [c.metric for c in changes]
    fig = go.Figure()
    for name, color, values in (
        (f"old: {labels[1]}", OLD_COLOR, [c.old or 0.0 for c in changes]),
        (f"new: {labels[0]}", NEW_COLOR, [c.new or 0.0 for c in changes]),
    ):
        fig.add_trace(
            go.Bar(
                y=metrics,
                x=[v * 100 for v in values],
                name=_plain(name),
                orientation="h",
                marker_color=color,
                hovertemplate="%{y}: %{x:.1f} %<extra></extra>",
            )
        )
    fig.update_layout(
        barmode="group",
        title="Effective metric weights, all accounts (%)",
        xaxis_title="weight (%)",
        yaxis={"autorange": "reversed"},
    )
    out.append(chart(fig, "weights", height=160 + 34 * len(changes)))
    rows = []
    for c in changes:
        cls = "up" if c.change > 1e-9 else "down" if c.change < -1e-9 else ""
        rows.append(
            [
                esc(c.metric),
                esc(c.pillar),
                _w(c.old),
                _w(c.new),
                f"<span class='{cls}'>{c.change * 100:+.1f} pp</span>",
                esc(c.anchors_old),
                esc(c.anchors_new) if c.anchors_new != c.anchors_old else "same",
            ]
        )
    out.append(
        _table(
            ["metric", "pillar", "old", "new", "change", "anchors old", "anchors new"],
            rows,
            {2, 3, 4},
            "weight-changes",
        )
    )
    segments = list(changes[0].segments) if changes else []
    if segments:
        out.append("<p class='sub'>Per segment (old -> new):</p>")
        seg_rows = [
            [esc(c.metric)] + [f"{_w(o)} -> {_w(n)}" for o, n in c.segments.values()]
            for c in changes
        ]
        out.append(
            _table(
                ["metric", *segments], seg_rows, set(range(1, len(segments) + 1)), "segment-weights"
            )
        )
    pw_old, pw_new = old.pillar_weights(), new.pillar_weights()
    pillar_rows = [
        [
            esc(p),
            _w(pw_old.get(p)),
            _w(pw_new.get(p)),
            f"{((pw_new.get(p) or 0) - (pw_old.get(p) or 0)) * 100:+.1f} pp",
        ]
        for p in dict.fromkeys([*pw_new, *pw_old])
    ]
    out.append("<p class='sub'>Pillar weights:</p>")
    out.append(_table(["pillar", "old", "new", "change"], pillar_rows, {1, 2, 3}, "pillar-weights"))
    bo, bn = old.spec.bands, new.spec.bands
    out.append(
        f"<p class='bands-change'>Bands: green from {_g(bo.green)} -> {_g(bn.green)}, yellow from "
        f"{_g(bo.yellow)} -> {_g(bn.yellow)}"
        + ("" if (bo.green, bo.yellow) != (bn.green, bn.yellow) else " (unchanged)")
        + ".</p>"
    )
    rules_old, rules_new = set(old.spec.rules), set(new.spec.rules)
    if rules_old != rules_new:
        added = ", ".join(sorted(rules_new - rules_old)) or "none"
        removed = ", ".join(sorted(rules_old - rules_new)) or "none"
        out.append(f"<p>Rules added: {esc(added)}; removed: {esc(removed)}.</p>")
    out.append("</section>")
    return "\n".join(out)


def _w(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.1f} %"


def _challenger_section(chart, ch, label: str) -> str:
    from healthscore.evaluate.challenger import CHALLENGER_ONLY

    go = _go()
    diff = {d.metric: d.value for d in ch.differences}
    out = [
        "<section id='challenger' class='challenger'><h2>Learned challenger</h2>",
        f"<p><span class='only'>{esc(CHALLENGER_ONLY)}</span></p>",
        f"<p class='sub'>Gradient-boosted trees (scikit-learn) on the {len(ch.features)} stored "
        f"raw metric values, each feature's direction fixed by the model's anchors; "
        f"{esc(ch.split)}. Trained on {ch.train_observations:,} observations "
        f"({ch.train_positives} {esc(ch.outcome)}) at {len(ch.train_dates)} dates; held out: "
        f"{ch.observations:,} observations ({ch.positives} {esc(ch.outcome)}) of "
        f"{ch.accounts} accounts at {len(ch.test_dates)} dates.</p>",
    ]
    rows = [
        ["ROC AUC", esc(ch.roc_auc), esc(ch.weighted_roc_auc), esc(diff.get("roc_auc", ""))],
        ["PR AUC", esc(ch.pr_auc), esc(ch.weighted_pr_auc), esc(diff.get("pr_auc", ""))],
    ]
    out.append(
        _table(
            ["held-out figure", "challenger", label, "challenger - weighted"],
            rows,
            {1, 2, 3},
            "challenger-figures",
        )
    )
    if ch.importance:
        imp = ch.importance
        fig = go.Figure(
            go.Bar(
                y=[f for f, _ in imp],
                x=[v for _, v in imp],
                orientation="h",
                marker_color=CHALLENGER_COLOR,
                hovertemplate="%{y}: %{x:+.3f}<extra></extra>",
            )
        )
        fig.update_layout(
            title="What the challenger relies on: held-out ROC AUC lost when a feature is shuffled",
            xaxis_title="ROC AUC drop",
            yaxis={"autorange": "reversed"},
        )
        out.append(chart(fig, "challenger-importance", height=160 + 26 * len(imp)))
    if ch.explanations:
        out.append(
            f"<p class='sub'>The {len(ch.explanations)} accounts the challenger finds riskiest "
            f"on {ch.explained_as_of:%Y-%m-%d}, and why: each feature's contribution in "
            "percentage points (baseline Shapley values against the training medians; they add "
            "up to the probability minus the baseline).</p>"
        )
        scores = ch.predictions.set_index(["account_id", "as_of"])
        rows = []
        for e in ch.explanations:
            s = (
                scores.loc[(e.account_id, e.as_of)]
                if (e.account_id, e.as_of) in scores.index
                else None
            )
            rows.append(
                [
                    esc(e.account_id),
                    f"{e.probability:.1%}",
                    f"{e.baseline_probability:.1%}",
                    _num(None if s is None else float(s["score"])),
                    esc(None if s is None else s["band"]),
                    f"<span class='why'>{esc(e.summary(4))}</span>",
                ]
            )
        out.append(
            _table(
                ["account", "challenger probability", "baseline", f"{label} score", "band", "why"],
                rows,
                {1, 2, 3},
                "challenger-explanations",
            )
        )
    out.append("</section>")
    return "\n".join(out)
