"""Each Definition of DESIGN.md, checked on the hand-computed fixture (tests/fixtures.py)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

import healthscore as hs
from fixtures import AS_OF

MODEL = Path(__file__).parent / "models" / "valid" / "definitions.yaml"


@pytest.fixture(scope="module")
def model():
    return hs.load_model(MODEL)


def _rows(store, model, as_of=AS_OF):
    return {r["account_id"]: r for r in hs.score(store, model, as_of).to_pylist()}


def test_population_excludes_future_accounts_and_churned_subscriptions(store, model):
    assert sorted(_rows(store, model)) == ["A1", "A2", "A3"]


def test_subscription_ending_at_as_of_is_out_and_its_renewal_is_in(store, model):
    a1 = _rows(store, model)["A1"]
    assert a1["seats"] == 10  # S2 (10 seats) starts at D; S1 (8 seats) ends at D
    assert a1["arr"] == 120_000
    assert a1["days_to_renewal"] == pytest.approx(365.0)


def test_account_churned_exactly_at_as_of_is_not_scored_but_is_the_day_before(store, model):
    assert "A5" not in _rows(store, model, datetime(2024, 6, 1))
    assert "A5" in _rows(store, model, datetime(2024, 5, 31))


def test_windowed_counts_exclude_events_at_or_after_as_of(store, model):
    a1 = _rows(store, model)["A1"]
    assert a1["events_30d"] == 6
    assert a1["active_users_30d"] == 4
    assert a1["seat_activation"] == pytest.approx(0.4)
    assert a1["days_since_last"] == pytest.approx(2.0)


def test_relative_change_is_a_fraction_of_the_previous_window(store, model):
    rows = _rows(store, model)
    assert rows["A1"]["events_change"] == pytest.approx(1.0)  # 6 vs 3
    assert rows["A2"]["events_change"] is None  # previous window empty
    assert rows["A2"]["events_change_z"] == 1.0  # if_previous_zero
    assert rows["A3"]["events_change"] is None  # previous window before created_at


def test_ticket_closed_after_as_of_is_open_at_as_of(store, model):
    rows = _rows(store, model)
    assert rows["A1"]["open_tickets"] == 1
    assert rows["A2"]["open_tickets"] == 0  # its ticket opens after D


def test_escalation_after_as_of_has_not_happened(store, model):
    rows = _rows(store, model)
    assert rows["A1"]["high_tickets_90d"] == 1
    assert rows["A2"]["high_tickets_90d"] == 0
    later = _rows(store, model, datetime(2025, 1, 10))
    assert later["A2"]["high_tickets_90d"] == 1


def test_invoice_paid_after_as_of_is_unpaid_at_as_of(store, model):
    assert _rows(store, model)["A2"]["late_invoices_90d"] == 2


def test_latest_survey_answer_before_as_of_wins(store, model):
    rows = _rows(store, model)
    assert rows["A1"]["nps"] == 9  # the 3 was answered after D
    assert _rows(store, model, datetime(2025, 1, 3))["A1"]["nps"] == 3


def test_flags_are_active_from_their_time_until_resolved(store, model):
    rows = _rows(store, model)
    assert rows["A2"]["champion_gone"] == 1
    assert rows["A1"]["budget_frozen"] == 0  # resolved in November
    assert _rows(store, model, datetime(2024, 10, 15))["A1"]["budget_frozen"] == 1


def test_arr_change_compares_contracts_in_force_then_and_now(store, model):
    rows = _rows(store, model)
    assert rows["A1"]["arr_change_90d"] == pytest.approx(0.25)  # 96k -> 120k
    assert rows["A2"]["arr_change_90d"] == 0.0
    assert rows["A3"]["arr_change_90d"] is None  # did not exist 90 days ago


def test_fill_stands_in_for_no_data_and_is_not_coverage(store, model):
    a3 = _rows(store, model)["A3"]
    assert a3["days_since_last"] == 365


def test_account_column_metric_reads_the_account(store, model):
    assert _rows(store, model)["A2"]["plan_segment"] == "smb"


def test_as_of_with_a_time_counts_events_before_that_instant(store, model):
    rows = _rows(store, model, datetime(2024, 12, 30, 0, 0, 1))
    assert rows["A1"]["days_since_last"] == pytest.approx(1 / 86400, abs=1e-9)
