"""demo: the seeded synthetic book of business is consistent, believable and carries signal."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from healthscore.core import tables
from healthscore.demo.book import generate, latent_health

END = datetime(2025, 7, 1)
ARROW = {
    "string": pa.string(),
    "int64": pa.int64(),
    "float64": pa.float64(),
    "boolean": pa.bool_(),
    "timestamp": pa.timestamp("us"),
}
#: scheduled dates, known in advance, that may lie beyond the end of the data
SCHEDULED = {("subscriptions", "end_date"), ("invoices", "due_at")}
ID_PREFIX = {
    "accounts": "ACC-",
    "subscriptions": "SUB-",
    "users": "USR-",
    "usage_events": "EVT-",
    "tickets": "TKT-",
    "invoices": "INV-",
    "surveys": "SRV-",
    "touchpoints": "TP-",
    "flags": "FLG-",
    "outcomes": "OUT-",
}


@pytest.fixture(scope="module")
def timed_book():
    started = time.perf_counter()
    book = generate(end=END)
    return book, time.perf_counter() - started


@pytest.fixture(scope="module")
def book(timed_book):
    return timed_book[0]


@pytest.fixture(scope="module")
def df(book):
    return {name: t.to_pandas() for name, t in book.items()}


@pytest.fixture(scope="module")
def latent():
    return latent_health(end=END).to_pandas()


@pytest.fixture(scope="module")
def churn_ts(df):
    o = df["outcomes"]
    return o[o.kind == "churned"].set_index("account_id").ts


def test_same_seed_gives_identical_tables():
    kw = dict(accounts=60, months=6, seed=3, end=END)
    first, second = generate(**kw), generate(**kw)
    assert list(first) == list(second)
    for name in first:
        assert first[name].equals(second[name]), name
    assert latent_health(**kw).equals(latent_health(**kw))
    other = generate(**{**kw, "seed": 4})
    assert not other["usage_events"].equals(first["usage_events"])


def test_columns_and_types_match_canonical_tables(book):
    assert list(book) == list(tables.TABLES)
    for name, spec in tables.TABLES.items():
        assert book[name].column_names == list(spec.columns), name
        for column, kind in spec.columns.items():
            assert book[name].schema.field(column).type == ARROW[kind], (name, column)


def test_every_table_has_rows_and_unique_prefixed_ids(book):
    for name, t in book.items():
        key = tables.TABLES[name].primary_key
        ids = t[key].to_pandas()
        assert len(ids) > 0, name
        assert ids.is_unique, name
        assert ids.notna().all() and ids.str.startswith(ID_PREFIX[name]).all(), name


def test_required_columns_are_never_null(book):
    for name, spec in tables.TABLES.items():
        for column in spec.required:
            assert book[name][column].null_count == 0, (name, column)


def test_no_timestamp_at_or_after_end(book):
    for name, spec in tables.TABLES.items():
        for column in spec.timestamp_columns:
            values = book[name][column].to_pandas().dropna()
            if (name, column) in SCHEDULED:
                continue
            assert (values < END).all(), (name, column, values.max())
    # scheduled dates beyond the end exist and make "days to renewal" meaningful
    subs = book["subscriptions"].to_pandas()
    assert (subs.end_date >= END).any()
    inv = book["invoices"].to_pandas()
    assert ((inv.due_at - inv.issued_at) == timedelta(days=30)).all()


def test_every_row_belongs_to_a_known_account(df):
    known = set(df["accounts"].account_id)
    for name, t in df.items():
        assert set(t.account_id) <= known, name
    user_account = df["users"].set_index("user_id").account_id
    for name in ("usage_events", "surveys"):
        t = df[name]
        assert (t.user_id.map(user_account) == t.account_id).all(), name


def test_every_account_has_latent_health_on_some_day_of_the_data(df, latent):
    assert set(latent.account_id) == set(df["accounts"].account_id)
    assert latent.health.between(0.0, 1.0).all()
    assert (latent.day < END).all() and (latent.day >= END - timedelta(days=31 * 18)).all()


def test_users_and_accounts_exist_before_they_act(df):
    acc = df["accounts"].set_index("account_id")
    first_start = df["subscriptions"].groupby("account_id").start_date.min()
    assert (acc.created_at < first_start.reindex(acc.index)).all()
    users = df["users"]
    assert (users.created_at > users.account_id.map(acc.created_at)).all()
    ev = df["usage_events"]
    assert (ev.ts > ev.user_id.map(users.set_index("user_id").created_at)).all()


def test_renewals_chain_without_gap_or_overlap(df, churn_ts):
    subs = df["subscriptions"].sort_values(["account_id", "start_date"])
    for account, s in subs.groupby("account_id"):
        starts, ends = list(s.start_date), list(s.end_date)
        assert all(pd.notna(e) for e in ends[:-1]), account
        assert starts[1:] == ends[:-1], account
        if account not in churn_ts.index:
            # a live account: its current contract is open-ended or ends after the data
            assert pd.isna(ends[-1]) or ends[-1] >= END, account
        else:
            assert ends[-1] == churn_ts[account], account
    assert subs.end_date.isna().mean() < 0.1
    assert set(subs.billing_period_months) == {1, 12}
    assert (subs.billing_period_months == 12).mean() > 0.5
    assert np.allclose(subs.mrr * 12, subs.arr, atol=0.1)


def test_churned_accounts_have_no_usage_after_churn(df, churn_ts):
    assert len(churn_ts) > 0
    assert churn_ts.index.is_unique
    checks = {
        "usage_events": "ts",
        "tickets": "opened_at",
        "invoices": "issued_at",
        "surveys": "ts",
        "touchpoints": "ts",
        "flags": "ts",
        "outcomes": "ts",
        "users": "created_at",
    }
    for name, column in checks.items():
        t = df[name]
        churned = t[t.account_id.isin(churn_ts.index)]
        after = churned[column] > churned.account_id.map(churn_ts)
        assert not after.any(), name
    ev = df["usage_events"]
    last_use = ev[ev.account_id.isin(churn_ts.index)].groupby("account_id").ts.max()
    assert (last_use < churn_ts.reindex(last_use.index)).all()


def test_outcomes_are_recorded_at_renewals_with_believable_churn(df):
    o = df["outcomes"]
    subs = df["subscriptions"]
    renewal_ends = set(zip(subs.account_id, subs.end_date, strict=True))
    assert all(pair in renewal_ends for pair in zip(o.account_id, o.ts, strict=True))
    assert (o[o.kind == "renewed"].arr_delta == 0).all()
    assert (o[o.kind == "expanded"].arr_delta > 0).all()
    assert (o[o.kind == "contracted"].arr_delta < 0).all()
    assert (o[o.kind == "churned"].arr_delta < 0).all()
    churn_rate = (o.kind == "churned").mean()
    print(f"churn rate {churn_rate:.3f} of {len(o)} renewals")
    assert 0.06 <= churn_rate <= 0.18


def test_churn_is_more_likely_for_accounts_with_low_latent_health(df, latent):
    o = df["outcomes"]
    by_account = {a: g.set_index("day").health for a, g in latent.groupby("account_id")}
    h90 = []
    for account, ts in zip(o.account_id, o.ts, strict=True):
        window = by_account[account]
        window = window[(window.index >= ts - timedelta(days=90)) & (window.index < ts)]
        h90.append(window.mean() if len(window) else np.nan)
    o = o.assign(h90=h90).dropna(subset=["h90"])
    churned = o.kind == "churned"
    low = o.h90 < o.h90.median()
    rate_low, rate_high = churned[low].mean(), churned[~low].mean()
    print(f"churn rate: low-health half {rate_low:.3f}, high-health half {rate_high:.3f}")
    assert rate_low > 3 * rate_high + 0.05
    # churned accounts mostly had poor signals before: clearly lower health than renewals
    assert o[churned].h90.mean() < o[~churned].h90.mean() - 0.15


def test_some_accounts_have_a_sudden_shock_in_the_last_six_months(df, latent):
    m = latent.pivot(index="account_id", columns="day", values="health")
    m = m.loc[:, m.columns >= END - timedelta(days=210)].to_numpy()
    windows = np.lib.stride_tricks.sliding_window_view(np.nan_to_num(m, nan=-1.0), 31, axis=1)
    before = windows[..., :30].max(axis=-1)
    now = windows[..., 30]
    drop = np.where(now >= 0, before - now, 0.0).max(axis=1)
    shocked = drop >= 0.2
    print(f"{shocked.mean():.1%} of accounts lose 0.2+ latent health within 30 days")
    assert shocked.mean() >= 0.05
    # the shock is visible in the data: usage in the 30 days after the steepest drop is lower
    days = m.shape[1] - 30
    worst_day = np.where(now >= 0, before - now, 0.0).argmax(axis=1)
    accounts = latent.account_id.unique()
    accounts.sort()
    ev = df["usage_events"]
    counts = []
    for idx in np.nonzero(shocked)[0]:
        if worst_day[idx] > days - 30:
            continue
        at = END - timedelta(days=180) + timedelta(days=int(worst_day[idx]))
        e = ev[ev.account_id == accounts[idx]]
        before_n = ((e.ts >= at - timedelta(days=30)) & (e.ts < at)).sum()
        after_n = ((e.ts >= at) & (e.ts < at + timedelta(days=30))).sum()
        if before_n >= 20:  # enough activity to see a change
            counts.append((before_n, after_n))
    before_n, after_n = np.array(counts).T
    print(f"usage after/before the drop: {after_n.sum() / before_n.sum():.2f}")
    assert len(counts) >= 10
    assert (after_n < before_n).mean() >= 0.75
    assert after_n.sum() < 0.8 * before_n.sum()


def test_all_segments_present_with_realistic_seats(df):
    acc = df["accounts"]
    share = acc.segment.value_counts(normalize=True)
    assert set(share.index) == {"enterprise", "mid-market", "smb"}
    assert share["enterprise"] == pytest.approx(0.10, abs=0.03)
    assert share["mid-market"] == pytest.approx(0.30, abs=0.05)
    assert share["smb"] == pytest.approx(0.60, abs=0.05)
    subs = df["subscriptions"].merge(acc[["account_id", "segment"]], on="account_id")
    bounds = {"enterprise": (100, 2000), "mid-market": (20, 200), "smb": (3, 30)}
    arr_median = {"enterprise": (100e3, 1e6), "mid-market": (20e3, 150e3), "smb": (2e3, 25e3)}
    for seg, (lo, hi) in bounds.items():
        s = subs[subs.segment == seg]
        assert s.seats.between(lo, hi).all(), seg
        assert (s.seats == s.seats.round()).all(), seg
        assert arr_median[seg][0] <= s.arr.median() <= arr_median[seg][1], seg
    # enterprise accounts sit with fewer CSMs than the smb book
    csms = acc.groupby("segment").csm.nunique()
    assert csms["enterprise"] < csms["smb"]
    assert acc.csm.nunique() == 8
    # about a quarter of the accounts are new logos created during the data
    new = (acc.created_at >= END - timedelta(days=548)).mean()
    assert 0.15 <= new <= 0.35


def test_usage_tracks_latent_health(df, latent):
    since = END - timedelta(days=30)
    ev = df["usage_events"]
    recent = ev[ev.ts >= since]
    active = recent.groupby("account_id").user_id.nunique()
    breadth = recent.groupby("account_id").event.nunique()
    subs = df["subscriptions"]
    seats = subs[(subs.start_date < END) & (subs.end_date.isna() | (subs.end_date >= END))]
    seats = seats.set_index("account_id").seats
    health = latent[latent.day >= since].groupby("account_id").health.mean()
    f = pd.DataFrame({"h": health, "act": active / seats, "breadth": breadth})
    f = f.dropna(subset=["h"]).loc[lambda x: x.index.isin(seats.index)].fillna(0.0)
    corr = f.corr(method="spearman")["h"]
    print(corr.to_dict())
    assert corr["act"] > 0.5
    assert corr["breadth"] > 0.5
    assert ev.event.nunique() == 25


def test_support_and_billing_signals_are_believable(df):
    tk = df["tickets"]
    assert set(tk.priority) == {"low", "normal", "high", "urgent"}
    assert (tk.closed_at.dropna() > tk.opened_at[tk.closed_at.notna()]).all()
    esc = tk.dropna(subset=["escalated_at"])
    assert (esc.escalated_at > esc.opened_at).all()
    assert 0.01 <= tk.closed_at.isna().mean() <= 0.06
    assert tk.csat.dropna().between(1, 5).all()
    inv = df["invoices"]
    paid = inv.dropna(subset=["paid_at"])
    assert (paid.paid_at > paid.issued_at).all()
    late = (paid.paid_at > paid.due_at).mean()
    assert 0.02 <= late <= 0.3
    sv = df["surveys"]
    assert sv[sv.kind == "nps"].score.between(0, 10).all()
    assert sv[sv.kind == "csat"].score.between(1, 5).all()
    tp = df["touchpoints"]
    assert set(tp.kind) == {"meeting", "qbr", "call", "email"}
    assert tp[tp.kind == "qbr"].executive.all()
    flags = df["flags"]
    assert {"champion_left", "budget_freeze", "new_champion", "expansion_interest"} <= set(
        flags.kind
    )
    assert flags.resolved_at.notna().any() and flags.resolved_at.isna().any()
    csm = df["accounts"].set_index("account_id").csm
    assert (flags.author == flags.account_id.map(csm)).all()


def test_progress_is_reported_for_long_steps():
    calls = []
    generate(accounts=10, months=2, seed=1, end=END, progress=lambda s, f: calls.append((s, f)))
    steps = [s for s, _ in calls]
    assert "usage_events" in steps and steps[-1] == "done"
    assert all(0.0 <= f <= 1.0 for _, f in calls)


def test_default_size_is_fast_enough_and_sized(timed_book):
    book, seconds = timed_book
    rows = {name: t.num_rows for name, t in book.items()}
    print(f"default size generated in {seconds:.2f} s: {rows}")
    assert book["accounts"].num_rows == 1000
    assert 300_000 <= rows["usage_events"] <= 3_000_000
