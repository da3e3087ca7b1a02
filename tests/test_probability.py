"""Churn probability: fitted out of sample, monotone, scored, stored, shown; ARR at risk.

The constructed book: 1,500 accounts scored from a column, 300 at each score 10, 30, 50,
70 and 90. Each churns within the 90 days after 2025-01-01 with a known probability
that falls with the score (a logistic curve, ``TRUE``); every other account renews on
2025-04-01, the day that horizon closes.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta

import numpy as np
import pytest
from typer.testing import CliRunner

import healthscore as hs
from fixtures import AS_OF, memory_store, outcome_book
from healthscore.cli import app
from healthscore.engine.history import SCORES
from healthscore.evaluate import probability as prob

BOOK_MODEL = """\
# scores straight from a column
columns: {accounts: {hint: float64}}
metrics:
  hint: {column: hint}
pillars:
  p: {weight: 1, metrics: {hint: {weight: 1, bad: 0, good: 100}}}
"""
LEVELS = (10, 30, 50, 70, 90)
PER_LEVEL = 300
D0, CLOSED = datetime(2025, 1, 1), datetime(2025, 4, 1)  # D0 + 90 days = CLOSED


def TRUE(score: float) -> float:
    """The churn probability the book is drawn from."""
    return 1 / (1 + math.exp(-(2 - 0.06 * score)))


def _book(path, *, perturb: bool = False):
    """The book; ``perturb`` adds outcomes after 2025-04-01 (churns of healthy accounts)."""
    rng = np.random.default_rng(11)
    ids, hints, rows = [], [], []
    for level in LEVELS:
        for i in range(PER_LEVEL):
            acc = f"L{level}-{i:03d}"
            ids.append(acc)
            hints.append(float(level))
            if rng.random() < TRUE(level):
                rows.append((acc, D0 + timedelta(days=int(rng.integers(1, 90))), "churned"))
            else:
                rows.append((acc, CLOSED, "renewed"))
                if perturb and level >= 70:
                    rows.append((acc, datetime(2025, 5, 15), "churned"))
    if perturb:
        rows.append((ids[0], datetime(2025, 9, 1), "renewed"))
    return outcome_book(path, list(zip(ids, hints, strict=True)), rows)


@pytest.fixture(scope="module")
def book_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("prob") / "book.duckdb"
    _book(path).con.disconnect()
    return path


@pytest.fixture(scope="module")
def book(book_path):
    store = hs.connect(book_path)
    yield store
    store.con.disconnect()


def _fit(store, until=CLOSED, **kw):
    kw.setdefault("start", D0)
    return prob.fit_probability_details(store, hs.load_model_text(BOOK_MODEL), until, **kw)


# --- the curve -------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["isotonic", "platt"])
def test_fitted_curve_never_rises_with_the_score_and_stays_within_0_1(method):
    rng = np.random.default_rng(3)
    scores = rng.uniform(0, 100, 4000)
    labels = rng.random(4000) < 0.3 * np.exp(-scores / 25)
    labels[:40] = ~labels[:40]  # noise against the trend
    points = prob.fit(scores, labels, method)
    xs, ys = zip(*points, strict=True)
    assert xs[0] == 0 and xs[-1] == 100 and all(b > a for a, b in zip(xs, xs[1:], strict=False))
    assert all(0 <= y <= 1 for y in ys)
    assert all(b <= a for a, b in zip(ys, ys[1:], strict=False))
    assert len(points) <= 22  # compact: about 20 knots at most
    hs.model.Probability(points=points)  # what the model file accepts


def test_expansion_probability_never_falls_with_the_score():
    rng = np.random.default_rng(4)
    scores = rng.uniform(0, 100, 3000)
    labels = rng.random(3000) < scores / 200
    for method in ("isotonic", "platt"):
        ys = [y for _, y in prob.fit(scores, labels, method, decreasing=False)]
        assert all(b >= a for a, b in zip(ys, ys[1:], strict=False)) and ys[-1] > ys[0]


def test_a_platt_slope_of_the_wrong_sign_gives_the_overall_rate():
    scores = np.array([10.0] * 50 + [90.0] * 50)
    labels = np.array([False] * 45 + [True] * 5 + [False] * 40 + [True] * 10)
    assert prob.fit(scores, labels, "platt") == [[0.0, 0.15], [100.0, 0.15]]
    # isotonic pools the two levels into the same overall rate
    assert prob.fit(scores, labels, "isotonic") == [[0.0, 0.15], [100.0, 0.15]]


@pytest.mark.parametrize("method", ["isotonic", "platt"])
def test_fitted_probabilities_recover_the_known_churn_rates(book, method):
    f = _fit(book, method=method)
    p = f.probability
    assert (p.observations, p.outcome, p.horizon, p.method) == (1500, "churned", "90d", method)
    assert p.fitted_until == "2025-04-01" and f.dates == [D0]
    assert p.events == int(f.observations["label"].sum())
    fitted = prob.evaluate_points(p.points, LEVELS)
    for level, value in zip(LEVELS, fitted, strict=True):
        assert value == pytest.approx(TRUE(level), abs=0.06), (level, value)
    # in sample, the expected churns equal the observed ones for isotonic (bins = levels)
    if method == "isotonic":
        assert f.observations["predicted"].sum() == pytest.approx(p.events, abs=1e-3)


def test_fit_reads_nothing_after_until(book, tmp_path):
    """Outcomes after `until` (later churns, later renewals) leave the fit unchanged."""
    perturbed = _book(tmp_path / "perturbed.duckdb", perturb=True)
    base = _fit(book, until=CLOSED, every="1mo")
    other = _fit(perturbed, until=CLOSED, every="1mo")
    assert other.probability == base.probability
    assert other.observations[["account_id", "as_of", "label"]].equals(
        base.observations[["account_id", "as_of", "label"]]
    )
    # not vacuous: fitting later lets the perturbed outcomes in
    later = _fit(perturbed, until=datetime(2025, 7, 1), every="1mo")
    assert later.probability.points != base.probability.points
    assert max(later.dates) == datetime(2025, 4, 1)  # its 90 days close by 2025-07-01


def test_fit_without_any_outcome_in_the_horizon_says_so(book):
    with pytest.raises(hs.ScoringError, match="outcomes table has no expanded up to 2025-04-01"):
        _fit(book, outcome="expanded")
    # churned accounts are no longer observed after their churn (only churn is terminal)
    with pytest.raises(
        hs.ScoringError, match="none of the 3,966 observations was followed by renewed within 30d"
    ):
        _fit(book, outcome="renewed", horizon="30d", until=datetime(2025, 4, 1))
    with pytest.raises(hs.ScoringError, match="unknown outcome 'lost'"):
        _fit(book, outcome="lost")
    with pytest.raises(hs.ScoringError, match="horizon closed by 2025-02-01.*pass `start`"):
        _fit(book, until=datetime(2025, 2, 1))
    with pytest.raises(hs.errors.DurationError, match="`horizon`: not a duration"):
        _fit(book, horizon="soon")


def test_refitting_reuses_the_history_of_the_unfitted_model(book):
    model = hs.load_model_text(BOOK_MODEL)
    fitted = model.spec.model_copy(update={"probability": _fit(book).probability})
    again = prob.fit_probability_details(book, hs.model.Model(fitted), CLOSED, start=D0)
    assert again.probability == _fit(book).probability
    t = book.con.table(SCORES)
    versions = set(t.select("model_version").distinct().to_pyarrow()["model_version"].to_pylist())
    assert versions == {model.version}


# --- the model file --------------------------------------------------------------------------

SMALL = """\
metrics:
  days_idle: {from: usage_events, aggregate: days_since(max(ts)), window: 90d}
  arr: {from: subscriptions, aggregate: sum(arr)}
pillars:
  usage: {weight: 1, metrics: {days_idle: {weight: 1, bad: 30, good: 0}}}
"""
SECTION = """\
probability:
  outcome: churned
  horizon: 90d
  method: isotonic
  fitted_until: 2024-12-01
  observations: 500
  events: 25
  points: [[0, 0.6], [50, 0.2], [80, 0.05], [100, 0.01]]
"""


def test_probability_section_is_validated_with_its_key_path():
    m = hs.load_model_text(SMALL + SECTION)
    assert m.spec.probability.fitted_until == "2024-12-01"  # an unquoted YAML date
    assert m.spec.probability.describe() == "churn within 90d"
    bad = SMALL + SECTION.replace("[80, 0.05]", "[40, 0.05]")
    with pytest.raises(hs.ModelError, match=r"probability\.points.*score strictly ascending"):
        hs.load_model_text(bad)
    with pytest.raises(hs.ModelError, match="probabilities must be within 0-1"):
        hs.load_model_text(SMALL + SECTION.replace("0.6]", "1.6]"))
    with pytest.raises(hs.ModelError, match=r"probability\.horizon.*not a duration"):
        hs.load_model_text(SMALL + SECTION.replace("horizon: 90d", "horizon: soon"))


def test_the_probability_section_is_not_part_of_the_model_version():
    plain, fitted = hs.load_model_text(SMALL), hs.load_model_text(SMALL + SECTION)
    assert plain.version == fitted.version
    refit = hs.load_model_text(SMALL + SECTION.replace("[80, 0.05]", "[80, 0.07]"))
    assert refit.version == fitted.version
    assert hs.load_model_text(SMALL.replace("bad: 30", "bad: 31")).version != plain.version


def test_a_scorecard_has_its_own_probability(tmp_path):
    text = (
        SMALL
        + "scorecards:\n  quiet:\n    pillars:\n"
        + ("      usage: {weight: 1, metrics: {days_idle: {weight: 1, bad: 60, good: 0}}}\n")
    )
    path = tmp_path / "m.yaml"
    path.write_text(text)
    p = hs.model.Probability(points=[[0, 0.5], [100, 0.1]], fitted_until="2025-01-01")
    m = prob.write_probability(path, p, path, scorecard="quiet")
    assert m.scorecard_name == "quiet" and m.spec.probability == p
    assert m.scorecard("health").spec.probability is None
    assert "probability" in hs.score(memory_store(), m, AS_OF).column_names
    assert "probability" not in hs.score(memory_store(), m.scorecard("health"), AS_OF).column_names


def test_write_probability_keeps_comments_and_validates(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("# my model\n" + SMALL)
    p = hs.model.Probability(points=[[0.0, 0.4], [62.5, 0.1], [100.0, 0.02]], events=3)
    m = prob.write_probability(path, p, tmp_path / "out.yaml")
    text = (tmp_path / "out.yaml").read_text()
    assert text.startswith("# my model\n")
    assert "points: [[0.0, 0.4], [62.5, 0.1], [100.0, 0.02]]" in text
    assert m.spec.probability == p
    p2 = p.model_copy(update={"points": [(0.0, 0.3), (100.0, 0.01)]})
    m2 = prob.write_probability(tmp_path / "out.yaml", p2, tmp_path / "out.yaml")
    assert m2.spec.probability == p2
    assert (tmp_path / "out.yaml").read_text().count("probability:") == 1


def test_a_model_text_that_does_not_validate_is_never_written(tmp_path):
    from healthscore.core.modelfile import save_model_text

    path = tmp_path / "m.yaml"
    path.write_text("# my model\n" + SMALL)
    with pytest.raises(hs.ModelError, match="does not validate"):
        save_model_text("pillars: 3\n", path, hs.load_model_text)
    assert path.read_text() == "# my model\n" + SMALL
    assert [p.name for p in tmp_path.iterdir()] == ["m.yaml"]  # no temporary file left


# --- scoring, history, explain -------------------------------------------------------------


@pytest.fixture(scope="module")
def small_model():
    return hs.load_model_text(SMALL + SECTION)


@pytest.fixture(scope="module")
def small_scores(small_model):
    return hs.score(memory_store(), small_model, AS_OF)


def test_scoring_adds_the_piecewise_probability_of_the_final_score(small_model, small_scores):
    rows = {r["account_id"]: r for r in small_scores.to_pylist()}
    cols = small_scores.column_names
    assert cols[: cols.index("probability") + 1][-3:] == ["band", "coverage", "probability"]
    assert rows["A1"]["score"] == pytest.approx(100 * (1 - 2 / 30))
    assert rows["A1"]["probability"] == pytest.approx(0.05 - (13.333333 / 20) * 0.04, abs=1e-6)
    assert rows["A2"]["probability"] == pytest.approx(0.15)  # score 60: 0.2 - 10/30 x 0.15
    assert rows["A3"]["score"] is None and rows["A3"]["probability"] is None
    points = small_model.spec.probability.points
    for r in rows.values():
        if r["score"] is not None:
            assert r["probability"] == pytest.approx(prob.evaluate_points(points, r["score"]))
    plain = hs.score(memory_store(), hs.load_model_text(SMALL), AS_OF)
    assert "probability" not in plain.column_names


def test_history_stores_the_probability(small_model, small_scores):
    store = memory_store()
    hs.api.history(store, small_model, AS_OF, AS_OF, "1w")
    t = store.con.table(SCORES)
    stored = {r["account_id"]: r["probability"] for r in t.to_pyarrow().to_pylist()}
    assert stored == pytest.approx(
        {r["account_id"]: r["probability"] for r in small_scores.to_pylist()}
    )
    from healthscore.engine.history import stored_explanations

    seen = stored_explanations(store, small_model, ["A2"], [AS_OF])
    assert seen[("A2", AS_OF)].probability == pytest.approx(0.15)


def test_explanation_carries_the_probability(small_model):
    e = hs.explain(memory_store(), small_model, "A2", AS_OF)
    assert e.probability == pytest.approx(0.15) and e.probability_of == "churn within 90d"
    assert e.to_dict()["probability"] == pytest.approx(0.15)
    plain = hs.explain(memory_store(), hs.load_model_text(SMALL), "A2", AS_OF)
    assert plain.probability is None and plain.probability_of is None


# --- ARR at risk -----------------------------------------------------------------------------


def test_arr_at_risk_sums_probability_times_arr_by_group(small_scores):
    # A1 enterprise/alice p 0.023333 ARR 120,000; A2 smb/bob p 0.15 ARR 6,000; A3 alice no score
    by_segment = {r.group: r for r in prob.arr_at_risk(small_scores, "segment")}
    assert by_segment["enterprise"].arr_at_risk == pytest.approx(2800.0, abs=1e-3)
    assert by_segment["smb"].arr_at_risk == pytest.approx(900.0)
    assert by_segment["smb"].expected == pytest.approx(0.15)
    assert by_segment["mid-market"].accounts == 1 and by_segment["mid-market"].expected == 0
    rows = prob.arr_at_risk(small_scores, "csm")
    assert [r.group for r in rows] == ["alice", "bob"]  # largest ARR at risk first
    alice = rows[0]
    assert (alice.accounts, alice.arr) == (2, 120_000.0)
    assert alice.expected == pytest.approx(0.0233333, abs=1e-6)
    assert alice.share == pytest.approx(2800 / 120_000, abs=1e-8)
    (total,) = prob.arr_at_risk(small_scores, None)
    assert (total.accounts, total.arr) == (3, 126_000.0)
    assert total.arr_at_risk == pytest.approx(3700.0, abs=1e-3)
    # ARR given per account overrides the arr column; without either, no ARR
    (given,) = prob.arr_at_risk(small_scores, None, {"A1": 1000.0, "A2": 0.0})
    assert given.arr_at_risk == pytest.approx(23.333333, abs=1e-5)
    (no_arr,) = prob.arr_at_risk(small_scores.drop_columns(["arr"]), None)
    assert no_arr.arr is None and no_arr.arr_at_risk is None
    with pytest.raises(hs.ScoringError, match="no `probability:` section"):
        prob.arr_at_risk(small_scores.drop_columns(["probability"]), "segment")


# --- shown: CLI and report -------------------------------------------------------------------


@pytest.fixture
def small_file(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(SMALL + SECTION)
    return path


def _run(*args):
    res = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "160"})
    assert res.exit_code == 0, res.output
    return res.stdout


def test_score_shows_p_churn_and_arr_at_risk(fixture_db, small_file):
    base = ["--db", fixture_db, "--model", small_file, "--as-of", "2025-01-01"]
    text = _run("score", *base)
    assert "p(churn)" in text and "15 %" in text and "2.3 %" in text
    assert "ARR at risk of churn within 90d: expected 0.2 of 3 accounts" in text
    assert "ARR at risk by segment" in text and "ARR at risk by CSM" in text
    summary = _run("score", *base, "--summary")
    assert "ARR at risk by CSM" in summary and "p(churn)" not in summary
    assert "alice" in summary and "2.3%" in summary  # 2,800 of 120,000
    csv = _run("score", *base, "-f", "csv").splitlines()
    assert csv[0].startswith('"account_id","as_of","segment","csm","score","band","coverage",')
    assert '"probability"' in csv[0]
    rows = json.loads(_run("score", *base, "-f", "json"))
    assert {r["account_id"]: r["probability"] for r in rows}["A2"] == pytest.approx(0.15)


def test_score_summary_without_a_probability_says_how_to_fit(fixture_db, tmp_path):
    (tmp_path / "plain.yaml").write_text(SMALL)
    res = CliRunner().invoke(
        app,
        ["score", "--db", str(fixture_db), "--model", str(tmp_path / "plain.yaml"), "--summary"],
    )
    assert res.exit_code == 1 and "Error:" in res.output and "fit-probability" in res.output


def test_explain_shows_the_probability_line(fixture_db, small_file):
    text = _run("explain", "A2", "--db", fixture_db, "--model", small_file, "--as-of", "2025-01-01")
    assert "probability of churn within 90d: 15 %" in text


def test_fit_probability_command_writes_the_section(book_path, tmp_path):
    path = tmp_path / "book.yaml"
    path.write_text(BOOK_MODEL)
    args = ["model", "fit-probability", "--db", book_path, "--model", path]
    text = _run(*args, "--until", "2025-04-01", "--from", "2025-01-01", "--outcome", "churn")
    assert "probability of churn within 90d (isotonic) fitted on 1,500 observations" in text
    assert "p(churn)" in text and "written to" in text
    m = hs.load_model(path)
    assert m.spec.probability.fitted_until == "2025-04-01"
    assert m.spec.probability.observations == 1500
    assert path.read_text().startswith("# scores straight from a column")
    out = tmp_path / "platt.yaml"
    _run(*args, "--until", "2025-04-01", "--from", "2025-01-01", "--method", "platt", "--out", out)
    assert hs.load_model(out).spec.probability.method == "platt"
    res = CliRunner().invoke(
        app, [str(a) for a in args] + ["--until", "2025-04-01", "--method", "x"]
    )
    assert res.exit_code == 2


def test_report_has_arr_at_risk_by_segment_and_csm(small_model):
    from healthscore.views import report

    data = report.gather(memory_store(), small_model, AS_OF)
    assert data.risk_of == "churn within 90d"
    assert {r.group: round(r.arr_at_risk, 6) for r in data.risk_csms} == {
        "alice": 2800.0,
        "bob": 900.0,
    }
    html = report._risk_section(data)
    assert "ARR at risk by segment and by CSM" in html and "id='arr-at-risk'" in html
    assert "2.8k" in html and "900" in html
    plain = report.gather(memory_store(), hs.load_model_text(SMALL), AS_OF)
    assert report._risk_section(plain) == ""


# --- refitting keeps the version and its history ---------------------------------------------


def test_fitting_the_probability_keeps_the_version_and_its_history(demo_project, tmp_path):
    """A demo book: fit-probability stores monthly history, writes the curve, and the
    same version's trends, report and stored explanations still find that history."""
    db, path = demo_project.db_path, demo_project.model_path
    before = hs.load_model(path).version
    base = ["--db", db, "--model", path]
    text = _run("model", "fit-probability", *base, "--until", "2025-04-01", "--from", "2024-12-01")
    fitted = hs.load_model(path)
    assert fitted.spec.probability is not None and fitted.version == before
    assert f"model version {before[:12]} unchanged" in text
    trends = json.loads(_run("trends", *base, "--as-of", "2025-01-01", "--format", "json"))
    assert len(trends) > 100 and {t["trend"] for t in trends} >= {"stable"}
    _run("report", *base, "--as-of", "2025-01-01", "--out", tmp_path / "r.html")
    html = (tmp_path / "r.html").read_text()
    assert "From stored history as of 2025-01-01" in html
    # a stored score reads the probability of the current curve, not a stale one
    from healthscore.engine.history import stored_explanations

    store = hs.connect(db)
    row = store.execute(store.stored(SCORES).limit(1)).to_pylist()[0]
    seen = stored_explanations(store, fitted, [row["account_id"]], [row["as_of"]])
    e = seen[(row["account_id"], row["as_of"])]
    assert e.probability == pytest.approx(
        prob.evaluate_points(fitted.spec.probability.points, row["score"])
    )
    store.close()
