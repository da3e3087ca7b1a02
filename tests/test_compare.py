"""Comparing two models: band migration, exact per-account reasons, and stored history."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from datetime import datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import healthscore as hs
from fixtures import memory_store
from healthscore import api
from healthscore.cli import app
from healthscore.core.tables import TABLES
from healthscore.demo import book as demo
from healthscore.evaluate.compare import NOT_SCORED, account_change, compare_models
from healthscore.model import Model, Rule, default_model_text

D = datetime(2025, 7, 1)
HISTORY_DATES = [D - timedelta(weeks=2), D - timedelta(weeks=1), D]
CURRENT_ONLY_DATE = D - timedelta(weeks=3)  # stored for the current model only


def _edit(text: str, pattern: str, repl: str) -> str:
    """``text`` with the first match of ``pattern`` replaced; the match must exist."""
    out, n = re.subn(pattern, repl, text, count=1)
    assert n == 1, f"the default model no longer has {pattern!r}"
    return out


def _with_rule(text: str, rule: str) -> str:
    """``text`` with one more top-level rule (``rule`` is the indented YAML of one rule)."""
    if re.search(r"^rules:\n", text, flags=re.M):
        return re.sub(r"^rules:\n", "rules:\n" + rule, text, count=1, flags=re.M)
    return text + "\nrules:\n" + rule


def _reweighted_text() -> str:
    """The default model with usage change weighing more and tighter bands."""
    text = _edit(
        default_model_text(), r"bands: \{green: 80, yellow: 50\}", "bands: {green: 75, yellow: 55}"
    )
    return _edit(text, r"(usage_change_30d:\s*\{weight: )\d+", r"\g<1>60")


CURRENT = hs.load_model()
NEW = hs.load_model_text(_reweighted_text(), file="new.yaml")
# leaves enterprise accounts out of the population, and caps everyone at 60 on top
NARROW = hs.load_model_text(
    _with_rule(
        _edit(
            default_model_text(),
            r"bands: \{green: 80, yellow: 50\}",
            "bands: {green: 80, yellow: 50}\npopulation: \"segment <> 'enterprise'\"",
        ),
        '  compare_cap:\n    when: "seats >= 0"\n    cap: 60\n',
    ),
    file="narrow.yaml",
)


@pytest.fixture(scope="module")
def book():
    """A small demo book (about 60 accounts), with stored history of CURRENT and NEW.

    Both versions are stored at the three HISTORY_DATES; CURRENT also one week earlier.
    """
    tables = demo.generate(accounts=60, months=6, seed=3, end=D)
    store = hs.connect("duckdb://")
    for name in TABLES:
        if name in tables:
            store.load(name, tables[name])
    api.history(store, CURRENT, CURRENT_ONLY_DATE, D, "1w")
    api.history(store, NEW, HISTORY_DATES[0], D, "1w")
    return store


@pytest.fixture(scope="module")
def compared(book):
    """``compare_models`` on the book, each set of arguments computed once per module (a
    comparison scores the book under both models: two compiles); the tests only read
    the results."""
    seen = {}

    def get(new: Model, current: Model, as_of=D, **kwargs):
        key = (id(new), id(current), as_of, tuple(sorted(kwargs.items())))
        if key not in seen:
            seen[key] = compare_models(book, new, current, as_of, **kwargs)
        return seen[key]

    return get


@pytest.fixture(scope="module")
def book_scores(book):
    """``hs.score`` of the book under a model at D, once per model (the brute-force side)."""
    seen = {}

    def get(model: Model):
        if id(model) not in seen:
            seen[id(model)] = hs.score(book, model, D)
        return seen[id(model)]

    return get


# the comparisons the tests share: NEW vs CURRENT at D without history, with the top 3
# changes (migration, summary, each stored date's live side); with history and the top 2
# (history, to_dict); NARROW vs CURRENT with every change and history (population, lines,
# the history notes)
NEW_AT_D = dict(top=3, history=False)
NEW_WITH_HISTORY = dict(top=2)
NARROW_AT_D = dict(top=None)


def _brute(book_scores, new: Model, current: Model):
    """(current band, new band) -> (accounts, ARR), counted from both score tables at D."""
    rows_new = {r["account_id"]: r for r in book_scores(new).to_pylist()}
    rows_cur = {r["account_id"]: r for r in book_scores(current).to_pylist()}
    counts, arr = Counter(), Counter()
    for acc in rows_new.keys() | rows_cur.keys():
        cur, new_ = rows_cur.get(acc), rows_new.get(acc)
        key = (cur["band"] if cur else NOT_SCORED, new_["band"] if new_ else NOT_SCORED)
        counts[key] += 1
        arr[key] += (cur or new_)["arr"] or 0.0
    return counts, arr, rows_new, rows_cur


def test_migration_matrix_equals_a_brute_force_count_of_both_score_tables(compared, book_scores):
    c = compared(NEW, CURRENT, **NEW_AT_D)
    counts, arr, rows_new, rows_cur = _brute(book_scores, NEW, CURRENT)
    assert c.has_arr
    for b1, row in c.matrix.items():
        for b2, cell in row.items():
            assert cell.accounts == counts.get((b1, b2), 0), (b1, b2)
            assert cell.arr == pytest.approx(arr.get((b1, b2), 0.0)), (b1, b2)
    total = sum(cell.accounts for row in c.matrix.values() for cell in row.values())
    assert total == len(rows_new.keys() | rows_cur.keys()) == c.summary.accounts_both
    assert c.summary.moved_up + c.summary.moved_down + c.summary.same_band == total
    assert c.summary.moved_up + c.summary.moved_down > 0  # the edit does move some accounts
    red_new = sum(r["band"] == "red" for r in rows_new.values()) / len(rows_new)
    assert c.summary.red_share_new == pytest.approx(red_new)


def test_an_account_outside_one_population_is_counted_as_not_scored(compared, book_scores):
    c = compared(NARROW, CURRENT, **NARROW_AT_D)
    rows_cur = book_scores(CURRENT).to_pylist()
    enterprise = sorted(r["account_id"] for r in rows_cur if r["segment"] == "enterprise")
    assert enterprise and c.left == enterprise and c.entered == []
    assert sum(row[NOT_SCORED].accounts for row in c.matrix.values()) == len(enterprise)
    assert sum(c.matrix[NOT_SCORED][b].accounts for b in c.bands) == 0
    assert c.summary.left == len(enterprise)
    back = compared(CURRENT, NARROW, history=False)
    assert back.entered == enterprise
    assert sum(back.matrix[NOT_SCORED][b].accounts for b in back.bands) == len(enterprise)


def test_each_change_splits_exactly_into_metric_rule_and_clamp_lines(compared):
    c = compared(NARROW, CURRENT, **NARROW_AT_D)
    assert len(c.changes) == c.summary.accounts_both
    deltas = [abs(ch.delta) for ch in c.changes]
    assert deltas == sorted(deltas, reverse=True)
    for ch in c.changes:
        assert abs(sum(ln.effect for ln in ch.lines) - ch.delta) < 1e-9, ch.account_id
        for ln in ch.lines:
            assert ln.effect == pytest.approx(ln.contribution_new - ln.contribution_current)
        effects = [abs(ln.effect) for ln in ch.lines]
        assert effects == sorted(effects, reverse=True)
    capped = [ch for ch in c.changes if ch.score_current > 60.5]
    assert capped, "some account scores above the new cap"
    for ch in capped:
        assert ch.score_new <= 60 + 1e-9
        assert "new rule compare_cap cap 60 (" in ch.summary()
    assert (
        c.changes[0]
        .summary()
        .startswith(
            f"{c.changes[0].account_id} {c.changes[0].score_current:.1f} -> "
            f"{c.changes[0].score_new:.1f}: "
        )
    )


def test_the_summary_names_the_weight_that_changed(compared):
    c = compared(NEW, CURRENT, **NEW_AT_D)
    assert len(c.changes) == 3
    line = c.changes[0].summary()
    assert re.search(r"usage_change_30d weight 0\.\d\d -> 0\.\d\d \([+-]\d+\.\d\)", line), line


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pillar_w=st.lists(st.integers(1, 100), min_size=4, max_size=4),
    metric_w=st.lists(st.integers(1, 100), min_size=20, max_size=20),
    cap=st.integers(30, 100),
)
def test_random_weight_changes_always_decompose_exactly(pillar_w, metric_w, cap):
    store, current_rows = _small_store()
    spec = CURRENT.spec
    weights = iter(metric_w)
    pillars = {
        p: pl.model_copy(
            update={
                "weight": float(w),
                "metrics": {
                    m: u.model_copy(update={"weight": float(next(weights))})
                    for m, u in pl.metrics.items()
                },
            }
        )
        for (p, pl), w in zip(spec.pillars.items(), pillar_w, strict=False)
    }
    rules = {**spec.rules, "everyone": Rule(when="seats >= 0", cap=float(cap))}
    new = Model(spec.model_copy(update={"pillars": pillars, "rules": rules}), file="random.yaml")
    for row in hs.score(store, new, SMALL_AS_OF).to_pylist():
        ch = account_change(new, CURRENT, row, current_rows[row["account_id"]])
        assert abs(sum(ln.effect for ln in ch.lines) - ch.delta) < 1e-9
        assert ch.delta == row["score"] - current_rows[row["account_id"]]["score"]


SMALL_AS_OF = "2025-01-01"
_SMALL = []


def _small_store():
    """The three-account fixture store and its CURRENT scores, built once."""
    if not _SMALL:
        store = memory_store()
        rows = {r["account_id"]: r for r in hs.score(store, CURRENT, SMALL_AS_OF).to_pylist()}
        _SMALL.append((store, rows))
    return _SMALL[0]


def test_history_agrees_with_the_comparison_at_each_stored_date(compared):
    c = compared(NEW, CURRENT, **NEW_WITH_HISTORY)
    h = c.history
    assert [p.as_of for p in h.points] == HISTORY_DATES
    assert CURRENT_ONLY_DATE in h.dates_current and CURRENT_ONLY_DATE not in h.dates_new
    for p in h.points:
        live = compared(NEW, CURRENT, p.as_of, **NEW_AT_D)
        assert p.matrix == {
            b1: {b2: cell.accounts for b2, cell in row.items()} for b1, row in live.matrix.items()
        }
        for key in ("accounts_both", "moved_up", "moved_down", "same_band", "entered", "left"):
            assert getattr(p.summary, key) == getattr(live.summary, key), (p.as_of, key)
        assert p.summary.red_share_new == pytest.approx(live.summary.red_share_new)
        assert p.summary.mean_change == pytest.approx(live.summary.mean_change)
    assert p.summary.changed_band == c.summary.changed_band  # the last date is D
    only = [n for n in h.notes if "stored for the current model only" in n]
    assert only and "healthscore history --model new.yaml --from 2025-06-10" in only[0]


def test_history_says_which_command_to_run_when_a_version_has_none(compared):
    c = compared(NARROW, CURRENT, **NARROW_AT_D)
    assert c.history.points == []
    assert any(
        "the new model" in n
        and "has no stored history" in n
        and "healthscore history --model narrow.yaml" in n
        for n in c.history.notes
    ), c.history.notes
    empty = compare_models(memory_store(), NEW, CURRENT, "2025-01-01", top=0)
    assert len(empty.history.notes) == 2  # no scores table at all: both versions lack history


def test_without_an_arr_metric_the_matrix_holds_counts_only():
    no_arr = _edit(default_model_text(), r"\n  arr:\n(    .*\n)+", "\n")
    a = hs.load_model_text(no_arr, file="a.yaml")
    b = hs.load_model_text(
        _edit(no_arr, r"bands: \{green: 80, yellow: 50\}", "bands: {green: 60, yellow: 40}")
    )
    store = memory_store()
    c = compare_models(store, b, a, "2025-01-01", history=False)
    assert not c.has_arr
    assert all(cell.arr is None for row in c.matrix.values() for cell in row.values())
    assert any("counts only" in n for n in c.notes)
    half = compare_models(store, NEW, a, "2025-01-01", history=False)
    assert half.has_arr and any("from the new model" in n for n in half.notes)


def test_a_scorecard_untouched_by_the_edit_compares_equal(book):
    others = CURRENT.scorecard_names()[1:]
    if not others:
        pytest.skip("the default model defines no scorecard besides health")
    c = compare_models(book, NEW, CURRENT, D, scorecard=others[0], history=False)
    assert c.scorecard == others[0] and c.new.version == c.current.version
    assert c.summary.changed_band == 0 and c.summary.mean_abs_change == 0
    assert any("same version" in n for n in c.notes)


def test_to_dict_is_json_and_keeps_the_exact_lines(compared):
    c = compared(NEW, CURRENT, **NEW_WITH_HISTORY)
    d = json.loads(json.dumps(c.to_dict()))
    assert d["new"]["version"] == NEW.version and d["current"]["file"] == CURRENT.file
    assert len(d["changes"]) == 2 and len(d["history"]["points"]) == len(HISTORY_DATES)
    ch = d["changes"][0]
    assert abs(sum(ln["effect"] for ln in ch["lines"]) - ch["delta"]) < 1e-9
    assert ch["summary"] == c.changes[0].summary()


# --- the command ------------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path, fixture_db):
    """The fixture store and two model files: one with higher bands and the default.

    Scores as of 2025-01-01: A1 85.8, A3 51.9, A2 35.6; so under 90/60 they are yellow,
    red, red and under the default 80/50 green, yellow, red."""
    shutil.copy(fixture_db, tmp_path / "healthscore.duckdb")
    (tmp_path / "current.yaml").write_text(
        _edit(
            default_model_text(),
            r"bands: \{green: 80, yellow: 50\}",
            "bands: {green: 90, yellow: 60}",
        )
    )
    (tmp_path / "new.yaml").write_text(default_model_text())
    return tmp_path


def _run(project, *args):
    db = project / "healthscore.duckdb"
    return CliRunner().invoke(
        app,
        [
            "compare",
            "--model",
            str(project / "new.yaml"),
            "--vs",
            str(project / "current.yaml"),
            "--db",
            str(db),
            "--as-of",
            "2025-01-01",
            *args,
        ],
    )


def test_compare_command_prints_the_matrix_and_the_biggest_changes(project):
    result = _run(project)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "band migration" in out and "current \\ new" in out
    # A1 (ARR 120,000) yellow -> green; A3 red -> yellow; A2 stays red
    assert re.search(r"yellow\s+1 \(120k\)", out), out
    assert "3 accounts scored by both: 2 move up a band" in out
    assert "has no stored history" in out  # neither model has history in the fixture store


def test_compare_command_json_has_the_matrix_and_exact_lines(project):
    result = _run(project, "--format", "json", "--top", "3")
    assert result.exit_code == 0, result.output
    d = json.loads(result.stdout)  # notes (accounts left out) go to stderr
    assert d["matrix"]["yellow"]["green"] == {"accounts": 1, "arr": 120000.0}
    assert d["matrix"]["red"]["yellow"]["accounts"] == 1
    assert sum(c["accounts"] for row in d["matrix"].values() for c in row.values()) == 3
    # only the bands moved: every score is the same, so no line moves
    assert all(ch["delta"] == 0 for ch in d["changes"])


def test_compare_command_reports_a_missing_model_file_and_a_bad_format(project):
    missing = CliRunner().invoke(
        app,
        [
            "compare",
            "--vs",
            str(project / "nope.yaml"),
            "--db",
            str(project / "healthscore.duckdb"),
        ],
    )
    assert missing.exit_code == 1
    assert missing.output.startswith("Error:") and "Traceback" not in missing.output
    bad = _run(project, "--format", "csv")
    assert bad.exit_code == 2


# --- what a person reads: the scorecard's band names, the accounts left out ----------------------

NAMES = "\nband_names: {green: healthy, yellow: watch, red: at risk}\n"


def test_changes_name_bands_as_the_scorecard_does_and_keep_the_keys(book):
    rule = '  compare_red:\n    when: "seats >= 0"\n    band: red\n'
    forced = _with_rule(default_model_text(), rule)
    new = hs.load_model_text(forced + NAMES, file="named.yaml")
    c = compare_models(book, new, CURRENT, D, history=False)
    assert c.new.band_names == {"green": "healthy", "yellow": "watch", "red": "at risk"}
    assert c.current.band_name("red") == "red" and c.new.band_name(NOT_SCORED) == NOT_SCORED
    moved = [ch for ch in c.changes if ch.band_current != "red"]
    assert moved, "some account was not red before the rule"
    for ch in moved:
        assert ch.band_new == "red" and ch.band_name_new == "at risk"
        assert "band at risk forced by rule compare_red" in ch.summary(), ch.summary()
    d = json.loads(json.dumps(c.to_dict()))
    assert set(d["matrix"]) == {"green", "yellow", "red", NOT_SCORED}  # the keys, not the names
    assert d["changes"][0]["band_new"] == "red" and d["changes"][0]["band_name_new"] == "at risk"


def test_compare_command_shows_the_band_names_of_the_scorecard(project):
    for name in ("new.yaml", "current.yaml"):
        (project / name).write_text((project / name).read_text() + NAMES)
    result = _run(project)
    assert result.exit_code == 0, result.output
    out = result.stdout
    # A1 (ARR 120,000) watch -> healthy, as in the matrix of green/yellow/red above
    assert re.search(r"current \\ new\s+healthy\s+watch\s+at risk\s+not scored", out), out
    assert re.search(r"watch\s+1 \(120k\)", out), out
    assert "at risk: 67% of accounts under the current model -> 33% under the new one" in out
    assert not re.search(r"\b(green|yellow|red)\b", out), out
    as_json = json.loads(_run(project, "--format", "json").stdout)
    assert as_json["matrix"]["yellow"]["green"]["accounts"] == 1  # JSON keeps the keys
    assert as_json["new"]["band_names"]["red"] == "at risk"
    # a scorecard's own names: onboarding calls its bands on track, watch, stalled
    card = _run(project, "--scorecard", "onboarding")
    assert card.exit_code == 0, card.output
    assert re.search(r"current \\ new\s+on track\s+watch\s+stalled\s+not scored", card.stdout)
    assert "stalled: 0% of accounts under the current model" in card.stdout


def test_compare_command_says_how_many_accounts_each_model_left_out(project):
    result = _run(project)
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    left_out = "left out: 1 not yet created, 1 no subscription in force"
    assert said.count(f"Note: scored 3 of 5 accounts as of 2025-01-01; {left_out}") == 1, said
    # the new model leaves the enterprise account (A1) out of its population
    narrow = _edit(
        default_model_text(),
        r"bands: \{green: 80, yellow: 50\}",
        "bands: {green: 80, yellow: 50}\npopulation: \"segment <> 'enterprise'\"",
    )
    (project / "new.yaml").write_text(narrow)
    result = _run(project)
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert (
        f"new model: scored 2 of 5 accounts as of 2025-01-01; {left_out}, "
        "1 outside the population" in said
    ), said
    assert f"current model: scored 3 of 5 accounts as of 2025-01-01; {left_out}" in said
    d = json.loads(_run(project, "--format", "json").stdout)
    assert d["evidence"]["new"]["left_out"]["outside the population"] == 1
    assert d["evidence"]["current"]["scored"] == 3 and d["summary"]["left"] == 1
