"""The backtest report: one self-contained HTML file whose every chart draws offline."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

import healthscore as hs
from healthscore.cli import app
from healthscore.evaluate import backtest as bt
from healthscore.evaluate.challenger import CHALLENGER_ONLY
from healthscore.model import default_model_text
from healthscore.views import backtest_report as br

# the browser fixture and page helpers of the portfolio report's tests
from test_report import DRAWN, _open, _Page, browser, chart_labels  # noqa: F401

END = datetime(2025, 7, 1)
START, STOP = "2024-07-01", "2025-04-01"
EVIL_NAME = '<script>window.__pwned = 1</script>Old & "model"'
EVIL_SEGMENT = '<img src=x onerror="window.__pwned = 2">'
PROBABILITY = """
probability:
  outcome: churned
  horizon: 90d
  points: [[0, 0.4], [50, 0.08], [80, 0.01], [100, 0.0]]
"""
BAND_NAMES = "band_names: {green: healthy, yellow: watch, red: at risk}\n"


def _new_model_text() -> str:
    """The default model, touchpoints re-weighted and re-anchored, with a probability and
    its own names for the bands."""
    text = default_model_text().replace("name: default four-pillar model", "name: new model")
    text = text.replace(
        "days_since_touchpoint: {weight: 30, bad: 90, good: 14}",
        "days_since_touchpoint: {weight: 10, bad: 60, good: 14}",
    )
    return text + PROBABILITY + BAND_NAMES


def _old_model_text() -> str:
    text = default_model_text().replace("name: default four-pillar model", f"name: '{EVIL_NAME}'")
    return text.replace(
        "    smb:        {usage: 40, relationship: 15, support: 20, financial: 25}\n",
        "    smb:        {usage: 40, relationship: 15, support: 20, financial: 25}\n"
        f"    '{EVIL_SEGMENT}': {{usage: 50}}\n",
    )


@pytest.fixture(scope="module")
def project(demo_project):
    """A demo book, a new and an old model file, and the report the CLI wrote for them."""
    result = demo_project
    d = result.directory
    (d / "new.yaml").write_text(_new_model_text())
    (d / "old.yaml").write_text(_old_model_text())
    out = d / "backtest.html"
    args = ["backtest", "--db", str(result.db_path), "--model", str(d / "new.yaml")]
    args += ["--from", START, "--to", STOP, "--bootstrap", "50"]
    run = CliRunner().invoke(
        app,
        [*args, "--vs", str(d / "old.yaml"), "--challenger", "--out", str(out)],
        env={"COLUMNS": "200"},
    )
    assert run.exit_code == 0, run.output
    return d, result, run.output, out


@pytest.fixture(scope="module")
def page(project):
    return project[3].read_text(encoding="utf-8")


def test_cli_writes_the_report_and_prints_the_challenger(project):
    _, _, output, out = project
    assert f"wrote {out}" in output and "8 charts" in output
    assert "metrics changed weight or anchors" in output
    assert CHALLENGER_ONLY in output and "ROC AUC: challenger" in output
    assert "trained on the first half of the observation dates" in output
    relies = next(ln for ln in output.splitlines() if ln.startswith("what it relies on"))
    assert not re.search(r"\b[a-z]+(_[a-z0-9]+)+ [+-]\d", relies), relies  # labels, not keys


def test_report_has_every_section(page):
    for section in ("headline", "notes", "figures", "roc-pr", "lift", "calibration"):
        assert f"id='{section}'" in page
    for section in ("distributions", "weights", "challenger"):
        assert f"id='{section}'" in page
    for chart in ("roc", "pr", "lift", "calibration", "distribution-0", "distribution-1"):
        assert f'data-chart="{chart}"' in page
    assert 'data-chart="weights"' in page and 'data-chart="challenger-importance"' in page
    assert CHALLENGER_ONLY in page


def test_the_verdict_opens_the_report_and_the_riskiest_tenth_is_a_figure(page):
    import re

    verdict = re.search(r"<p class='verdict' id='verdict'><b>Verdict:</b> ([^<]+)</p>", page)
    # in the model's own band names ("At risk" for red), the churners first
    assert verdict and re.match(r"At risk caught \d+ of \d+ accounts that churned", verdict[1])
    assert "of those about to expand" in verdict[1]
    assert page.index("id='verdict'") < page.index("id='notes'") < page.index("id='figures'")
    assert "recall in the riskiest 10% of the book" in page


# a metric's cell: its label, with its key beside it and as the cell's title
TOUCHPOINT_CELL = (
    "<td title='days_since_touchpoint'><bdi>Days since last touchpoint</bdi> "
    "<small class='key'><bdi>days_since_touchpoint</bdi></small></td>"
)


def test_weight_change_table_shows_old_and_new(page):
    table = re.search(r"<table class='weight-changes'>.*?</table>", page, re.S).group(0)
    row = re.search(rf"<tr>{re.escape(TOUCHPOINT_CELL)}.*?</tr>", table).group(0)
    assert "bad 90, good 14" in row and "bad 60, good 14" in row  # old anchors, then new
    assert "down" in row  # its weight fell
    first = re.search(r"<tbody><tr><td title='([a-z_0-9]+)'>", table).group(1)
    assert first == "days_since_touchpoint"  # the biggest change first
    assert "<table class='segment-weights'>" in page and "<table class='pillar-weights'>" in page


def test_metrics_read_as_their_labels_with_the_key_beside_them(page):
    """As in the terminal and the portfolio report: the model's `label:`, not the key; the
    key stays on the page (beside the label, and on hover in the charts) for the file."""
    cells = _Page(page).cells
    shown = "Days since last touchpoint days_since_touchpoint"
    assert shown in cells["weight-changes"] and shown in cells["segment-weights"]
    assert "days_since_touchpoint" not in cells["weight-changes"]  # never the key alone
    assert TOUCHPOINT_CELL in page
    labels = chart_labels(page)
    assert "Days since last touchpoint" in labels  # a row of the weights chart
    assert "%{y} (%{customdata}): %{x:.1f} %<extra></extra>" in labels  # the key on hover
    # the challenger's features too: its chart and its riskiest accounts' "why"
    features = [s for s in labels if s in ("Seat activation", "Usage change (30 days)")]
    assert features, "the importance chart names its features by label"
    why = " ".join(cells["challenger-explanations"])
    assert re.search(r"\b[a-z]+_[a-z0-9_]+ = ", why) is None, why  # no key = value


def test_weight_changes_are_effective_weights_old_to_new():
    new, old = hs.load_model_text(_new_model_text()), hs.load_model_text(_old_model_text())
    changes = {c.metric: c for c in br.weight_changes(new, old)}
    assert changes["days_since_touchpoint"].old == pytest.approx(
        old.metric_weights()["days_since_touchpoint"]
    )
    assert changes["days_since_touchpoint"].new == pytest.approx(
        new.metric_weights()["days_since_touchpoint"]
    )
    assert sum(c.new for c in changes.values()) == pytest.approx(1.0)
    assert changes["late_invoices_90d"].change == pytest.approx(0.0)
    assert set(changes["nps_latest"].segments) == {"enterprise", "mid-market", "smb", EVIL_SEGMENT}


def test_bands_read_as_the_backtested_model_names_them(project, page):
    """The new model calls red "at risk": the flag, the figures, the bands and the
    challenger's table say so, on the page and in the terminal."""
    assert "<h3>churned (flag: at risk)</h3>" in page
    assert "<h3>expanded (flag: healthy)</h3>" in page
    assert "recall (at risk before churn)" in page
    cells = _Page(page).cells
    assert "at risk but renewed" in cells["figures"] and "red but renewed" not in cells["figures"]
    assert "Bands: healthy from 80 -> 80, watch from 50 -> 50 (unchanged)." in page
    bands = cells["challenger-explanations"][10::6]  # the band column, after the headers
    assert bands and set(bands) <= {"healthy", "watch", "at risk"}, bands
    output = " ".join(project[2].split())
    assert "churned (flag: at risk)" in output and "at risk but renewed" in output
    assert "accounts that churned which were at risk" in output


def test_calibration_uses_the_models_probability(page):
    assert "Calibration: observed vs predicted churn probability" in page
    assert "The model's probability is of churn within 90d" in page


def test_names_are_escaped(page):
    assert "<script>window.__pwned" not in page and "<img src=x" not in page
    # the entities Jinja's autoescape writes (&#34; for a double quote, as html.escape's &quot;)
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;Old &amp; &#34;model&#34;" in page
    assert "&lt;img src=x onerror=&#34;window.__pwned = 2&#34;&gt;" in page


def test_names_read_as_themselves_in_tables_and_charts(page):
    """Model labels and segment names are escaped once for HTML and once for Plotly."""
    cells = _Page(page).cells
    assert EVIL_NAME in cells["figures"]  # the old model's column
    assert EVIL_SEGMENT in cells["segment-weights"]
    labels = chart_labels(page)
    assert f"old: {EVIL_NAME}" in labels  # the weights chart's legend
    assert f"Scores of churned vs retained observations, {EVIL_NAME}" in labels
    assert any(s.startswith(f"{EVIL_NAME} (AUC ") for s in labels)
    twice = [s for s in labels if re.search(r"&(amp|lt|gt|quot|#\d+|#x[\da-f]+);", s)]
    assert twice == []


def test_report_loads_nothing_from_outside_the_file(page):
    assert not re.search(r"<script[^>]*\bsrc\s*=", page, re.I)
    assert not re.search(r"<link[^>]*\bhref\s*=", page, re.I)
    assert page.count("plotly.js v") == 1


@pytest.fixture(scope="module")
def single(project):
    """The old model alone, no challenger: no weights section, churn rate per score bin."""
    d, result, _, _ = project
    store = hs.connect(result.db_path)
    try:
        old = hs.load_model(d / "old.yaml")
        start, stop = datetime(2024, 7, 1), datetime(2025, 4, 1)
        r = bt.backtest(store, old, start, stop, every="1mo", reps=30)
        res = br.write_backtest_report(
            r, br.report_observations(store, r, [old]), d / "single.html", models=[old]
        )
    finally:
        store.con.disconnect()
    return res, (d / "single.html").read_text(encoding="utf-8")


def test_report_of_one_model_without_probability(single):
    res, page = single
    assert res.charts == 5 and res.models == 1 and not res.challenger
    assert "id='weights'" not in page and "id='challenger'" not in page
    assert "Observed churn rate per score bin" in page
    assert str(res).startswith(f"wrote {res.path}") and "5 charts" in str(res)


def test_cli_refuses_train_until_without_challenger(project):
    d, result, _, _ = project
    run = CliRunner().invoke(
        app,
        ["backtest", "--db", str(result.db_path), "--from", START, "--to", STOP]
        + ["--train-until", "2024-12-01"],
    )
    assert run.exit_code == 2 and "--train-until goes with --challenger" in run.output


# in a real browser --------------------------------------------------------------------


def _draws(browser, path: Path, charts: int):  # noqa: F811
    page, seen = _open(browser, path)
    try:
        page.wait_for_function(DRAWN, arg=charts, timeout=30_000)
        drawn = page.evaluate(
            """() => [...document.querySelectorAll('.chart')].map(c => {
                const g = c.querySelector('.js-plotly-plot');
                return {name: c.dataset.chart, svgs: g.querySelectorAll('.main-svg').length,
                        traces: g.data.length, drawn: g.querySelectorAll('g.trace').length};
            })"""
        )
        assert len(drawn) == charts
        for c in drawn:
            assert c["svgs"] >= 1 and c["traces"] >= 1 and c["drawn"] >= 1, c
        assert page.evaluate("() => window.__pwned") is None
        return page, seen
    except Exception:
        page.close()
        raise


def test_every_chart_draws_offline_in_headless_chromium(project, browser):  # noqa: F811
    page, seen = _draws(browser, project[3], 8)
    try:
        assert EVIL_NAME in page.locator("#headline h1").inner_text()
        assert EVIL_SEGMENT in page.locator("table.segment-weights").inner_text()
        assert page.locator("table.challenger-explanations tbody tr").count() == 10
        assert seen == {"errors": [], "requests": [], "dialogs": []}
    finally:
        page.close()


def test_chart_legends_read_as_the_model_names_in_chromium(project, browser):  # noqa: F811
    page, seen = _draws(browser, project[3], 8)
    try:
        legend = page.locator("#chart-weights text.legendtext").all_text_contents()
        assert f"old: {EVIL_NAME}" in legend, legend
        title = page.locator("#chart-distribution-1 text.gtitle").all_text_contents()
        assert title == [f"Scores of churned vs retained observations, {EVIL_NAME}"], title
        assert seen == {"errors": [], "requests": [], "dialogs": []}
    finally:
        page.close()


def test_single_model_report_draws_too(single, browser):  # noqa: F811
    res, _ = single
    page, seen = _draws(browser, res.path, 5)
    try:
        assert seen == {"errors": [], "requests": [], "dialogs": []}
    finally:
        page.close()


def test_the_challenger_table_gives_the_weighted_models_figure_set(page):
    cells = _Page(page).cells["challenger-figures"]
    flag = next(c for c in cells if c.startswith("flag list (")).partition(")")[0] + ")"
    assert flag.endswith("; the challenger: as many per date)")
    for label in (
        "recall in the riskiest 10% of the book",
        "recall in the riskiest 20% of the book",
        "lift, riskiest decile",
        f"{flag}: recall",
        f"{flag}: false-positive rate",
        f"{flag}: precision",
        f"{flag}: renewed anyway",
    ):
        row = cells[cells.index(label) : cells.index(label) + 4]
        assert row[1] not in ("-", "") and row[2] not in ("-", ""), row  # both have a figure
