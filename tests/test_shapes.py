"""Learned shapes: calibration may replace a metric's two-anchor clamp by a monotone
piecewise-linear normalisation (``points:``) when held-out folds say it fits better.

Two books of 4,000 accounts scored once (snapshot calibration), built so the truth is
known: in one the risk is concentrated in the last weeks before renewal (a steep rise
near 0 days, then a gentle slope), in the other the risk logit falls in a straight
line with the days left.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pyarrow as pa
import pytest

import healthscore as hs
from healthscore.evaluate import calibrate as cal
from healthscore.evaluate import shapes
from healthscore.evaluate import snapshot as snap

AS_OF = datetime(2024, 7, 1)

MODEL = """
name: renewals
columns: {accounts: {days_left: float64, noise: float64}}
metrics:
  days_left: {column: days_left}
  noise: {column: noise}
pillars:
  p:
    weight: 1
    metrics:
      days_left: {weight: 1, bad: 0, good: 365}  # days to renewal
      noise: {weight: 1, bad: 0, good: 1}
"""


def near_renewal(d):
    """Risk concentrated in the last ~60 days, then a gentle slope."""
    return -1.5 + 3.5 * np.exp(-d / 30.0) - 1.5 * d / 365.0


def straight(d):
    return 0.5 - 3.0 * d / 365.0


def _book(path, logit, n=4000, seed=1):
    rng = np.random.default_rng(seed)
    days = rng.uniform(0, 365, n).round()
    churn = rng.random(n) < 1.0 / (1.0 + np.exp(-logit(days)))
    return _snapshot_store(
        path, {"segment": ["smb"] * n, "days_left": days, "noise": rng.random(n)}, churn
    )


def _snapshot_store(path, columns, churn):
    """A store of one snapshot: an account per value of ``churn`` with ``columns``, and
    its outcome at 2024-06-30 (churned where ``churn`` is true, renewed elsewhere)."""
    n = len(churn)
    ids = [f"A{i:04d}" for i in range(n)]
    store = hs.connect(path)
    when = pa.array([datetime(2024, 1, 1)] * n, pa.timestamp("us"))
    store.load("accounts", pa.table({"account_id": ids, "created_at": when, **columns}))
    store.load(
        "outcomes",
        pa.table(
            {
                "outcome_id": [f"O{i}" for i in range(n)],
                "account_id": ids,
                "ts": pa.array([datetime(2024, 6, 30)] * n, pa.timestamp("us")),
                "kind": ["churned" if c else "renewed" for c in churn],
            }
        ),
    )
    return store


def _calibrate(path, logit, model_text=MODEL, out=None):
    store = _book(path, logit)
    try:
        return snap.calibrate(
            store,
            hs.load_model_text(model_text),
            as_of=AS_OF,
            challenger=False,
            reps=20,
            out=out,
        )
    finally:
        store.con.disconnect()


@pytest.fixture(scope="module")
def shaped(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("shapes")
    out = tmp / "calibrated.yaml"
    return _calibrate(tmp / "near.duckdb", near_renewal, out=out), tmp


def test_calibrate_learns_a_shape_where_risk_is_concentrated_near_renewal(shaped):
    r, _ = shaped
    by = {c.metric: c for c in r.metrics}
    c = by["days_left"]
    assert c.shape is not None and c.new_points is not None
    pts = c.new_points
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    assert 3 <= len(pts) <= shapes.MAX_POINTS
    assert xs == sorted(xs) and ys == sorted(ys)  # monotone: more days left is healthier
    assert ys[0] == 0 and ys[-1] == 100
    # most of the score is won in the first weeks, the rest on a gentle slope after
    assert np.interp(60, xs, ys) > 50 and np.interp(200, xs, ys) < 100
    assert c.shape.gain < 0  # better on the held-out folds than the clamp it replaced
    # said in the output and in the file, in words
    said = [n for n in r.notes if n.startswith("learned shape for days_left: ")]
    assert said and f"{len(pts)} points, held-out log-loss -0.0" in said[0]
    assert "vs the clamp" in said[0] and "(higher is healthier)" in said[0]
    use = r.model.spec.pillars["p"].metrics["days_left"]
    assert use.points == pts and use.bad is None and use.good is None
    line = next(t for t in r.yaml_text.splitlines() if t.strip().startswith("days_left: {weight"))
    assert "points: [[" in line and "bad 0, good 365; shape learned: " in line
    assert "noise" not in [n.split(":")[0].split()[-1] for n in said]


def test_the_shape_ranks_churners_better_than_the_clamp(shaped, tmp_path):
    """The same book fitted with shapes turned off ranks the churners less well."""
    r, _ = shaped
    store = _book(tmp_path / "near.duckdb", near_renewal)
    try:
        obs = snap.snapshot_observations(store, hs.load_model_text(MODEL), AS_OF, "churned")
        feats, holds = cal.calibration_features(store, hs.load_model_text(MODEL), obs, [AS_OF])
    finally:
        store.con.disconnect()
    y = obs["label"].to_numpy(bool)
    model = hs.load_model_text(MODEL)
    with_shape = cal.learn(model, feats, holds, y, gain=cal.ANCHOR_GAIN)
    without = cal.learn(model, feats, holds, y, gain=cal.ANCHOR_GAIN, shaped=False)
    from sklearn.metrics import roc_auc_score

    def auc(fitted):
        return roc_auc_score(~y, cal.learned_score(model, fitted, feats, holds)[0])

    assert auc(with_shape) > auc(without)
    assert r.auc["calibrated (out of fold)"].value > 0.7


def test_a_straight_line_keeps_the_clamp(tmp_path):
    """The knot penalty works: where the truth is linear, no shape is adopted."""
    r = _calibrate(tmp_path / "straight.duckdb", straight)
    by = {c.metric: c for c in r.metrics}
    assert all(c.shape is None and c.new_points is None for c in r.metrics)
    assert not [n for n in r.notes if n.startswith("learned shape")]
    use = r.model.spec.pillars["p"].metrics["days_left"]
    assert use.points is None and use.bad < use.good
    assert by["days_left"].new_weight > 0.9


def test_the_calibrated_file_with_points_validates_and_round_trips(shaped, tmp_path):
    r, tmp = shaped
    out = tmp / "calibrated.yaml"
    text = out.read_text()
    assert text == r.yaml_text
    again = hs.load_model(out)  # validates
    assert again.version == r.model.version
    assert (
        again.spec.pillars["p"].metrics["days_left"].points
        == r.model.spec.pillars["p"].metrics["days_left"].points
    )
    # comments say how the file was made; calibrating it again starts from its points
    assert text.startswith("# calibrated by `healthscore calibrate --snapshot`")
    r2 = _calibrate(tmp_path / "near.duckdb", near_renewal, model_text=text)
    c = {c.metric: c for c in r2.metrics}["days_left"]
    assert c.old_points == r.model.spec.pillars["p"].metrics["days_left"].points
    assert c.new_points is not None and c.new_weight > 0


def test_points_normalisation_scores_monotone_and_clamped_and_explains(tmp_path):
    """Scoring through ``points``: linear between them, flat beyond the ends; the
    explanation shows each metric's normalised value and the points it came from."""
    text = MODEL.replace(
        "days_left: {weight: 1, bad: 0, good: 365}",
        "days_left: {weight: 1, points: [[10, 0], [60, 80], [300, 100]]}",
    )
    model = hs.load_model_text(text)
    store = hs.connect(tmp_path / "points.duckdb")
    days = [0.0, 10.0, 35.0, 60.0, 180.0, 300.0, 400.0]
    ids = [f"A{i}" for i in range(len(days))]
    try:
        store.load(
            "accounts",
            pa.table(
                {
                    "account_id": ids,
                    "created_at": pa.array([datetime(2024, 1, 1)] * len(ids), pa.timestamp("us")),
                    "days_left": days,
                    "noise": [0.5] * len(ids),
                }
            ),
        )
        rows = {r["account_id"]: r for r in hs.score(store, model, AS_OF).to_pylist()}
        norm = [rows[i]["days_left__norm"] for i in ids]
        assert norm == pytest.approx([0.0, 0.0, 40.0, 80.0, 90.0, 100.0, 100.0])
        e = hs.explain(store, model, "A2", AS_OF)
    finally:
        store.con.disconnect()
    line = next(m for m in e.metrics if m.metric == "days_left")
    assert line.raw == 35.0 and line.normalized == pytest.approx(40.0)
    assert line.points == [(10.0, 0.0), (60.0, 80.0), (300.0, 100.0)]
    assert e.score == pytest.approx(sum(m.contribution for m in e.metrics))


# --- log-scaled anchors for heavily skewed counts ---------------------------------------------

LOG_MODEL = """
name: logins
columns: {accounts: {logins: float64}}
metrics:
  logins: {column: logins}
pillars:
  p: {weight: 1, metrics: {logins: {weight: 1, bad: 0, good: 50}}}
"""


def _skewed_book(path, n=4000, seed=2):
    """Logins are heavily skewed (most accounts a few, some hundreds) and the risk
    falls with their logarithm: going from 1 to 10 logins matters as much as from 10
    to 100."""
    rng = np.random.default_rng(seed)
    logins = np.floor(np.exp(rng.uniform(0, 6, n))) - 1
    churn = rng.random(n) < 1 / (1 + np.exp(-(1.0 - 0.9 * np.log1p(logins))))
    return _snapshot_store(path, {"logins": logins}, churn)


def test_a_heavily_skewed_count_gets_log_scaled_anchors(tmp_path):
    """Without shapes, the clamp is read on a log scale; the file says so and validates.
    With shapes, the metric is not left on its raw linear clamp either."""
    store = _skewed_book(tmp_path / "skewed.duckdb")
    model = hs.load_model_text(LOG_MODEL)
    try:
        obs = snap.snapshot_observations(store, model, AS_OF, "churned")
        feats, holds = cal.calibration_features(store, model, obs, [AS_OF])
        shaped = snap.calibrate(store, model, as_of=AS_OF, challenger=False, reps=20)
    finally:
        store.con.disconnect()
    y = obs["label"].to_numpy(bool)
    fitted = cal.learn(model, feats, holds, y, gain=cal.ANCHOR_GAIN, shaped=False)
    c = fitted.changes[0]
    assert c.old_scale is None and c.new_scale == "log" and 0 <= c.new_bad < c.new_good
    assert any(n.startswith("logins: read on a log scale, ln(1 + x)") for n in fitted.notes)
    text = cal.calibrated_model_text(model, fitted.changes, {"green": 70, "yellow": 40}, "x", AS_OF)
    assert "scale: log" in text and "linear scale" in text  # the comment: it was linear
    use = hs.load_model_text(text).spec.pillars["p"].metrics["logins"]
    assert use.scale == "log" and (use.bad, use.good) == (c.new_bad, c.new_good)
    c = shaped.metrics[0]
    assert c.new_scale == "log" or c.new_points is not None


def test_log_scale_scores_ln_1_plus_x_and_keeps_the_version_of_models_without_it(tmp_path):
    log = hs.load_model_text(LOG_MODEL.replace("good: 50}", "good: 99, scale: log}"))
    plain = hs.load_model_text(LOG_MODEL.replace("good: 50}", "good: 99}"))
    explicit = hs.load_model_text(LOG_MODEL.replace("good: 50}", "good: 99, scale: linear}"))
    assert plain.version == explicit.version != log.version
    store = hs.connect(tmp_path / "log.duckdb")
    values = [-5.0, 0.0, 9.0, 99.0, 500.0]
    ids = [f"A{i}" for i in range(len(values))]
    try:
        store.load(
            "accounts",
            pa.table(
                {
                    "account_id": ids,
                    "created_at": pa.array([datetime(2024, 1, 1)] * len(ids), pa.timestamp("us")),
                    "logins": values,
                }
            ),
        )
        rows = {r["account_id"]: r for r in hs.score(store, log, AS_OF).to_pylist()}
    finally:
        store.con.disconnect()
    norm = [rows[i]["logins__norm"] for i in ids]
    assert norm == pytest.approx([0.0, 0.0, 50.0, 100.0, 100.0])  # ln 10 / ln 100 = 0.5
    with pytest.raises(hs.ModelError, match="`scale: log` reads ln"):
        hs.load_model_text(LOG_MODEL.replace("bad: 0, good: 50}", "bad: -1, good: 9, scale: log}"))
    with pytest.raises(hs.ModelError, match="`scale` goes with `bad`"):
        hs.load_model_text(
            LOG_MODEL.replace("bad: 0, good: 50}", "points: [[0, 0], [9, 100]], scale: log}")
        )


@pytest.mark.parametrize("slope", [4.0, 30.0], ids=["gentle", "steep"])
def test_the_logistic_fit_reaches_the_penalised_optimum(slope):
    """The Newton solver behind shapes and calibration's lines ends where the gradient of
    the penalised log-loss is zero, with and without an offset, whether its steps are
    taken whole unjudged (each moves no logit by more than 1) or judged by the loss (a
    steep risk, where the early steps move logits far)."""
    rng = np.random.default_rng(3)
    x = rng.uniform(0.0, 1.0, 5000)
    offset = rng.normal(0.0, 0.5, 5000)
    logit = offset + slope / 3.0 - slope * x
    y = (rng.uniform(size=5000) < 1.0 / (1.0 + np.exp(-logit))).astype(float)
    design = np.column_stack([np.ones_like(x), x])
    for off in (None, offset):
        theta = shapes.logistic_newton(design, y, off, 0.1)
        z = (0.0 if off is None else off) + design @ theta
        grad = design.T @ (1.0 / (1.0 + np.exp(-z)) - y) + np.array([1e-6, 0.1]) * theta
        assert np.abs(grad).max() < 1e-8
        assert -1.3 * slope < theta[1] < -0.7 * slope  # the generated slope, give or take
        # calibration's one-metric fits take the same steps with the 2 x 2 system written
        # out: the same coefficients, whatever the ridge (shapes' or the anchors' tiny one)
        for ridge in (0.1, 1e-6):
            want = shapes.logistic_newton(design, y, off, ridge)
            got = shapes.logistic_line(x, y, off, ridge)
            assert np.abs(np.array(got) - want).max() < 1e-10


def test_the_line_fit_stops_where_the_general_one_does_when_the_outcome_separates():
    """An outcome a threshold separates: the slope grows until the tiny ridge holds it,
    step after step judged by the loss; both solvers end at the same (large) coefficients
    and the same log-loss, and with an offset too."""
    rng = np.random.default_rng(5)
    x = rng.uniform(0.0, 1.0, 3000)
    y = (x < 0.3).astype(float)
    design = np.column_stack([np.ones_like(x), x])
    for off in (None, rng.normal(0.0, 0.5, 3000)):
        want = shapes.logistic_newton(design, y, off, 1e-6)
        got = np.array(shapes.logistic_line(x, y, off, 1e-6))
        assert abs(want[1]) > 50  # separated: a steep slope
        assert np.abs(got - want).max() < 1e-6 * np.abs(want).max()
        z = (0.0 if off is None else off) + design @ want
        zz = (0.0 if off is None else off) + design @ got
        nll = [np.sum(np.logaddexp(0.0, v) - y * v) for v in (z, zz)]
        assert nll[1] == pytest.approx(nll[0], rel=1e-9, abs=1e-9)
