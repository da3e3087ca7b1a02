"""The portfolio report: one self-contained HTML file that draws offline in a browser."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pyarrow as pa
import pytest
from typer.testing import CliRunner

import healthscore as hs
from healthscore.api import explain_change, history, run_demo
from healthscore.cli import app
from healthscore.engine.trends import classify
from healthscore.model import default_model_text
from healthscore.model.schema import BandNames
from healthscore.views import report as report_mod

END = datetime(2025, 7, 1)
EVIL_CSM = '<script>window.__pwned = 1</script>Ana & "Bo"'
EVIL_NAME = '<img src=x onerror="window.__pwned = 2"> Acme & Sons'
EVIL_SEGMENT = 'A&B <b>"east"</b>'  # the demo's mid-market, which the model gives no weights
EXPANSION_YAML = """
scorecards:
  expansion:
    description: Healthy accounts using most of their seats
    bands: {green: 70, yellow: 40}
    pillars:
      health: {weight: 50, metrics: {nps_latest: {weight: 1, bad: 6, good: 10}}}
      headroom: {weight: 50, metrics: {seat_activation: {weight: 1, bad: 0.5, good: 1.0}}}
"""


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A small demo book, 10 weeks stored; a CSM, a segment and the top mover's name are full
    of HTML."""
    result = run_demo(
        tmp_path_factory.mktemp("report"),
        accounts=80,
        months=6,
        seed=5,
        end=END,
        history_months=0,
        report=False,
    )
    store = hs.connect(result.db_path)
    history(store, result.model, END - timedelta(days=63), END, "1w")
    moved = [r for r in classify(store, result.model, END).to_pylist() if r["change"] is not None]
    top_mover = max(moved, key=lambda r: abs(r["change"]))["account_id"]
    acc = store.table("accounts").to_pyarrow()
    evil_csm = acc["csm"][0].as_py()
    csm = [EVIL_CSM if c == evil_csm else c for c in acc["csm"].to_pylist()]
    segments = [EVIL_SEGMENT if s == "mid-market" else s for s in acc["segment"].to_pylist()]
    names = [
        EVIL_NAME if a == top_mover else n
        for a, n in zip(acc["account_id"].to_pylist(), acc["name"].to_pylist(), strict=True)
    ]
    acc = acc.set_column(acc.schema.get_field_index("csm"), "csm", pa.array(csm))
    acc = acc.set_column(acc.schema.get_field_index("name"), "name", pa.array(names))
    acc = acc.set_column(acc.schema.get_field_index("segment"), "segment", pa.array(segments))
    store.load("accounts", acc)  # after history: stored scores keep the old CSM name
    yield result, store
    store.con.disconnect()


@pytest.fixture(scope="module")
def written(demo, tmp_path_factory):
    result, store = demo
    path = tmp_path_factory.mktemp("out") / "report.html"
    res = report_mod.write_report(store, result.model, path, END, top=6)
    return res, path.read_text(encoding="utf-8")


def test_report_has_every_section_and_says_what_it_holds(written):
    res, page = written
    assert res.charts == 5  # accounts and ARR over time, ARR per band, segments, trends
    assert res.history_dates == 10 and res.movers == 6 and res.trend_classes >= 2
    assert res.segments == 3 and res.csms >= 3
    # the one warning: this book's hostile segment name is not one the model names
    assert len(res.warnings) == 1, res.warnings
    assert res.warnings[0].startswith("segment values the model does not name")
    assert "A&B <b>" in res.warnings[0]
    for section in ("headline", "bands-over-time", "arr-per-band", "movers", "segments"):
        assert f"id='{section}'" in page
    for section in ("csms", "expansion", "trends"):
        assert f"id='{section}'" in page
    assert f"{res.accounts} accounts as of 2025-07-01, 5 charts" in str(res)
    assert res.bytes == len(page.encode()) and res.bytes > 1_000_000  # plotly.js is inside


def test_report_loads_nothing_from_outside_the_file(written):
    _, page = written
    assert not re.search(r"<script[^>]*\bsrc\s*=", page, re.I)
    assert not re.search(r"<link[^>]*\bhref\s*=", page, re.I)
    assert page.count("plotly.js v") == 1  # the library is embedded once


def test_names_with_html_are_escaped_everywhere(written):
    _, page = written
    assert "<script>window.__pwned" not in page and "<img src=x" not in page
    # the entities Jinja's autoescape writes (&#34; for a double quote, as html.escape's &quot;)
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;Ana &amp; &#34;Bo&#34;" in page
    assert "&lt;img src=x onerror=&#34;window.__pwned = 2&#34;&gt; Acme &amp; Sons" in page


class _Page(HTMLParser):
    """The text of each table cell (by the table's first class) and the chart scripts."""

    def __init__(self, page: str):
        super().__init__(convert_charrefs=True)
        self.cells: dict[str, list[str]] = {}
        self.scripts: list[str] = []
        self._table = self._cell = self._script = None
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._table = (dict(attrs).get("class") or "").split()[0]
        elif tag in ("td", "th") and self._table:
            self._cell = []
        elif tag == "script":
            self._script = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.cells.setdefault(self._table, []).append("".join(self._cell))
            self._cell = None
        elif tag == "script" and self._script is not None:
            text = "".join(self._script)
            if "Plotly.newPlot(" in text and "plotly.js v" not in text:
                self.scripts.append(text)
            self._script = None

    def handle_data(self, data):
        for part in (self._cell, self._script):
            if part is not None:
                part.append(data)


PLOTLY_ENTITIES = {"mu": "\u03bc", "amp": "&", "lt": "<", "gt": ">", "nbsp": "\xa0"}
PLOTLY_ENTITIES |= {"times": "\xd7", "plusmn": "\xb1", "deg": "\xb0"}


def plotly_shows(text: str) -> str:
    """What Plotly draws for a label: its entities decoded (plotly.js ``convertEntities``)."""

    def one(m):
        e = m.group(1)
        if e.startswith("#"):
            return chr(int(e[2:], 16) if e[1] == "x" else int(e[1:]))
        return PLOTLY_ENTITIES.get(e, m.group(0))

    return re.sub(r"&(#\d+|#x[\da-fA-F]+|[a-z]+);", one, text)


def chart_labels(page: str) -> set[str]:
    """Every string in the charts' JSON as Plotly shows it."""
    out = set()
    for script in _Page(page).scripts:
        for literal in re.findall(r'"(?:[^"\\]|\\.)*"', script):
            out.add(plotly_shows(json.loads(literal)))
    return out


def test_names_read_as_themselves_in_tables_and_charts(written):
    """A segment named "A&B" shows as A&B, not A&amp;B (escaped once for HTML, once for
    Plotly), and so do CSM and account names with HTML in them."""
    _, page = written
    cells = _Page(page).cells
    assert EVIL_SEGMENT in cells["breakdown"]  # the segment table (class "breakdown ...")
    assert EVIL_CSM in cells["breakdown"]
    assert EVIL_NAME in cells["movers"]
    labels = chart_labels(page)
    assert EVIL_SEGMENT in labels  # the segments chart's axis and hover
    twice = [s for s in labels if re.search(r"&(amp|lt|gt|quot|#\d+|#x[\da-f]+);", s)]
    assert twice == []


NAMED = {"green": "healthy", "yellow": "watch & wait", "red": "at risk"}


def test_bands_read_as_the_scorecard_names_them(demo, tmp_path):
    """A model's `band_names:` are what the page says, in the headline, the tables and
    the charts' legends and axes; the colours and the data keep green/yellow/red."""
    result, store = demo
    named = result.model.spec.model_copy(update={"band_names": BandNames(**NAMED)})
    model = hs.Model(named, result.model.file)
    assert model.version == result.model.version  # names are presentation: history applies
    report_mod.write_report(store, model, tmp_path / "named.html", END, top=6)
    page = (tmp_path / "named.html").read_text(encoding="utf-8")
    for band, name in NAMED.items():
        shown = name.replace("&", "&amp;")
        assert f"data-band='{band}'>{shown}<b>" in page  # the headline's figure per band
    assert "data-band='red'>red<b>" not in page
    headers = _Page(page).cells["breakdown"]
    assert {"healthy", "watch & wait", "at risk", "ARR at at risk"} <= set(headers)
    assert not {"green", "yellow", "red", "ARR at red"} & set(headers)
    badges = re.findall(r"<span class='band band-(\w+)'>([^<]*)</span>", page)
    assert badges, "movers and candidates show a band"
    for band, text in badges:  # the colour is the band's; the word is the scorecard's
        assert text == NAMED.get(band, "no data").replace("&", "&amp;"), (band, text)
    labels = chart_labels(page)
    assert set(NAMED.values()) <= labels  # the legends and the ARR per band axis
    assert not {"green", "yellow", "red"} & labels


def test_breakdowns_add_up_to_the_headline(demo):
    result, store = demo
    data = report_mod.gather(store, result.model, END)
    by_band = {b.band: b for b in data.bands}
    for groups in (data.segments, data.csms):
        assert sum(g.accounts for g in groups) == data.accounts
        assert sum(g.red for g in groups) == by_band["red"].accounts
        total_red_arr = sum(g.arr_red for g in groups)
        assert total_red_arr == pytest.approx(by_band["red"].arr)
    live = hs.score(store, result.model, END)
    assert data.accounts == live.num_rows
    assert sum(n for _, n, _ in data.trend_counts) == live.num_rows


def test_movers_are_the_largest_stored_changes_with_their_explain_change_line(demo):
    result, store = demo
    data = report_mod.gather(store, result.model, END, top=2)
    trends = classify(store, result.model, END).to_pylist()
    changes = sorted(abs(r["change"]) for r in trends if r["change"] is not None)
    assert [round(abs(m.change), 9) for m in data.movers] == [
        round(c, 9) for c in changes[::-1][:2]
    ]
    for m in data.movers:
        expected = explain_change(store, result.model, m.account_id, END, m.then_as_of)
        assert expected.summary() == f"{m.account_id} {m.explanation}"


def test_candidates_are_stable_high_accounts_without_an_expansion_scorecard(demo):
    result, store = demo
    model = hs.Model(result.model.spec.model_copy(update={"scorecards": {}}), result.model.file)
    assert model.version == result.model.version  # its stored history still applies
    data = report_mod.gather(store, model, END, top=1000)
    high = {r["account_id"] for r in classify(store, model, END, "stable_high").to_pylist()}
    assert data.candidates_source == "stable_high trend"
    assert {c.account_id for c in data.candidates} == high
    assert all(c.why and c.arr is not None for c in data.candidates)
    # the reasons read as the model's labels and units, not metric keys
    labels = {model.metric_label(m): m for _, m, _ in model.scored_metrics()}
    for c in data.candidates:
        for label, _, _, unit in c.why:
            assert label in labels and label != labels[label]
            assert unit == model.metric_unit(labels[label])


def test_candidates_are_green_on_the_expansion_scorecard_when_the_model_has_one(demo):
    result, store = demo
    model = result.model
    if "expansion" not in model.scorecard_names():
        model = hs.load_model_text(default_model_text() + EXPANSION_YAML)
    data = report_mod.gather(store, model, END, top=1000)
    green = hs.score(store, model.scorecard("expansion"), END).to_pylist()
    green = {r["account_id"] for r in green if r["band"] == "green"}
    assert data.candidates_source == "green on the expansion scorecard"
    assert {c.account_id for c in data.candidates} == green
    arrs = [c.arr for c in data.candidates]
    assert arrs == sorted(arrs, reverse=True)


def test_history_of_today_is_not_called_stale_later_that_day(demo):
    """History is stored at midnight; a portfolio as of 16:15 the same day (the service's
    as-of is now) reads it without a warning, while one as of the next day is told its
    movers are a day old."""
    result, store = demo

    def stale(d):
        data = report_mod.gather(store, result.model, d, top=3)
        assert data.history_as_of == END
        return [w for w in data.warnings if w.startswith("stored history ends on")]

    assert stale(END) == []
    assert stale(END + timedelta(hours=16, minutes=15)) == []
    [warning] = stale(END + timedelta(days=1, hours=1))
    assert "before the as-of date 2025-07-02" in warning


def test_report_without_stored_history_says_so_and_still_draws(demo, tmp_path):
    result, store = demo
    early = END - timedelta(days=120)  # before the first stored date
    res = report_mod.write_report(store, result.model, tmp_path / "r.html", early)
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert any(
        w.startswith("no stored history: run healthscore history first") for w in res.warnings
    )
    assert res.charts == 2 and res.movers == 0 and res.history_dates == 0
    assert "no stored history: run healthscore history first" in page
    assert "id='warnings'" in page


def test_cli_report_writes_the_file_and_prints_what_it_holds(demo, tmp_path):
    result, _ = demo
    out = tmp_path / "portfolio.html"
    base = ["report", "--db", str(result.db_path), "--model", str(result.model_path)]
    run = CliRunner().invoke(app, [*base, "--as-of", "2025-07-01", "--out", str(out), "--top", "3"])
    assert run.exit_code == 0, run.output
    assert f"wrote {out}" in run.output and "3 movers" in run.output
    assert out.stat().st_size > 1_000_000
    bad = CliRunner().invoke(app, [*base, "--out", str(out), "--top", "0"])
    assert bad.exit_code == 2
    gone = CliRunner().invoke(app, [*base, "--as-of", "2025-07-01", "--out", "/nonexistent/r.html"])
    assert gone.exit_code == 1 and "Error:" in gone.output and "Traceback" not in gone.output


# in a real browser --------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(browser):  # noqa: F811
    """The session's headless Chromium (conftest), under the name the report, backtest
    report and dashboard tests import from here."""
    return browser


def _open(browser, path: Path):
    """Open the file; every request that would leave it is aborted and recorded."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    seen = {"errors": [], "requests": [], "dialogs": []}
    page.on("console", lambda m: seen["errors"].append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))
    page.on("dialog", lambda d: (seen["dialogs"].append(d.message), d.dismiss()))

    def route(r):
        if r.request.url.startswith(("file:", "data:", "blob:", "about:")):
            r.continue_()
        else:
            seen["requests"].append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.goto(path.resolve().as_uri(), wait_until="load")
    return page, seen


DRAWN = """n => {
  const plots = [...document.querySelectorAll('.chart .js-plotly-plot')];
  return plots.length === n && plots.every(g =>
    g.querySelector('.main-svg') && g.querySelectorAll('g.trace path').length > 0);
}"""


def test_every_chart_draws_offline_in_headless_chromium(written, browser, tmp_path):
    res, page_html = written
    path = tmp_path / "report.html"
    path.write_text(page_html, encoding="utf-8")
    page, seen = _open(browser, path)
    try:
        page.wait_for_function(DRAWN, arg=res.charts, timeout=20_000)
        charts = page.evaluate(
            """() => [...document.querySelectorAll('.chart')].map(c => {
                const g = c.querySelector('.js-plotly-plot');
                return {name: c.dataset.chart, svgs: g.querySelectorAll('.main-svg').length,
                        traces: g.data.length, drawn: g.querySelectorAll('g.trace').length};
            })"""
        )
        assert len(charts) == res.charts == 5
        for c in charts:
            assert c["svgs"] >= 1 and c["traces"] >= 1 and c["drawn"] == c["traces"], c
        movers = page.locator("table.movers tbody tr")
        assert movers.count() == res.movers
        for i in range(res.movers):
            why = movers.nth(i).locator("td").last.inner_text()
            assert "->" in why and "(" in why, why
        assert EVIL_CSM in page.locator("table.breakdown-csm").inner_text()
        assert page.evaluate("() => window.__pwned") is None
        assert page.evaluate("() => typeof window.Plotly") == "object"
        assert seen == {"errors": [], "requests": [], "dialogs": []}
    finally:
        page.close()


def test_chart_labels_read_as_the_names_in_chromium(written, browser, tmp_path):
    res, page_html = written
    path = tmp_path / "report.html"
    path.write_text(page_html, encoding="utf-8")
    page, seen = _open(browser, path)
    try:
        page.wait_for_function(DRAWN, arg=res.charts, timeout=20_000)
        chart = page.locator("#chart-segments")
        ticks = chart.locator("g.ytick text").all_text_contents()
        assert EVIL_SEGMENT in ticks, ticks
        chart.scroll_into_view_if_needed()
        bars = chart.locator("g.point path")
        hovers = set()
        for i in range(bars.count()):
            box = bars.nth(i).bounding_box()
            if box and box["width"] > 1 and box["height"] > 1:
                page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
                # Plotly defers a hover that comes within HOVERMINTIME (50 ms) of the last
                # one: read the label after it, not the previous bar's
                page.wait_for_timeout(120)
                hovers.add(" / ".join(chart.locator(".hoverlayer text").all_text_contents()))
        assert any(EVIL_SEGMENT in h for h in hovers), hovers
        assert EVIL_SEGMENT in page.locator("table.breakdown-segment").inner_text()
        assert seen == {"errors": [], "requests": [], "dialogs": []}
    finally:
        page.close()


def test_report_without_history_draws_its_charts_too(demo, browser, tmp_path):
    result, store = demo
    path = tmp_path / "early.html"
    res = report_mod.write_report(store, result.model, path, END - timedelta(days=120))
    page, seen = _open(browser, path)
    try:
        page.wait_for_function(DRAWN, arg=res.charts, timeout=20_000)
        assert "run healthscore history first" in page.locator("#warnings").inner_text()
        assert seen == {"errors": [], "requests": [], "dialogs": []}
    finally:
        page.close()


def _gap_dates():
    """Monthly stored history through October 2024 (a backtest), then nothing until a
    service's daily rows of December 2026."""
    monthly = [datetime(2024, m, 1) for m in range(1, 11)]
    return monthly, [datetime(2026, 12, 1), datetime(2026, 12, 2), datetime(2026, 12, 3)]


def _shaded(fig) -> list[tuple]:
    return [(s.x0, s.x1) for s in fig.layout.shapes if s.type == "rect" and s.xref == "x"]


def test_a_gap_in_stored_history_is_shaded_not_bridged_in_the_band_charts():
    from types import SimpleNamespace

    from healthscore.views import charts

    before, after = _gap_dates()
    dates = before + after
    data = SimpleNamespace(
        history_dates=dates,
        band_history=[(d, b, 10, 1000.0) for d in dates for b in ("green", "yellow", "red")],
        band_name=lambda b: b,
    )
    for measure in ("accounts", "arr"):
        fig = charts.bands_over_time(data, measure)
        # no trace draws from October 2024 to December 2026
        for trace in fig.data:
            xs = list(trace.x)
            assert xs == before or xs == after, xs
        assert sum(t.showlegend is not False for t in fig.data) == 3  # one legend entry a band
        assert _shaded(fig) == [(before[-1], after[0])]
        assert [a.text for a in fig.layout.annotations] == ["no stored scores"]
    # a run of one date (a service's first daily row after the gap) is drawn as points
    data.history_dates = [*before, after[0]]
    fig = charts.bands_over_time(data, "accounts")
    assert {t.mode for t in fig.data if list(t.x) == [after[0]]} == {"markers"}
    # a week missed in weekly history is no gap
    weekly = [datetime(2024, 1, 1) + timedelta(weeks=w) for w in (0, 1, 2, 4, 5)]
    data.history_dates = weekly
    data.band_history = [(d, "green", 1, 1.0) for d in weekly]
    fig = charts.bands_over_time(data, "accounts")
    assert len(fig.data) == 1 and list(fig.data[0].x) == weekly and _shaded(fig) == []


def test_a_gap_in_stored_history_breaks_the_account_score_line():
    from healthscore.model.schema import Bands
    from healthscore.views import charts

    before, after = _gap_dates()
    points = [(d, 70.0, "yellow") for d in before] + [(d, 30.0, "red") for d in after]
    fig = charts.score_history(points, Bands(green=80, yellow=50), "ACME")
    ys = list(fig.data[0].y)
    # the line stops after October 2024 and starts again in December 2026
    assert ys == [70.0] * len(before) + [None] + [30.0] * len(after)
    xs = list(fig.data[0].x)
    assert before[-1] < xs[len(before)] < after[0]
    assert fig.data[0].connectgaps is False
    assert (before[-1], after[0]) in _shaded(fig)
