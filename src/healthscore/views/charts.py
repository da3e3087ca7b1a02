"""The Plotly figures of both HTML reports, built in one place (the dashboard reuses them).

Place in the flow: in ``views``, below :mod:`healthscore.views.report` and
:mod:`healthscore.views.backtest_report`. Each function takes plain data
(:class:`healthscore.portfolio.ReportData`, the backtest's results and
:mod:`healthscore.evaluate.diagnostics`) and returns a ``plotly.graph_objects.Figure``;
:func:`embed` gives it the common look and turns it into a :class:`Chart` that the
templates embed as JSON (``tojson``) beside plotly.js, which the page holds once.

Text from the data (segment and model names, metric names) goes through
:func:`plotly_text` exactly once: Plotly reads labels as its own small HTML (``<b>``,
``<br>``, ``&amp;``), so a segment named ``A&B <b>x</b>`` would otherwise lose its tags.
Nothing else escapes it: the page embeds the figure as JSON, not as HTML.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import plotly.graph_objects as go
import plotly.io as pio

from healthscore.evaluate import backtest as bt
from healthscore.evaluate import diagnostics
from healthscore.portfolio import BANDS, ReportData
from healthscore.views.format import date_text, money, strip_bidi

BAND_COLOR = {"green": "#2e9e5b", "yellow": "#e3b505", "red": "#d64545", None: "#9aa0a6"}
TREND_COLOR = {
    "rapid_decline": "#d64545",
    "gradual_decline": "#ef8a3c",
    "improving": "#3c8dd6",
    "stable_high": "#2e9e5b",
    "stable": "#9aa0a6",
}
NEW_COLOR, OLD_COLOR, CHALLENGER_COLOR, HELD_OUT_COLOR = "#3c6fd6", "#ef8a3c", "#8e44ad", "#7b8794"
CHURNED_COLOR, RETAINED_COLOR = "#d64545", "#2e9e5b"
HEIGHT = 360  # pixels, unless a chart grows with its rows


@dataclass
class Chart:
    """One figure as the page embeds it: ``<div data-chart=slug>`` and its JSON."""

    slug: str
    height: int
    figure: dict  # data, layout and config for Plotly.newPlot

    @property
    def div_id(self) -> str:
        return f"chart-{self.slug}"


def embed(fig: go.Figure, slug: str, height: int = HEIGHT) -> Chart:
    """The figure with the reports' common layout, ready for the ``_chart.html`` partial."""
    fig.update_layout(
        template="plotly_white",
        height=height,
        margin={"l": 60, "r": 20, "t": 40, "b": 50},
        legend={"orientation": "h", "y": -0.18},
        font={"family": "system-ui, sans-serif", "size": 12},
    )
    spec = fig.to_plotly_json()
    spec["config"] = {"displaylogo": False, "responsive": True}
    return Chart(slug, height, spec)


def chart_json(obj, **_) -> str:
    """JSON for Plotly (numpy arrays, dates): the templates' ``tojson`` dumps through this.

    Jinja passes its own ``json.dumps`` options; Plotly's encoder chooses its own.
    """
    return pio.json.to_json_plotly(obj)


def plotly_js() -> str:
    """plotly.js itself (about 4.6 MB), for one ``<script>`` in the page: nothing from a CDN."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def plotly_text(text) -> str:
    """Text for a Plotly label or title: ``&``, ``<`` and ``>`` as the entities Plotly decodes,
    and without bidirectional controls (a segment named with U+202E cannot reverse the
    labels beside it).

    Quotes stay as they are: Plotly decodes no ``&quot;`` and would show it.

    >>> plotly_text('A&B <b>"east"</b>')
    'A&amp;B &lt;b&gt;"east"&lt;/b&gt;'
    >>> plotly_text("\u202etsae")
    'tsae'
    """
    return html.escape(strip_bidi(str(text)), quote=False)


def band_label(band: str | None, name=None) -> str:
    """``band`` (green/yellow/red; None: no score) as the scorecard names it (``name``:
    e.g. :meth:`healthscore.portfolio.ReportData.band_name`), escaped for Plotly.

    >>> band_label("red"), band_label("red", {"red": "at <risk>"}.get), band_label(None)
    ('red', 'at &lt;risk&gt;', 'no score')
    """
    return plotly_text(name(band) if name is not None else band or "no score")


# --- the portfolio report -------------------------------------------------------------------


#: consecutive stored dates further apart than this many times the usual spacing (and
#: than :data:`GAP_MIN_DAYS`) are a gap in stored history: drawn as one, not bridged
GAP_SPACINGS = 3
GAP_MIN_DAYS = 8


def history_runs(dates: list) -> list[list]:
    """``dates`` (sorted) cut where stored history has a gap: a step longer than
    :data:`GAP_SPACINGS` times the median step and than :data:`GAP_MIN_DAYS` days (a
    monthly backtest's history, then nothing for two years, then a service's daily rows).

    >>> from datetime import datetime as D
    >>> weekly = [D(2024, 1, 1), D(2024, 1, 8), D(2024, 1, 15)]
    >>> [len(r) for r in history_runs(weekly + [D(2026, 1, 5), D(2026, 1, 12)])]
    [3, 2]
    >>> [len(r) for r in history_runs(weekly + [D(2024, 1, 29)])]  # one week missed
    [4]
    """
    if len(dates) < 3:
        return [list(dates)] if dates else []
    steps = sorted((b - a).total_seconds() for a, b in zip(dates, dates[1:], strict=False))
    limit = max(GAP_SPACINGS * steps[len(steps) // 2], GAP_MIN_DAYS * 86400)
    runs = [[dates[0]]]
    for a, b in zip(dates, dates[1:], strict=False):
        if (b - a).total_seconds() > limit:
            runs.append([])
        runs[-1].append(b)
    return runs


def _shade_gaps(fig: go.Figure, runs: list[list]) -> None:
    """A grey band, labelled, over each gap between ``runs`` of stored dates."""
    for before, after in zip(runs, runs[1:], strict=False):
        fig.add_vrect(
            x0=before[-1],
            x1=after[0],
            fillcolor="#9aa0a6",
            opacity=0.15,
            line_width=0,
            annotation_text="no stored scores",
            annotation_position="top left",
        )


def bands_over_time(data: ReportData, measure: str) -> go.Figure:
    """Accounts (``measure="accounts"``) or ARR (``"arr"``) per band at each stored date;
    a gap in stored history is shaded and left out, not bridged by a line."""
    dates = data.history_dates
    runs = history_runs(dates)
    title = "Accounts per band" if measure == "accounts" else "ARR per band"
    fig = go.Figure()
    for band in BANDS:
        by_date = {
            t[0]: (t[2] if measure == "accounts" else t[3])
            for t in data.band_history
            if t[1] == band
        }
        if not by_date:
            continue
        label = band_label(band, data.band_name)
        for i, run in enumerate(runs):
            fig.add_trace(
                go.Scatter(
                    x=run,
                    y=[by_date.get(x, 0) for x in run],
                    name=label,
                    legendgroup=label,  # one legend entry shows and hides every run
                    showlegend=i == 0,
                    # each run stacks on its own: a stack spanning the gap would draw
                    # the bands across the dates nothing was stored for
                    stackgroup=f"run{i}",
                    mode="lines" if len(run) > 1 else "markers",  # one date: no area
                    line={"color": BAND_COLOR[band], "width": 0.5},
                    fillcolor=BAND_COLOR[band],
                )
            )
    _shade_gaps(fig, runs)
    fig.update_layout(title=f"{title}, stored history ({len(dates)} dates)")
    return fig


def band_bars(data: ReportData) -> go.Figure:
    """ARR (or accounts, without ARR) per band now."""
    fig = go.Figure(
        go.Bar(
            x=[band_label(b.band, data.band_name) for b in data.bands],
            y=[b.arr if data.arr_known else b.accounts for b in data.bands],
            marker_color=[BAND_COLOR[b.band] for b in data.bands],
            text=[money(b.arr) if data.arr_known else str(b.accounts) for b in data.bands],
            textposition="auto",
            customdata=[[b.accounts, f"{b.share:.0%}"] for b in data.bands],
            hovertemplate="%{x}: %{y:,.0f}<br>%{customdata[0]} accounts (%{customdata[1]})"
            "<extra></extra>",
        )
    )
    fig.update_layout(
        title=("ARR" if data.arr_known else "Accounts") + f" per band as of {date_text(data.as_of)}"
    )
    return fig


def segment_bands(data: ReportData) -> go.Figure:
    """Accounts per band in each segment, stacked."""
    fig = go.Figure()
    for band in ("green", "yellow", "red"):
        fig.add_trace(
            go.Bar(
                y=[plotly_text(b.key or "(none)") for b in data.segments],
                x=[getattr(b, band) for b in data.segments],
                name=band_label(band, data.band_name),
                orientation="h",
                marker_color=BAND_COLOR[band],
            )
        )
    fig.update_layout(barmode="stack", title="Accounts per band and segment")
    return fig


def trend_classes(data: ReportData) -> go.Figure:
    """Accounts (and their ARR, on hover) per trend class."""
    fig = go.Figure(
        go.Bar(
            x=[c for c, _, _ in data.trend_counts],
            y=[n for _, n, _ in data.trend_counts],
            marker_color=[TREND_COLOR[c] for c, _, _ in data.trend_counts],
            text=[str(n) for _, n, _ in data.trend_counts],
            textposition="auto",
            customdata=[money(a) for _, _, a in data.trend_counts],
            hovertemplate="%{x}: %{y} accounts, ARR %{customdata}<extra></extra>",
        )
    )
    fig.update_layout(title=f"Accounts per trend class as of {date_text(data.history_as_of)}")
    return fig


# --- the backtest report --------------------------------------------------------------------


def roc_figure(curves) -> go.Figure:
    """ROC curves; ``curves`` holds (name, colour, labels, risk, dash) per model."""
    fig = go.Figure()
    for name, color, y, risk, dash in curves:
        roc = diagnostics.roc_points(y, risk)
        if roc is None:
            continue
        fig.add_trace(
            go.Scatter(
                x=roc.x,
                y=roc.y,
                mode="lines",
                name=f"{plotly_text(name)} (AUC {roc.area:.2f})",
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


def pr_figure(curves) -> go.Figure:
    """Precision-recall curves, same ``curves`` as :func:`roc_figure`, with the base rate."""
    fig = go.Figure()
    base = None
    for name, color, y, risk, dash in curves:
        pr = diagnostics.pr_points(y, risk)
        if pr is None:
            continue
        fig.add_trace(
            go.Scatter(
                x=pr.x,
                y=pr.y,
                mode="lines",
                line_shape="hv",
                name=f"{plotly_text(name)} (AP {pr.area:.2f})",
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


def lift_figure(result, labels: list[str], challenger) -> go.Figure:
    """Lift per score decile, riskiest first, per model and for the challenger."""
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
                name=plotly_text(name),
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


def probability_calibration(series) -> go.Figure:
    """Observed against predicted churn rate per probability bin; ``series`` holds
    (name, colour, probabilities, labels) per model and for the challenger."""
    fig = go.Figure()
    for name, color, p, y in series:
        x, rate, n = diagnostics.reliability(p, y)
        fig.add_trace(
            go.Scatter(
                x=x,
                y=rate,
                mode="lines+markers",
                name=plotly_text(name),
                line={"color": color},
                customdata=n,
                hovertemplate="predicted %{x:.1%}: observed %{y:.1%} of %{customdata} "
                "observations<extra></extra>",
            )
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
    return fig


def score_calibration(observations, labels: list[str], bands) -> go.Figure:
    """Observed churn rate per 10-point score bin, per model; dotted lines at the bands."""
    fig = go.Figure()
    for i, o in enumerate(observations):
        x, rate, n = diagnostics.rate_per_bin(o)
        fig.add_trace(
            go.Scatter(
                x=x,
                y=rate,
                mode="lines+markers",
                name=plotly_text(labels[i]),
                line={"color": [NEW_COLOR, OLD_COLOR][i]},
                customdata=n,
                hovertemplate="score %{x}: churn rate %{y:.1%} of %{customdata} "
                "observations<extra></extra>",
            )
        )
    for v in (bands.yellow, bands.green):
        fig.add_vline(x=v, line={"color": "#bbb", "dash": "dot"})
    fig.update_layout(
        title="Observed churn rate per score bin",
        xaxis_title="score (bin centre)",
        yaxis_title="churn rate within the horizon",
        xaxis={"range": [0, 100]},
        yaxis={"tickformat": ".0%"},
    )
    return fig


def score_distribution(obs, label: str, bands) -> go.Figure:
    """Scores of the observations that churned within the horizon and of the others."""
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
    for v in (bands.yellow, bands.green):
        fig.add_vline(x=v, line={"color": "#999", "dash": "dot"})
    fig.update_layout(
        barmode="overlay",
        title=f"Scores of churned vs retained observations, {plotly_text(label)}",
        xaxis_title="score",
        yaxis_title="% of the group",
        xaxis={"range": [0, 100]},
    )
    return fig


def weights_figure(
    changes: list[diagnostics.WeightChange], labels: list[str], names: dict[str, str] | None = None
) -> go.Figure:
    """Effective metric weights of the old and the new model, biggest change first; each
    metric named by ``names`` (key -> label), its key on hover."""
    names = names or {}
    metrics = [plotly_text(names.get(c.metric, c.metric)) for c in changes]
    keys = [plotly_text(c.metric) for c in changes]
    fig = go.Figure()
    for name, color, values in (
        (f"old: {labels[1]}", OLD_COLOR, [c.old or 0.0 for c in changes]),
        (f"new: {labels[0]}", NEW_COLOR, [c.new or 0.0 for c in changes]),
    ):
        fig.add_trace(
            go.Bar(
                y=metrics,
                x=[v * 100 for v in values],
                name=plotly_text(name),
                orientation="h",
                marker_color=color,
                customdata=keys,
                hovertemplate="%{y} (%{customdata}): %{x:.1f} %<extra></extra>",
            )
        )
    fig.update_layout(
        barmode="group",
        title="Effective metric weights, all accounts (%)",
        xaxis_title="weight (%)",
        yaxis={"autorange": "reversed"},
    )
    return fig


def importance_figure(
    importance: list[tuple[str, float]], names: dict[str, str] | None = None
) -> go.Figure:
    """The challenger's permutation importance: held-out ROC AUC lost per shuffled feature
    (each metric named by ``names``, key -> label; its key on hover)."""
    names = names or {}
    fig = go.Figure(
        go.Bar(
            y=[plotly_text(names.get(f, f)) for f, _ in importance],
            x=[v for _, v in importance],
            orientation="h",
            marker_color=CHALLENGER_COLOR,
            customdata=[plotly_text(f) for f, _ in importance],
            hovertemplate="%{y} (%{customdata}): %{x:+.3f}<extra></extra>",
        )
    )
    fig.update_layout(
        title="What the challenger relies on: held-out ROC AUC lost when a feature is shuffled",
        xaxis_title="ROC AUC drop",
        yaxis={"autorange": "reversed"},
    )
    return fig


# --- the dashboard's account page ---------------------------------------------------------


def score_history(points, bands, title: str, band_names=None) -> go.Figure:
    """One account's score over time, over its band zones: red below ``bands.yellow``,
    yellow up to ``bands.green``, green above. ``points`` holds (as_of, score, band)."""
    names = band_names or {}
    runs = history_runs([p[0] for p in points])
    # a gap in stored history breaks the line (a point with no value between two runs)
    # and is shaded, rather than joining two scores years apart
    by_date = {p[0]: p for p in points}
    shown = []
    for i, run in enumerate(runs):
        if i:
            last = runs[i - 1][-1]
            shown.append((last + (run[0] - last) / 2, None, None))
        shown += [by_date[d] for d in run]
    points = shown
    fig = go.Figure(
        go.Scatter(
            x=[p[0] for p in points],
            y=[p[1] for p in points],
            connectgaps=False,
            mode="lines+markers",
            name="score",
            line={"color": "#1f2933", "width": 2},
            customdata=[plotly_text(names.get(p[2], band_label(p[2]))) for p in points],
            hovertemplate="%{x|%Y-%m-%d}: %{y:.1f} (%{customdata})<extra></extra>",
        )
    )
    for band, lo, hi in (
        ("red", 0, bands.yellow),
        ("yellow", bands.yellow, bands.green),
        ("green", bands.green, 100),
    ):
        fig.add_hrect(y0=lo, y1=hi, fillcolor=BAND_COLOR[band], opacity=0.15, line_width=0)
    _shade_gaps(fig, runs)
    fig.update_layout(
        title=plotly_text(title), yaxis={"range": [0, 100], "title": "score"}, showlegend=False
    )
    return fig


def pillar_bars(pillars) -> go.Figure:
    """An account's pillar scores (0-100) with each pillar's weight on hover; ``pillars``
    holds (pillar, score, weight)."""
    fig = go.Figure(
        go.Bar(
            y=[plotly_text(p) for p, _, _ in pillars],
            x=[s if s is not None else 0 for _, s, _ in pillars],
            orientation="h",
            marker_color="#3c6fd6",
            text=["no data" if s is None else f"{s:.0f}" for _, s, _ in pillars],
            textposition="auto",
            customdata=[f"{w:.0%}" for _, _, w in pillars],
            hovertemplate="%{y}: %{x:.1f}, weight %{customdata}<extra></extra>",
        )
    )
    fig.update_layout(
        title="Pillar scores", xaxis={"range": [0, 100]}, yaxis={"autorange": "reversed"}
    )
    return fig
