"""The portfolio report: one self-contained HTML file for a customer-success team.

Place in the flow: a consumer at the end, beside the CLI. :func:`gather` collects plain
data with the API (live scores at D, stored history and trend classes, the biggest
movers with their ``explain --vs`` line, expansion candidates); :func:`render_html`
turns it into one page; :func:`write_report` does both and writes the file.

The charts are Plotly figures with plotly.js embedded once, in the first chart: the
file opens offline and fetches nothing. Everything that comes from the data (account
and CSM names, segments) is HTML-escaped; in the charts Plotly's JSON escapes it.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import ibis

from healthscore.core.time import parse_as_of, today
from healthscore.engine import asof
from healthscore.engine.explain import Change, decompose
from healthscore.engine.history import SCORES
from healthscore.engine.metrics import in_force
from healthscore.engine.scoring import CONTRIB
from healthscore.errors import HealthscoreError
from healthscore.model import Model
from healthscore.store import Store

BANDS = ("green", "yellow", "red", None)  # None: no score (no data)
BAND_COLOR = {"green": "#2e9e5b", "yellow": "#e3b505", "red": "#d64545", None: "#9aa0a6"}
TREND_COLOR = {
    "rapid_decline": "#d64545",
    "gradual_decline": "#ef8a3c",
    "improving": "#3c8dd6",
    "stable_high": "#2e9e5b",
    "stable": "#9aa0a6",
}
EXPANSION = "expansion"
NO_HISTORY = "no stored history: run healthscore history first"


@dataclass
class BandRow:
    band: str | None
    accounts: int
    share: float
    arr: float | None


@dataclass
class Breakdown:
    """One segment's or one CSM's book: accounts, bands, average score, ARR at risk."""

    key: str | None
    accounts: int = 0
    green: int = 0
    yellow: int = 0
    red: int = 0
    no_score: int = 0
    score_sum: float = 0.0
    scored: int = 0
    arr: float = 0.0
    arr_red: float = 0.0

    @property
    def avg_score(self) -> float | None:
        return self.score_sum / self.scored if self.scored else None


@dataclass
class Mover:
    account_id: str
    name: str | None
    segment: str | None
    csm: str | None
    then_as_of: datetime
    score_then: float
    score_now: float
    band_now: str | None
    explanation: str

    @property
    def change(self) -> float:
        return self.score_now - self.score_then


@dataclass
class Candidate:
    account_id: str
    name: str | None
    segment: str | None
    csm: str | None
    arr: float | None
    score: float | None  # on the scorecard that made it a candidate
    health_score: float | None
    health_band: str | None
    why: list[tuple[str, object, float]]  # (metric, raw value, points)


@dataclass
class ReportData:
    """Everything the page shows, as plain data."""

    as_of: datetime
    model_label: str
    model_version: str
    scorecard: str
    accounts: int
    bands: list[BandRow]
    arr_known: bool
    history_as_of: datetime | None = None  # the stored date movers and trends use
    history_dates: list[datetime] = field(default_factory=list)
    # per stored date and band: accounts and ARR in force at that date
    band_history: list[tuple[datetime, str | None, int, float | None]] = field(default_factory=list)
    window: str = "30d"
    movers: list[Mover] = field(default_factory=list)
    segments: list[Breakdown] = field(default_factory=list)
    csms: list[Breakdown] = field(default_factory=list)
    candidates: list[Candidate] = field(default_factory=list)
    candidates_total: int = 0
    candidates_source: str = ""
    trend_counts: list[tuple[str, int, float | None]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # with the model's probability: what of (e.g. "churn within 90d") and ARR at risk
    risk_of: str | None = None
    risk_segments: list = field(default_factory=list)  # probability.RiskRow per segment
    risk_csms: list = field(default_factory=list)  # ... per CSM


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

    def __str__(self) -> str:
        return (
            f"wrote {self.path} ({self.bytes / 1e6:.1f} MB): {self.accounts:,} accounts as of "
            f"{self.as_of:%Y-%m-%d}, {self.charts} charts, {self.history_dates} stored dates, "
            f"{self.movers} movers, {self.segments} segments, {self.csms} CSMs, "
            f"{self.candidates} expansion candidates ({self.candidates_source}), "
            f"{self.trend_classes} trend classes"
        )


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
    page, charts = render_html(data)
    path = Path(out)
    try:
        path.write_text(page, encoding="utf-8")
    except OSError as e:
        raise HealthscoreError(f"{path}: cannot write the report ({e.strerror})") from None
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
    )


# gathering ----------------------------------------------------------------------------


def gather(store: Store, model: Model, as_of=None, *, top: int = 10) -> ReportData:
    """Collect what the report shows; executes queries, renders nothing."""
    d = parse_as_of(as_of) if as_of is not None else today()
    warnings = [str(w) for w in store.freshness(model, d)]
    live = asof.score(store, model, d).to_pylist()
    arr_now = _arr_in_force(store, d)
    if arr_now is None:
        warnings.append("no subscription has an ARR: ARR figures are left out")
    accounts = _accounts(store)
    data = ReportData(
        as_of=d,
        model_label=model.label,
        model_version=model.version,
        scorecard=model.scorecard_name,
        accounts=len(live),
        bands=_bands(live, arr_now),
        arr_known=arr_now is not None,
        window=model.spec.trends.rapid_decline.within,
        warnings=warnings,
    )
    if not live:
        warnings.append(f"no account is scored as of {d:%Y-%m-%d}")
    data.segments = _breakdown(live, "segment", arr_now)
    data.csms = _breakdown(live, "csm", arr_now)
    if model.spec.probability is not None:
        from healthscore.evaluate.probability import arr_at_risk

        data.risk_of = model.spec.probability.describe()
        data.risk_segments = arr_at_risk(live, "segment", arr_now)
        data.risk_csms = arr_at_risk(live, "csm", arr_now)
    trends = _history(store, model, d, data)
    if trends is not None:
        data.movers = _movers(store, model, trends, accounts, top, data)
        counts: dict[str, list] = {c: [0, 0.0] for c in TREND_COLOR}
        for r in trends:
            counts[r["trend"]][0] += 1
            counts[r["trend"]][1] += (arr_now or {}).get(r["account_id"], 0.0)
        data.trend_counts = [
            (c, n, a if arr_now is not None else None) for c, (n, a) in counts.items()
        ]
    _candidates(store, model, d, live, trends, accounts, arr_now, top, data)
    return data


def _accounts(store: Store) -> dict[str, dict]:
    acc = store.table("accounts").select("account_id", "name", "segment", "csm")
    return {r["account_id"]: r for r in acc.to_pyarrow().to_pylist()}


def _subscriptions(store: Store):
    subs = store.table("subscriptions")
    subs = subs.filter(subs.arr.notnull())
    if not store.execute(subs.select("arr").limit(1)).num_rows:
        return None
    return subs


def _arr_in_force(store: Store, d: datetime) -> dict[str, float] | None:
    """ARR per account: the sum over its subscriptions in force at ``d``."""
    subs = _subscriptions(store)
    if subs is None:
        return None
    subs = subs.filter(in_force(subs, "subscriptions", ibis.literal(d, type="timestamp")))
    per = subs.group_by("account_id").aggregate(arr=subs.arr.sum())
    rows = store.execute(per).to_pylist()
    return {r["account_id"]: float(r["arr"]) for r in rows}


def _bands(live: list[dict], arr: dict[str, float] | None) -> list[BandRow]:
    n = len(live)
    out = []
    for band in BANDS:
        rows = [r for r in live if r["band"] == band]
        if band is None and not rows:
            continue
        total = sum(arr.get(r["account_id"], 0.0) for r in rows) if arr is not None else None
        out.append(BandRow(band, len(rows), len(rows) / n if n else 0.0, total))
    return out


def _breakdown(live: list[dict], key: str, arr: dict[str, float] | None) -> list[Breakdown]:
    groups: dict[str | None, Breakdown] = {}
    for r in live:
        b = groups.setdefault(r[key], Breakdown(r[key]))
        b.accounts += 1
        band = r["band"] if r["band"] in ("green", "yellow", "red") else "no_score"
        setattr(b, band, getattr(b, band) + 1)
        if r["score"] is not None:
            b.score_sum += r["score"]
            b.scored += 1
        a = (arr or {}).get(r["account_id"], 0.0)
        b.arr += a
        if r["band"] == "red":
            b.arr_red += a
    return sorted(groups.values(), key=lambda b: (-b.arr_red, -b.red, str(b.key)))


def _history(store: Store, model: Model, d: datetime, data: ReportData) -> list[dict] | None:
    """Band counts per stored date and the trend classes; None when nothing is stored."""
    from healthscore.engine.trends import trends_expr

    if SCORES not in store.list_tables():
        data.warnings.append(NO_HISTORY)
        return None
    s = store.stored(SCORES)
    mine = s.filter(
        (s.model_version == model.version),
        (s.scorecard == model.scorecard_name),
        s.as_of <= ibis.literal(d, type="timestamp"),
    )
    dates = sorted(store.execute(mine.select("as_of").distinct())["as_of"].to_pylist())
    if not dates:
        others = store.execute(s.select("model_version").distinct())["model_version"]
        hint = (
            f" (stored history is for other model versions: "
            f"{', '.join(sorted(v[:12] for v in others.to_pylist()))})"
            if len(others)
            else ""
        )
        data.warnings.append(
            f"{NO_HISTORY} for model {model.version[:12]} up to {d:%Y-%m-%d}{hint}, e.g. "
            f"healthscore history --from <date> --to {d:%Y-%m-%d} --every 1w"
        )
        return None
    last = dates[-1]
    data.history_dates = dates
    data.history_as_of = last
    if last < d:
        data.warnings.append(
            f"stored history ends on {last:%Y-%m-%d}, before the as-of date {d:%Y-%m-%d}: "
            f"movers and trends are as of {last:%Y-%m-%d} (healthscore history --to "
            f"{d:%Y-%m-%d} brings it up to date)"
        )
    counts = mine.group_by(["as_of", "band"]).aggregate(accounts=mine.count())
    arr: dict[tuple, float] = {}
    subs = _subscriptions(store)
    if subs is not None:
        keys = mine.select("account_id", "as_of", "band")
        subs = subs.select(
            sub_account=subs.account_id,
            start_date=subs.start_date,
            end_date=subs.end_date,
            arr=subs.arr,
        )
        j = keys.inner_join(
            subs, [keys.account_id == subs.sub_account, in_force(subs, "subscriptions", keys.as_of)]
        )
        per = j.group_by(["as_of", "band"]).aggregate(arr=j.arr.sum())
        arr = {(r["as_of"], r["band"]): float(r["arr"]) for r in store.execute(per).to_pylist()}
    rows = store.execute(counts).to_pylist()
    data.band_history = sorted(
        (
            (
                r["as_of"],
                r["band"],
                int(r["accounts"]),
                arr.get((r["as_of"], r["band"]), 0.0) if subs is not None else None,
            )
            for r in rows
        ),
        key=lambda t: (t[0], BANDS.index(t[1]) if t[1] in BANDS else len(BANDS)),
    )
    return store.execute(trends_expr(store, model, last)).to_pylist()


def _movers(store, model, trends, accounts, top, data: ReportData) -> list[Mover]:
    """The largest score changes over the rapid-decline window, each with why it moved."""
    moved = [r for r in trends if r["change"] is not None and r["score_then"] is not None]
    moved.sort(key=lambda r: (-abs(r["change"]), r["account_id"]))
    moved = moved[:top]
    changes = _changes(store, model, data.history_as_of, moved)
    out = []
    for r in moved:
        acc = accounts.get(r["account_id"], {})
        try:
            change = changes.get(r["account_id"]) or asof.explain_change(
                store, model, r["account_id"], data.history_as_of, r["then_as_of"]
            )
            why = change.summary().removeprefix(f"{r['account_id']} ")
        except HealthscoreError as e:
            why = f"not explained: {e}"
        out.append(
            Mover(
                account_id=r["account_id"],
                name=acc.get("name"),
                segment=acc.get("segment"),
                csm=acc.get("csm"),
                then_as_of=r["then_as_of"],
                score_then=r["score_then"],
                score_now=r["score_now"],
                band_now=r["band"],
                explanation=why,
            )
        )
    return out


def _changes(store, model, now: datetime, moved: list[dict]) -> dict[str, Change]:
    """What ``explain_change`` gives per mover, from the stored history (what was seen then).

    Two reads for all movers; a pair not stored is left out, and
    :func:`healthscore.engine.asof.explain_change` then scores it live or says why it cannot.
    """
    from healthscore.engine.history import stored_explanations

    ids = [r["account_id"] for r in moved]
    if not ids:
        return {}
    seen = stored_explanations(store, model, ids, {now, *(r["then_as_of"] for r in moved)})
    out = {}
    for r in moved:
        acc = r["account_id"]
        before, after = seen.get((acc, r["then_as_of"])), seen.get((acc, now))
        if before is not None and after is not None:
            out[acc] = decompose(before, after)
    return out


def _candidates(store, model, d, live, trends, accounts, arr, top, data: ReportData) -> None:
    """Green on the ``expansion`` scorecard if the model has one, else ``stable_high``."""
    if EXPANSION in model.scorecard_names():
        card = model.scorecard(EXPANSION)
        data.candidates_source = "green on the expansion scorecard"
        try:
            rows = [r for r in asof.score(store, card, d).to_pylist() if r["band"] == "green"]
        except HealthscoreError as e:
            data.warnings.append(f"expansion scorecard not scored: {e}")
            return
    else:
        card = model
        data.candidates_source = "stable_high trend"
        if trends is None:
            return
        high = {r["account_id"] for r in trends if r["trend"] == "stable_high"}
        rows = [r for r in live if r["account_id"] in high]
    health = {r["account_id"]: r for r in live}
    found = []
    for r in rows:
        acc = accounts.get(r["account_id"], {})
        h = health.get(r["account_id"], {})
        found.append(
            Candidate(
                account_id=r["account_id"],
                name=acc.get("name"),
                segment=r.get("segment"),
                csm=r.get("csm"),
                arr=arr.get(r["account_id"], 0.0) if arr is not None else None,
                score=r["score"],
                health_score=h.get("score"),
                health_band=h.get("band"),
                why=_top_contributions(card, r),
            )
        )
    found.sort(key=lambda c: (-(c.arr or 0.0), -(c.score or 0.0), c.account_id))
    data.candidates_total = len(found)
    data.candidates = found[:top]


def _top_contributions(model: Model, row: dict, n: int = 3) -> list[tuple[str, object, float]]:
    lines = [(m, row.get(m), row.get(m + CONTRIB) or 0.0) for _, m, _ in model.scored_metrics()]
    lines.sort(key=lambda t: (-t[2], t[0]))
    return [t for t in lines[:n] if t[2] > 0]


# rendering ------------------------------------------------------------------------------


def esc(value) -> str:
    """Text for HTML: ``None`` shows as empty, everything else is escaped.

    >>> esc('<script>alert("x")</script> & co')
    '&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co'
    """
    return "" if value is None else html.escape(str(value), quote=True)


def money(v: float | None) -> str:
    """ARR, short: 1.2M, 350k, 900.

    >>> [money(v) for v in (1_234_567, 350_400, 900, None)]
    ['1.23M', '350k', '900', '-']
    """
    if v is None:
        return "-"
    if abs(v) >= 1e6:
        return f"{v / 1e6:.3g}M"
    if abs(v) >= 1e3:
        return f"{v / 1e3:.3g}k"
    return f"{v:.0f}"


def _num(v: float | None, fmt: str = ".1f") -> str:
    return "-" if v is None else format(v, fmt)


def _band_label(band: str | None) -> str:
    return band or "no score"


def _band_cell(band: str | None) -> str:
    return f'<span class="band band-{esc(band or "none")}">{esc(_band_label(band))}</span>'


def _raw(v) -> str:
    if isinstance(v, float):
        return f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"
    return "none" if v is None else str(v)


class _Charts:
    """Plotly figures as HTML: plotly.js goes into the first one only."""

    def __init__(self):
        self.count = 0

    def __call__(self, fig, slug: str, height: int = 360) -> str:
        import plotly.io as pio

        fig.update_layout(
            template="plotly_white",
            height=height,
            margin={"l": 60, "r": 20, "t": 40, "b": 50},
            legend={"orientation": "h", "y": -0.18},
            font={"family": "system-ui, sans-serif", "size": 12},
        )
        div = pio.to_html(
            fig,
            include_plotlyjs=self.count == 0,
            full_html=False,
            div_id=f"chart-{slug}",
            default_height=f"{height}px",
            config={"displaylogo": False, "responsive": True},
        )
        self.count += 1
        return f'<div class="chart" data-chart="{esc(slug)}">{div}</div>'


def render_html(data: ReportData) -> tuple[str, int]:
    """The report page and the number of charts in it."""
    import plotly.graph_objects as go

    chart = _Charts()
    parts = [_head(data), _headline(data), _warnings(data.warnings)]

    parts.append("<section id='bands-over-time'><h2>Band distribution over time</h2>")
    if data.band_history:
        dates = data.history_dates
        for measure, title in (("accounts", "Accounts per band"), ("arr", "ARR per band")):
            if measure == "arr" and not data.arr_known:
                continue
            fig = go.Figure()
            for band in BANDS:
                by_date = {
                    t[0]: (t[2] if measure == "accounts" else t[3])
                    for t in data.band_history
                    if t[1] == band
                }
                if not by_date:
                    continue
                fig.add_trace(
                    go.Scatter(
                        x=dates,
                        y=[by_date.get(x, 0) for x in dates],
                        name=_band_label(band),
                        stackgroup="one",
                        mode="lines",
                        line={"color": BAND_COLOR[band], "width": 0.5},
                        fillcolor=BAND_COLOR[band],
                    )
                )
            fig.update_layout(title=f"{title}, stored history ({len(dates)} dates)")
            parts.append(chart(fig, f"bands-over-time-{measure}"))
    else:
        parts.append(_missing(NO_HISTORY))
    parts.append("</section>")

    parts.append("<section id='arr-per-band'><h2>ARR per band now</h2>")
    fig = go.Figure(
        go.Bar(
            x=[_band_label(b.band) for b in data.bands],
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
        title=("ARR" if data.arr_known else "Accounts") + f" per band as of {data.as_of:%Y-%m-%d}"
    )
    parts.append(chart(fig, "arr-per-band"))
    parts.append("</section>")

    parts.append(_movers_section(data))

    parts.append("<section id='segments'><h2>By segment</h2>")
    if data.segments:
        fig = go.Figure()
        for band in ("green", "yellow", "red"):
            fig.add_trace(
                go.Bar(
                    y=[esc(b.key or "(none)") for b in data.segments],
                    x=[getattr(b, band) for b in data.segments],
                    name=band,
                    orientation="h",
                    marker_color=BAND_COLOR[band],
                )
            )
        fig.update_layout(barmode="stack", title="Accounts per band and segment")
        parts.append(chart(fig, "segments", height=120 + 40 * len(data.segments)))
    parts.append(_breakdown_table(data.segments, "segment", data.arr_known))
    parts.append("</section>")

    parts.append("<section id='csms'><h2>By CSM</h2>")
    parts.append(_breakdown_table(data.csms, "CSM", data.arr_known))
    parts.append("</section>")

    parts.append(_risk_section(data))

    parts.append(_candidates_section(data))

    parts.append("<section id='trends'><h2>Trend classes</h2>")
    if data.trend_counts:
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
        fig.update_layout(title=f"Accounts per trend class as of {data.history_as_of:%Y-%m-%d}")
        parts.append(chart(fig, "trends"))
    else:
        parts.append(_missing(NO_HISTORY))
    parts.append("</section>")

    parts.append(
        f"<footer>healthscore report, model {esc(data.model_label)} "
        f"{esc(data.model_version[:12])}, generated "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC</footer></main></body></html>\n"
    )
    return "\n".join(parts), chart.count


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1f2933;
background:#f6f7f9}
main{max-width:1200px;margin:0 auto;padding:24px}
section{background:#fff;border-radius:8px;padding:16px 20px;margin:16px 0;
box-shadow:0 1px 2px rgba(0,0,0,.08)}
h1{margin:0 0 4px}h2{margin:0 0 12px;font-size:1.2em}
.sub{color:#5f6b7a}
.kpis{display:flex;flex-wrap:wrap;gap:12px;margin-top:12px}
.kpi{flex:1 1 160px;border-left:6px solid #9aa0a6;padding:8px 12px;background:#fafbfc}
.kpi b{display:block;font-size:1.6em}
table{border-collapse:collapse;width:100%;font-size:.92em}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #e4e7eb;vertical-align:top}
th{background:#f0f2f5}td:first-child{white-space:nowrap}td.n,th.n{text-align:right;white-space:nowrap}
.band{padding:1px 6px;border-radius:8px;color:#fff;font-size:.9em;white-space:nowrap}
.band-green{background:#2e9e5b}.band-yellow{background:#c99c00}.band-red{background:#d64545}
.band-none{background:#9aa0a6}
.up{color:#2e7d32}.down{color:#c62828}
.warnings{background:#fff7e0;border-left:6px solid #e3b505}
.missing{color:#8a6d00;font-style:italic}
.why{color:#3e4c59;font-size:.95em}
footer{color:#7b8794;font-size:.85em;text-align:center;margin:16px 0}
"""


def _head(data: ReportData) -> str:
    title = f"healthscore portfolio report, {data.as_of:%Y-%m-%d}"
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body><main>"
    )


def _headline(data: ReportData) -> str:
    card = "" if data.scorecard == "health" else f", scorecard {data.scorecard}"
    total_arr = sum(b.arr or 0.0 for b in data.bands) if data.arr_known else None
    kpis = [
        f"<div class='kpi'>accounts<b>{data.accounts:,}</b>"
        + (f"ARR {esc(money(total_arr))}" if total_arr is not None else "")
        + "</div>"
    ]
    for b in data.bands:
        arr = f", ARR {esc(money(b.arr))}" if b.arr is not None else ""
        kpis.append(
            f"<div class='kpi' style='border-color:{BAND_COLOR[b.band]}' "
            f"data-band='{esc(b.band or 'none')}'>{esc(_band_label(b.band))}"
            f"<b>{b.accounts:,}</b>{b.share:.0%} of accounts{arr}</div>"
        )
    hist = (
        f"; stored history {data.history_dates[0]:%Y-%m-%d} to {data.history_dates[-1]:%Y-%m-%d}"
        f" ({len(data.history_dates)} dates)"
        if data.history_dates
        else ""
    )
    return (
        "<section id='headline'><h1>Portfolio health</h1>"
        f"<div class='sub'>as of {data.as_of:%Y-%m-%d %H:%M} UTC; model "
        f"{esc(data.model_label)} ({esc(data.model_version[:12])}){esc(card)}{esc(hist)}</div>"
        f"<div class='kpis'>{''.join(kpis)}</div></section>"
    )


def _warnings(warnings: list[str]) -> str:
    if not warnings:
        return ""
    items = "".join(f"<li>{esc(w)}</li>" for w in warnings)
    return f"<section class='warnings' id='warnings'><h2>Warnings</h2><ul>{items}</ul></section>"


def _missing(text: str) -> str:
    return f"<p class='missing'>{esc(text)}</p>"


def _table(headers: Iterable[str], rows: list[list[str]], numeric: set[int], cls: str) -> str:
    head = "".join(
        f"<th class='n'>{esc(h)}</th>" if i in numeric else f"<th>{esc(h)}</th>"
        for i, h in enumerate(headers)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f"<td class='n'>{c}</td>" if i in numeric else f"<td>{c}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table class='{cls}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _movers_section(data: ReportData) -> str:
    out = [f"<section id='movers'><h2>Biggest movers over the last {esc(data.window)}</h2>"]
    if data.history_as_of is None:
        out.append(_missing(NO_HISTORY))
    elif not data.movers:
        out.append(_missing("no account has a stored score that far back"))
    else:
        out.append(
            f"<p class='sub'>From stored history as of {data.history_as_of:%Y-%m-%d}; why it "
            "moved is <code>healthscore explain ACCOUNT --vs</code>, computed from the current "
            "data at both dates.</p>"
        )
        rows = []
        for m in data.movers:
            arrow = "up" if m.change > 0 else "down"
            rows.append(
                [
                    esc(m.account_id),
                    esc(m.name),
                    esc(m.segment),
                    esc(m.csm),
                    f"{_num(m.score_then)} <span class='sub'>({m.then_as_of:%Y-%m-%d})</span>",
                    _num(m.score_now),
                    f"<span class='{arrow}'>{m.change:+.1f}</span>",
                    _band_cell(m.band_now),
                    f"<span class='why'>{esc(m.explanation)}</span>",
                ]
            )
        out.append(
            _table(
                ["account", "name", "segment", "CSM", "then", "now", "change", "band", "why"],
                rows,
                {4, 5, 6},
                "movers",
            )
        )
    out.append("</section>")
    return "\n".join(out)


def _breakdown_table(groups: list[Breakdown], what: str, arr_known: bool) -> str:
    if not groups:
        return _missing("no accounts scored")
    headers = [what, "accounts", "avg score", "green", "yellow", "red"]
    if arr_known:
        headers += ["ARR", "ARR at red"]
    rows = []
    for b in groups:
        row = [
            esc(b.key if b.key is not None else "(none)"),
            str(b.accounts),
            _num(b.avg_score),
            str(b.green),
            str(b.yellow),
            str(b.red),
        ]
        if arr_known:
            row += [esc(money(b.arr)), esc(money(b.arr_red))]
        rows.append(row)
    return _table(headers, rows, set(range(1, len(headers))), f"breakdown breakdown-{what.lower()}")


def _risk_section(data: ReportData) -> str:
    """ARR at risk by segment and by CSM: Σ probability x ARR (only with a probability)."""
    if data.risk_of is None:
        return ""
    out = ["<section id='arr-at-risk'><h2>ARR at risk by segment and by CSM</h2>"]
    expected = sum(r.expected for r in data.risk_segments)
    at_risk = sum(r.arr_at_risk or 0.0 for r in data.risk_segments)
    out.append(
        f"<p class='sub'>The model's calibrated probability of {esc(data.risk_of)} per "
        f"account: expected {expected:,.1f} accounts"
        + (f", ARR at risk {esc(money(at_risk))} (Σ probability × ARR)" if data.arr_known else "")
        + ".</p>"
    )
    for groups, what in ((data.risk_segments, "segment"), (data.risk_csms, "CSM")):
        headers = [what, "accounts", f"expected ({data.risk_of.split()[0]})"]
        if data.arr_known:
            headers += ["ARR", "ARR at risk", "share"]
        rows = []
        for r in groups:
            row = [esc(r.group if r.group is not None else "(none)"), str(r.accounts)]
            row.append(f"{r.expected:,.1f}")
            if data.arr_known:
                share = "-" if r.share is None else f"{r.share:.1%}"
                row += [esc(money(r.arr)), esc(money(r.arr_at_risk)), share]
            rows.append(row)
        out.append(_table(headers, rows, set(range(1, len(headers))), f"risk risk-{what.lower()}"))
    out.append("</section>")
    return "\n".join(out)


def _candidates_section(data: ReportData) -> str:
    out = ["<section id='expansion'><h2>Expansion candidates</h2>"]
    if data.candidates_source == "stable_high trend" and data.history_as_of is None:
        out.append(_missing(NO_HISTORY + " (candidates are the stable_high trend class)"))
    elif not data.candidates:
        out.append(_missing(f"no candidates ({data.candidates_source})"))
    else:
        more = data.candidates_total - len(data.candidates)
        out.append(
            f"<p class='sub'>{data.candidates_total} accounts {esc(data.candidates_source)}, "
            f"by ARR{f'; the first {len(data.candidates)} shown' if more else ''}. Why: the "
            "metrics that earn the most points.</p>"
        )
        rows = []
        for c in data.candidates:
            why = ", ".join(f"{m} = {_raw(raw)} ({pts:+.1f})" for m, raw, pts in c.why)
            rows.append(
                [
                    esc(c.account_id),
                    esc(c.name),
                    esc(c.segment),
                    esc(c.csm),
                    esc(money(c.arr)),
                    _num(c.score),
                    f"{_num(c.health_score)} {_band_cell(c.health_band)}",
                    f"<span class='why'>{esc(why)}</span>",
                ]
            )
        out.append(
            _table(
                ["account", "name", "segment", "CSM", "ARR", "score", "health", "why"],
                rows,
                {4, 5},
                "candidates",
            )
        )
    out.append("</section>")
    return "\n".join(out)
