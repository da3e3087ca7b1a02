"""The portfolio report: one self-contained HTML file for a customer-success team.

Place in the flow: in ``views``, above :mod:`healthscore.portfolio` (the data) and
:mod:`healthscore.views.charts` (the figures). :func:`render_report_html` fills the Jinja2
template ``templates/report.html`` with a :class:`healthscore.portfolio.ReportData`;
:func:`write_report` gathers, renders and writes the file. :func:`page_environment` is the
templates' environment, shared with :mod:`healthscore.views.backtest_report`.

The page holds plotly.js once and every chart as JSON: it opens offline and fetches
nothing. Autoescaping escapes everything from the data once for HTML;
:func:`healthscore.views.charts.plotly_text` escapes chart labels once for Plotly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

from healthscore.core.files import write_text_atomic
from healthscore.model import Model

# gather and ReportData are importable from here, as before the data moved to portfolio
from healthscore.portfolio import NO_HISTORY, ReportData, gather
from healthscore.store import Store
from healthscore.views.format import (
    date_text,
    isolate,
    metric_value,
    money,
    number,
    weight_text,
)

__all__ = [
    "ReportData",
    "ReportResult",
    "gather",
    "page_environment",
    "render_report_html",
    "write_page",
    "write_report",
]


@dataclass
class ReportResult:
    """What :func:`write_report` wrote and what the page contains."""

    path: Path
    as_of: datetime
    bytes: int
    charts: int
    accounts: int
    history_dates: int
    movers: int
    segments: int
    csms: int
    candidates: int
    candidates_source: str
    trend_classes: int
    warnings: list[str] = field(default_factory=list)
    left_out: str = ""  # "scored 866 of 1,000 accounts ...; left out: ..."

    def __str__(self) -> str:
        text = (
            f"wrote {self.path} ({self.bytes / 1e6:.1f} MB): {self.accounts:,} accounts as of "
            f"{self.as_of:%Y-%m-%d}, {self.charts} charts, {self.history_dates} stored dates, "
            f"{self.movers} movers, {self.segments} segments, {self.csms} CSMs, "
            f"{self.candidates} expansion candidates ({self.candidates_source}), "
            f"{self.trend_classes} trend classes"
        )
        return text + (f"\n{self.left_out}" if self.left_out else "")


def write_report(
    store: Store, model: Model, out: str | Path, as_of=None, *, top: int = 10
) -> ReportResult:
    """Write the portfolio report as of ``as_of`` (default: today, 00:00 UTC) to ``out``.

    Parameters
    ----------
    store, model
        The store (with stored history, see ``healthscore history``) and the model.
    out
        The HTML file to write; it embeds plotly.js and needs nothing else to open.
    as_of
        A date or timestamp (UTC); live scores are computed at it, movers and trends use
        the latest stored history date at or before it.
    top
        How many movers and expansion candidates to list.

    Returns
    -------
    ReportResult
        The path, the size, the counts per section and the warnings (also on the page).
    """
    data = gather(store, model, as_of, top=top)
    page, charts = render_report_html(data)
    path = write_page(page, out)
    return ReportResult(
        path=path,
        as_of=data.as_of,
        bytes=path.stat().st_size,
        charts=charts,
        accounts=data.accounts,
        history_dates=len(data.history_dates),
        movers=len(data.movers),
        segments=len(data.segments),
        csms=len(data.csms),
        candidates=data.candidates_total,
        candidates_source=data.candidates_source,
        trend_classes=sum(1 for _, n, _ in data.trend_counts if n),
        warnings=list(data.warnings),
        left_out=data.book.summary() if data.book else "",
    )


def write_page(page: str, out: str | Path) -> Path:
    """Write a rendered page to ``out``, atomically: a failure (a full disk, a folder that
    is not there) is an :class:`~healthscore.errors.OutputError` naming the file, and
    leaves the old page as it was, or no file."""
    path = Path(out)
    write_text_atomic(path, page, param="out")
    return path


def _finalize(value):
    """Every ``{{ value }}`` of the templates: None as nothing, and text holding
    bidirectional controls isolated (see :func:`healthscore.views.format.isolate`), so
    user text (names, labels, warnings) cannot visually reorder its neighbours. Markup
    (a macro's output, a chart) is ours and passes as it is."""
    if value is None:
        return ""
    if isinstance(value, str) and not hasattr(value, "__html__"):
        return isolate(value)
    return value


def _join(eval_ctx, value, d: str = "", attribute=None):
    """Jinja2's ``join`` with each text item isolated as ``{{ value }}`` isolates it: the
    built-in returns one escaped Markup string, which :func:`_finalize` passes as ours,
    so a rule's signal or a flag kind holding U+202E would reorder the items after it."""
    from jinja2.filters import do_join, make_attrgetter
    from markupsafe import Markup, escape

    if attribute is not None:
        value = map(make_attrgetter(eval_ctx.environment, attribute), value)
    items = [_finalize(v) for v in value]
    if not eval_ctx.autoescape:
        return do_join(eval_ctx, items, d)
    return escape(d).join(Markup(escape(v)) for v in items)  # each escaped, then marked


@cache
def page_environment():
    """The Jinja2 environment of the report templates: autoescaped, charts as Plotly JSON.

    ``None`` renders as nothing (a CSM not set is an empty cell) and text with
    bidirectional controls is isolated (:func:`_finalize`); the filters are the
    formatters of :mod:`healthscore.views.format`.
    """
    # jinja2 and plotly are imported by the first page written, not by every command
    from jinja2 import Environment, PackageLoader, StrictUndefined

    from healthscore.views.charts import chart_json

    env = Environment(
        loader=PackageLoader("healthscore.views"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=_finalize,
    )
    env.policies["json.dumps_function"] = chart_json
    env.policies["json.dumps_kwargs"] = {}
    from jinja2 import pass_eval_context

    env.filters.update(
        join=pass_eval_context(_join),
        money=money,
        number=number,
        metric_value=metric_value,
        date_text=date_text,
        weight_text=weight_text,
    )
    return env


def page_globals() -> dict:
    """What every page template needs besides its data: plotly.js and the time it is made."""
    from markupsafe import Markup

    from healthscore.views.charts import plotly_js

    # Markup: plotly.js is the library shipped with plotly, not data; it goes in as is
    return {"plotly_js": Markup(plotly_js()), "generated": datetime.now(UTC)}


def portfolio_charts(data: ReportData) -> dict:
    """The report's figures by slug, in page order; a section without data has none
    (the dashboard's portfolio page draws the same ones)."""
    from healthscore.views import charts

    out = {}
    if data.band_history:
        out["bands-over-time-accounts"] = charts.embed(
            charts.bands_over_time(data, "accounts"), "bands-over-time-accounts"
        )
        if data.arr_known:
            out["bands-over-time-arr"] = charts.embed(
                charts.bands_over_time(data, "arr"), "bands-over-time-arr"
            )
    out["arr-per-band"] = charts.embed(charts.band_bars(data), "arr-per-band")
    if data.segments:
        out["segments"] = charts.embed(
            charts.segment_bands(data), "segments", height=120 + 40 * len(data.segments)
        )
    if data.trend_counts:
        out["trends"] = charts.embed(charts.trend_classes(data), "trends")
    return out


def render_report_html(data: ReportData) -> tuple[str, int]:
    """The report page and the number of charts in it."""
    from healthscore.views.charts import BAND_COLOR

    drawn = portfolio_charts(data)
    page = (
        page_environment()
        .get_template("report.html")
        .render(
            data=data,
            charts=drawn,
            band_color=BAND_COLOR,
            no_history=NO_HISTORY,
            title=f"healthscore portfolio report, {date_text(data.as_of)}",
            **page_globals(),
        )
    )
    return page, len(drawn)


def _risk_section(data: ReportData) -> str:
    """ARR at risk by segment and by CSM (the ``_risk.html`` partial); empty without a
    probability."""
    return page_environment().get_template("_risk.html").render(data=data)
