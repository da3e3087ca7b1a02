"""Each Definition of DESIGN.md, checked on the hand-computed fixture (tests/fixtures.py)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

import healthscore as hs
from fixtures import AS_OF, memory_store

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


# --- point-in-time cases that only pass with masking (review findings) ---------------------


def _store_with(**extra):
    """The fixture tables in memory, with extra rows appended per table."""
    return memory_store(**extra)


def _model(text):
    return hs.load_model_text(text)


D = AS_OF


def _days(n):
    from datetime import timedelta

    return D + timedelta(days=n)


def test_escalation_after_as_of_is_unseen_for_a_ticket_opened_before():
    s = _store_with(
        tickets=[
            {
                "ticket_id": "T9",
                "account_id": "A2",
                "opened_at": _days(-10),
                "closed_at": None,
                "priority": "low",
                "escalated_at": _days(2),
            }
        ]
    )
    m = _model("""
metrics:
  escalated_90d: {from: tickets, where: escalated_at IS NOT NULL, aggregate: count(), window: 90d}
pillars: {p: {weight: 1, metrics: {escalated_90d: {weight: 1, bad: 2, good: 0}}}}
""")
    assert _rows(s, m)["A2"]["escalated_90d"] == 0
    assert _rows(s, m, _days(3))["A2"]["escalated_90d"] == 2  # T9 and the fixture's T3


def test_invoice_paid_after_as_of_but_before_due_is_unpaid_at_as_of():
    s = _store_with(
        invoices=[
            {
                "invoice_id": "I9",
                "account_id": "A1",
                "issued_at": _days(-10),
                "due_at": _days(20),
                "paid_at": _days(5),
                "amount": 1.0,
            }
        ]
    )
    m = _model("""
metrics:
  unpaid: {from: invoices, time: issued_at, where: paid_at IS NULL, aggregate: count(), window: 90d}
pillars: {p: {weight: 1, metrics: {unpaid: {weight: 1, bad: 2, good: 0}}}}
""")
    assert _rows(s, m)["A1"]["unpaid"] == 1
    assert _rows(s, m, _days(6))["A1"]["unpaid"] == 0


def test_previous_value_of_a_change_is_read_as_of_that_earlier_date():
    s = _store_with(
        tickets=[
            {
                "ticket_id": "T9",
                "account_id": "A2",
                "opened_at": _days(-60),
                "closed_at": None,
                "priority": "low",
                "escalated_at": _days(-10),
            }
        ]
    )
    m = _model("""
metrics:
  esc_open: {from: tickets, where: escalated_at IS NOT NULL, aggregate: count(), change_vs: 30d,
             if_previous_zero: 9}
pillars: {p: {weight: 1, metrics: {esc_open: {weight: 1, bad: 1, good: 0}}}}
""")
    # 30 days earlier the ticket was open but not yet escalated: previous value 0
    assert _rows(s, m)["A2"]["esc_open"] == 9


def test_declared_extra_timestamps_read_null_until_they_happen():
    import pyarrow as pa

    from fixtures import tables

    s = hs.connect("duckdb://")
    for name, t in tables().items():
        if name == "tickets":
            t = t.append_column(
                "first_response_at", pa.array([_days(2), None, None], pa.timestamp("us"))
            )
        if name == "accounts":
            t = t.append_column(
                "churn_notice_at", pa.array([_days(20), None, None, None, None], pa.timestamp("us"))
            )
        s.load(name, t)
    m = _model("""
columns:
  tickets: {first_response_at: timestamp}
  accounts: {churn_notice_at: timestamp}
metrics:
  unanswered: {from: tickets, where: first_response_at IS NULL, aggregate: count()}
  gave_notice: {formula: "CASE WHEN churn_notice_at IS NULL THEN 0 ELSE 1 END"}
pillars: {p: {weight: 1, metrics: {unanswered: {weight: 1, bad: 2, good: 0}}}}
""")
    a1 = _rows(s, m)["A1"]
    assert a1["unanswered"] == 1  # T1 is answered only after D
    assert a1["gave_notice"] == 0
    assert _rows(s, m, _days(21))["A1"]["gave_notice"] == 1


def test_a_count_inside_an_expression_is_zero_for_an_account_without_rows(store):
    m = _model("""
metrics:
  per_day: {from: usage_events, aggregate: count() / 30.0, window: 30d}
  last_seen: {from: usage_events, aggregate: days_since(max(ts))}
pillars: {p: {weight: 1, metrics: {per_day: {weight: 1, bad: 0, good: 1}}}}
""")
    a3 = _rows(store, m)["A3"]
    assert a3["per_day"] == 0.0 and a3["per_day__missing"] is None
    assert a3["last_seen"] is None  # no event ever: no value, not zero


def test_change_is_empty_when_the_previous_window_starts_before_the_account():
    s = _store_with(
        accounts=[
            {
                "account_id": "Y",
                "name": "Young",
                "segment": "smb",
                "csm": "bob",
                "created_at": _days(-45),
            }
        ],
        usage_events=[
            {
                "event_id": f"Y{i}",
                "account_id": "Y",
                "user_id": "y",
                "event": "login",
                "ts": _days(-d),
                "quantity": 1.0,
            }
            for i, d in enumerate([40, 10])
        ],
    )
    m = hs.load_model(MODEL)
    assert _rows(s, m)["Y"]["events_change"] is None  # 1 vs 1, but the window began earlier


def test_log_takes_a_base_and_gives_no_value_for_zero(store):
    m = _model("""
metrics:
  y: {from: usage_events, aggregate: "log(2, count())", window: 30d}
pillars: {p: {weight: 1, metrics: {y: {weight: 1, bad: 0, good: 3}}}}
""")
    rows = _rows(store, m)
    assert rows["A1"]["y"] == pytest.approx(2.584962500721156)  # log2(6)
    assert rows["A3"]["y"] is None  # log of 0 events


def test_a_declared_column_missing_from_the_store_is_named(store):
    m = _model("""
columns: {accounts: {churn_notice_at: timestamp}}
metrics:
  notice: {formula: "CASE WHEN churn_notice_at IS NULL THEN 0 ELSE 1 END"}
  n: {from: tickets, aggregate: count()}
pillars: {p: {weight: 1, metrics: {n: {weight: 1, bad: 2, good: 0}}}}
""")
    with pytest.raises(hs.ScoringError, match="accounts.churn_notice_at is declared in the model"):
        _rows(store, m)
