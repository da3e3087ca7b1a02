"""Calibration: learned weights, anchors, directions and bands, split in time.

The demo book (800 accounts, 24 months to 2025-07-01) is calibrated once with
outcomes up to 2024-10-01 and tested on the observation dates after it.
"""

from __future__ import annotations

import shutil
from datetime import datetime

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

import fixtures
import healthscore as hs
from healthscore.cli import app
from healthscore.core.time import shift
from healthscore.errors import ScoringError
from healthscore.evaluate import calibrate as cal

END = datetime(2025, 7, 1)
D = datetime(2024, 10, 1)


DEMO = fixtures.CALIBRATION_DEMO  # the shared project: 800 accounts, 24 months to 2025-07-01


@pytest.fixture(scope="module")
def demo(demo_project):
    return demo_project.db_path


@pytest.fixture(scope="module")
def calibrated(demo, tmp_path_factory):
    store = hs.connect(demo)
    out = tmp_path_factory.mktemp("calibrated") / "calibrated.yaml"
    result = cal.calibrate(store, hs.load_model(None), D, outcome="churn", out=out, seed=0, reps=20)
    yield store, result
    store.con.disconnect()


def test_calibrated_model_beats_default_on_held_out_period(calibrated):
    _, r = calibrated
    old_auc, new_auc = r.auc()
    assert new_auc > old_auc
    e = r.equal_fpr
    assert e.new_fpr <= e.old_fpr
    assert e.new_recall > e.old_recall
    # held out means after D only; trained on windows closed by D
    assert r.test_dates and min(r.test_dates) >= D
    assert all(shift(d, "90d", +1) <= D for d in r.train_dates)
    assert r.backtest.start >= D


def test_calibrated_file_validates_keeps_comments_and_says_how_it_was_made(calibrated):
    _, r = calibrated
    text = r.out.read_text()
    assert text == r.yaml_text
    new = hs.load_model(r.out)
    assert new.version != hs.load_model(None).version
    assert "trained until 2024-10-01" in text.splitlines()[1]
    assert "# Bands: >= green is Green" in text  # the old file's comments are kept
    assert "was weight" in text
    assert new.spec.bands.yellow == r.new_bands["yellow"]
    # weights are percent of the score; a pillar's weight is the sum of its metrics'
    for pillar in new.spec.pillars.values():
        total = sum(u.weight for u in pillar.metrics.values())
        assert pillar.weight == pytest.approx(total, abs=1e-9)
    assert sum(p.weight for p in new.spec.pillars.values()) == pytest.approx(100, abs=0.5)
    assert r.train_recall >= 0.85
    # segments with enough outcomes and a threshold of their own carry it in the file
    assert r.segment_bands, "the demo's segments have 20+ positive training observations"
    for seg, yellow in r.segment_bands.items():
        own = new.bands_for(seg)
        assert own.yellow == yellow != new.spec.bands.yellow and own.green > own.yellow
        assert f"{seg}: {{green:" in text


def test_same_data_and_seed_give_the_same_file_and_figures(calibrated):
    store, r = calibrated
    again = cal.calibrate(store, hs.load_model(None), D, outcome="churned", seed=0, reps=20)
    assert again.yaml_text == r.yaml_text
    assert again.auc() == r.auc()
    assert again.equal_fpr == r.equal_fpr


def test_data_after_the_cutoff_cannot_change_the_fit(demo, calibrated, tmp_path):
    _, r = calibrated
    path = tmp_path / "perturbed.duckdb"
    shutil.copy(demo, path)
    store = hs.connect(path)
    when = f"TIMESTAMP '{D:%Y-%m-%d %H:%M:%S}'"
    for sql in (
        "DROP TABLE IF EXISTS scores",
        "DROP TABLE IF EXISTS score_lines",
        "DROP TABLE IF EXISTS score_models",
        # every outcome after D becomes a churn, and usage and tickets after D vanish
        f"UPDATE outcomes SET kind = 'churned' WHERE ts > {when}",
        f"DELETE FROM usage_events WHERE ts > {when}",
        f"DELETE FROM tickets WHERE opened_at > {when}",
    ):
        store.con.raw_sql(sql)
    try:
        again = cal.calibrate(store, hs.load_model(None), D, held_out=False)
    finally:
        store.con.disconnect()
    assert again.yaml_text == r.yaml_text


INVERTED = """
columns: {accounts: {hint: float64, signal: float64}}
metrics:
  hint: {column: hint}
  signal: {column: signal}
pillars:
  p:
    weight: 1
    metrics:
      hint: {weight: 1, bad: 0, good: 100}     # the model thinks high is healthy
      signal: {weight: 1, bad: 0, good: 100}
"""


def _inverted_book(path):
    """Churners have a HIGH hint (the model's direction is wrong) and a low signal."""
    rng = np.random.default_rng(3)
    n = 240
    churn = np.arange(n) < 60
    hint = np.where(churn, rng.uniform(50, 100, n), rng.uniform(0, 70, n))
    signal = np.where(churn, rng.uniform(0, 60, n), rng.uniform(30, 100, n))
    ids = [f"A{i:03d}" for i in range(n)]
    store = hs.connect(path)
    store.load(
        "accounts",
        pa.table(
            {
                "account_id": ids,
                "created_at": pa.array([datetime(2024, 1, 1)] * n, pa.timestamp("us")),
                "segment": ["smb"] * n,
                "hint": hint,
                "signal": signal,
            }
        ),
    )
    rows = []
    for i in range(n):
        if churn[i]:
            rows.append((ids[i], datetime(2024, 3 + i % 9, 10), "churned"))
        else:
            rows.append((ids[i], datetime(2025, 6, 1), "renewed"))
    store.load(
        "outcomes",
        pa.table(
            {
                "outcome_id": [f"O{i}" for i in range(len(rows))],
                "account_id": [r[0] for r in rows],
                "ts": pa.array([r[1] for r in rows], pa.timestamp("us")),
                "kind": [r[2] for r in rows],
            }
        ),
    )
    return store


def test_an_inverted_metric_gets_its_direction_from_the_data(tmp_path):
    store = _inverted_book(tmp_path / "inverted.duckdb")
    model = hs.load_model_text(INVERTED)
    try:
        r = cal.calibrate(
            store,
            model,
            datetime(2025, 1, 1),
            start=datetime(2024, 2, 1),
            held_out=False,
        )
    finally:
        store.con.disconnect()
    by = {c.metric: c for c in r.metrics}
    assert by["hint"].inverted and by["hint"].new_direction == "lower"
    assert by["hint"].new_bad > by["hint"].new_good
    assert by["hint"].new_weight > 0
    assert not by["signal"].inverted and by["signal"].new_direction == "higher"
    use = r.model.spec.pillars["p"].metrics["hint"]
    assert use.bad > use.good
    assert any("hint" in n and "opposite" in n for n in r.notes)


def test_unknown_outcome_and_no_training_window_are_explained(calibrated):
    store, _ = calibrated
    with pytest.raises(ScoringError, match="unknown outcome 'refund'"):
        cal.calibrate(store, hs.load_model(None), D, outcome="refund")
    with pytest.raises(ScoringError, match="no observation date") as e:
        cal.calibrate(store, hs.load_model(None), datetime(2023, 8, 1))
    # the library names its parameters; the CLI translates them into its flags
    assert "`train_until`" in str(e.value) and "--" not in str(e.value)


def test_target_recall_out_of_range_names_the_parameter(calibrated):
    store, _ = calibrated
    with pytest.raises(ScoringError, match=r"`target_recall` must be within \(0, 1\]"):
        cal.calibrate(store, hs.load_model(None), D, target_recall=1.5)


def test_cli_calibrate_prints_weights_and_the_held_out_comparison(demo, calibrated, tmp_path):
    out = tmp_path / "new.yaml"
    res = CliRunner().invoke(
        app,
        [
            "calibrate",
            "--train-until",
            "2024-10-01",
            "--outcome",
            "churn",
            "--out",
            str(out),
            "--db",
            str(demo),
        ],
    )
    assert res.exit_code == 0, res.output
    assert res.output.lstrip().startswith("In plain words: the weights and the band thresholds")
    assert "only what was known up to 2024-10-01" in res.output
    assert "(pillar)" in res.output and "bands: green 80 ->" in res.output
    assert "recall at equal false-positive rate" in res.output
    assert "held out" in res.output
    assert out.read_text() == calibrated[1].yaml_text
    bad = CliRunner().invoke(
        app, ["calibrate", "--train-until", "2024-10-01", "--outcome", "refund", "--db", str(demo)]
    )
    assert bad.exit_code == 1 and "Error:" in bad.output


def test_weighted_score_gradient_matches_finite_differences():
    """The fit's analytic gradient of the reweighted score (missing metrics, a pillar
    with no data for some observations) against central differences."""
    rng = np.random.default_rng(1)
    n = rng.random((300, 6))
    n[rng.random((300, 6)) < 0.3] = np.nan
    n[:5, 2:5] = np.nan  # pillar 1 has no data here: its weight goes to the others
    n[5, :] = np.nan  # nothing known at all
    pillar_of = np.array([0, 0, 1, 1, 1, 2])
    w = rng.random(6) + 0.1
    score, grad = cal._score01_grad(n, w, pillar_of, 3)
    assert np.isnan(score[5]) and not np.isnan(score[:5]).any()
    eps = 1e-6
    for j in range(6):
        up = cal._score01(n, w + eps * np.eye(6)[j], pillar_of, 3)
        down = cal._score01(n, w - eps * np.eye(6)[j], pillar_of, 3)
        numeric = np.nan_to_num((up - down) / (2 * eps))
        assert np.abs(numeric - grad[:, j]).max() < 1e-6
