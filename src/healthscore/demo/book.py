"""demo: seeded synthetic book of business for ``healthscore demo``, tests and calibration.

Place in the flow: a *source* that needs no files. :func:`generate` returns one
pyarrow table per canonical table (exactly the columns and types of
:mod:`healthscore.core.tables`), ready to be loaded into a store like any other source.

How the data is made: every account has a hidden (latent) health in [0, 1] per day —
a baseline by segment, slow noise, onboarding, slow declines over 60–120 days, sudden
shocks (champion leaves, outage, budget freeze), smaller events (reorg, executive
sponsor lost) and recoveries (a new champion). Every observable signal is drawn from
that health: active users and feature breadth, ticket rate, priority, resolution time
and CSAT, late and unpaid invoices, NPS, touchpoints, CSM flags, and finally the
renewal outcome, whose churn probability rises steeply with a low health in the 90 days
before the renewal date. :func:`latent_health` returns the hidden health itself, so
tests and calibration can check that a score recovers it.

Usage is sized to stay near 1.5 million rows at the default 1,000 accounts: each
licensed user works in the product on a few weekdays a month (more when the account is
healthy), so "active users in 30 days / seats" and feature breadth carry the signal,
while daily-active counts are modest.

Everything is a pure function of ``(accounts, months, seed, end)``: each stage draws
from its own random stream, so the same inputs give identical tables.

Examples
--------
>>> from datetime import datetime
>>> tables = generate(accounts=20, months=3, seed=1, end=datetime(2025, 1, 1))
>>> tables["accounts"].num_rows
20
>>> sorted(tables) == sorted(TABLES)
True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from healthscore.core.tables import TABLES
from healthscore.errors import SourceError

__all__ = ["generate", "latent_health", "FEATURES", "SEGMENTS"]

DAY_US = 86_400_000_000
HOUR_US = 3_600_000_000
BURN_IN = 120  # days of health simulated before the data span (renewal look-back, warm-up)
NEVER = np.iinfo(np.int64).max // 4  # "no such day" (far future), safe to add to

SEGMENTS = ("enterprise", "mid-market", "smb")
_SEG_SHARE = (0.10, 0.30, 0.60)
_SEAT_MEDIAN = (250.0, 50.0, 8.0)
_SEAT_SIGMA = (0.7, 0.6, 0.6)
_SEAT_RANGE = ((100, 2000), (20, 200), (3, 30))
_ARR_RANGE = ((100_000.0, 1_000_000.0), (20_000.0, 150_000.0), (2_000.0, 25_000.0))
_PRICE_PER_SEAT = (700.0, 1000.0, 700.0)
_BASE_HEALTH = (0.72, 0.67, 0.63)
_PLANS = ("Enterprise", "Business", "Team", "Starter")

CSMS = (
    "Maya Patel",
    "Jonas Berg",
    "Aisha Okafor",
    "Liam O'Brien",
    "Sofia Rossi",
    "Kenji Watanabe",
    "Elena Petrova",
    "Diego Martinez",
)
# enterprise accounts sit with fewer (strategic) CSMs; smb is a pooled book
_SEG_CSMS = ((0, 1, 2), (2, 3, 4, 5), (4, 5, 6, 7))
_SEG_CSM_WEIGHTS = ((0.4, 0.4, 0.2), (0.2, 0.3, 0.3, 0.2), (0.1, 0.2, 0.35, 0.35))

_NAME_WORDS = (
    "Northwind Acme Bluewater Summit Ironwood Silverline Redstone Brightpath Evergreen "
    "Cobalt Harbor Pinnacle Granite Lumen Meridian Oakridge Quantum Riverside Sterling "
    "Trailhead Vertex Westbrook Aurora Beacon Cascade Driftwood Falcon Highland Juniper "
    "Keystone Lakeshore Maple Nimbus Orion Polaris Redwood Sapphire Tidewater Union "
    "Vanguard Willow Zenith Atlas Bayside Copperfield Eastgate Foxglove Greenfield Horizon "
    "Kestrel"
).split()
_NAME_INDUSTRIES = (
    "Logistics Health Analytics Foods Capital Energy Robotics Software Media Retail "
    "Manufacturing Insurance Labs Pharma Consulting Freight Hospitality Construction "
    "Telecom Education Systems Biotech Outdoor Apparel Security Marine Aerospace Motors "
    "Partners Holdings"
).split()

#: Product features: (name, tier, weight, actions per use). Tier 0 = core (everyone),
#: 1 = standard (used more by healthy accounts), 2 = advanced (only healthy accounts).
FEATURES: tuple[tuple[str, int, float, float], ...] = (
    ("dashboard_view", 0, 3.0, 4.0),
    ("search", 0, 2.5, 3.0),
    ("report_view", 0, 2.0, 2.0),
    ("record_edit", 0, 2.0, 5.0),
    ("login", 0, 1.5, 1.0),
    ("report_create", 1, 0.7, 1.0),
    ("export_csv", 1, 0.6, 1.0),
    ("comment", 1, 0.8, 2.0),
    ("share", 1, 0.6, 1.0),
    ("file_upload", 1, 0.5, 2.0),
    ("notification_settings", 1, 0.3, 1.0),
    ("task_assign", 1, 0.7, 2.0),
    ("calendar_sync", 1, 0.4, 1.0),
    ("mobile_app", 1, 0.6, 3.0),
    ("bulk_edit", 1, 0.4, 1.0),
    ("api_call", 2, 0.5, 20.0),
    ("workflow_automation", 2, 0.4, 3.0),
    ("custom_field", 2, 0.3, 1.0),
    ("integration_sync", 2, 0.4, 5.0),
    ("sso_login", 2, 0.3, 1.0),
    ("audit_log", 2, 0.2, 1.0),
    ("advanced_analytics", 2, 0.4, 2.0),
    ("forecasting", 2, 0.3, 1.0),
    ("sandbox", 2, 0.2, 2.0),
    ("ai_assistant", 2, 0.4, 3.0),
)
# plan gating by segment: smb plans lack some advanced features, mid-market lacks two
_GATED = {1: {"sandbox", "audit_log"}, 2: {"sandbox", "audit_log", "sso_login", "forecasting"}}
_HEALTH_BUCKETS = 20
_USAGE_RATE = 0.06  # chance a typical user works in the product on a weekday at health 0.65
_USER_CHUNK = 2500

# health events (kinds that also become CSM flags carry their flag name)
_EV_ONBOARD, _EV_DECLINE, _EV_CHAMPION, _EV_OUTAGE, _EV_FREEZE = 0, 1, 2, 3, 4
_EV_REORG, _EV_SPONSOR, _EV_NEW_CHAMPION = 5, 6, 7
_FLAG_KINDS = (
    "champion_left",
    "budget_freeze",
    "reorg",
    "exec_sponsor_lost",
    "new_champion",
    "expansion_interest",
)
_EV_FLAG = {_EV_CHAMPION: 0, _EV_FREEZE: 1, _EV_REORG: 2, _EV_SPONSOR: 3, _EV_NEW_CHAMPION: 4}
_FLAG_NOTES = (
    (
        "Our champion has left the company; no replacement identified yet.",
        "Main contact resigned last week, handover unclear.",
        "Champion moved to another role internally and stopped joining calls.",
    ),
    (
        "Customer announced a budget freeze for the rest of the quarter.",
        "Finance froze all software spend pending a review.",
        "Procurement paused renewals and new purchases until further notice.",
    ),
    (
        "Customer is going through a reorganisation; team ownership is changing.",
        "Department merged with another business unit.",
    ),
    (
        "Executive sponsor left; need a new exec relationship.",
        "VP who sponsored the purchase is no longer with the company.",
    ),
    (
        "New champion identified and engaged.",
        "New admin is enthusiastic and driving adoption.",
        "Found a new power user willing to champion the rollout.",
    ),
    (
        "Customer asked about adding seats for another team.",
        "Interest in the advanced analytics add-on.",
        "Discussed expanding to a second region next quarter.",
    ),
)
_COMMENTS = (
    (
        "Too many bugs lately.",
        "Support takes too long to respond.",
        "We are not getting the value we expected.",
        "Hard to get the team to use it.",
        "Pricing is hard to justify right now.",
    ),
    (
        "Does the job, some features are missing.",
        "Fine overall, onboarding could be better.",
        "Decent, but the reports are slow.",
    ),
    (
        "Great product, the team loves it.",
        "Saves us hours every week.",
        "Support is fast and helpful.",
        "The automation features are excellent.",
    ),
)

_ARROW_TYPES = {
    "string": pa.string(),
    "int64": pa.int64(),
    "float64": pa.float64(),
    "boolean": pa.bool_(),
    "timestamp": pa.timestamp("us"),
}


def generate(
    accounts: int = 1000,
    months: int = 18,
    seed: int = 7,
    end: datetime | None = None,
    progress: Callable[[str, float], None] | None = None,
) -> dict[str, pa.Table]:
    """Generate a believable B2B SaaS book of business, one table per canonical table.

    Parameters
    ----------
    accounts
        Number of accounts (about 10 % enterprise, 30 % mid-market, 60 % smb).
    months
        Calendar months of data before ``end``.
    seed
        Random seed; the same ``(accounts, months, seed, end)`` give identical tables.
    end
        End of the data, exclusive (naive UTC or aware; a time of day is dropped).
        Default: today's UTC midnight. No event timestamp is at or after it; only
        scheduled dates (a current contract's ``end_date``, an invoice's ``due_at``)
        may lie beyond it.
    progress
        Called as ``progress(step_name, fraction)`` while the long steps run.

    Returns
    -------
    dict[str, pyarrow.Table]
        Keys are the canonical table names of :data:`healthscore.core.tables.TABLES`, each
        table with exactly its columns, in order, typed string / int64 / float64 /
        bool / timestamp[us]. At the default size usage_events has about 1.5 million
        rows: one row per user, day and feature, ``quantity`` = actions that day.

    Examples
    --------
    >>> from datetime import datetime
    >>> t = generate(accounts=20, months=3, seed=1, end=datetime(2025, 1, 1))
    >>> t["accounts"].column_names
    ['account_id', 'name', 'segment', 'csm', 'created_at']
    >>> t["usage_events"].num_rows > t["users"].num_rows > 0
    True
    >>> pc.max(t["usage_events"]["ts"]).as_py() < datetime(2025, 1, 1)
    True
    """
    report = progress or (lambda step, fraction: None)
    world = _simulate(accounts, months, seed, end, report)
    out: dict[str, pa.Table] = {}
    out["accounts"] = _accounts_table(world)
    out["subscriptions"] = _subscriptions_table(world)
    report("users", 0.0)
    users = _users(world)
    out["users"] = users.table
    out["usage_events"] = _usage_table(world, users, report)
    report("tickets", 0.0)
    out["tickets"] = _tickets_table(world)
    report("invoices", 0.0)
    out["invoices"] = _invoices_table(world)
    report("surveys", 0.0)
    out["surveys"] = _surveys_table(world, users)
    report("touchpoints", 0.0)
    out["touchpoints"] = _touchpoints_table(world)
    out["flags"] = _flags_table(world)
    out["outcomes"] = _outcomes_table(world)
    report("done", 1.0)
    return {name: out[name] for name in TABLES}


def latent_health(
    accounts: int = 1000, months: int = 18, seed: int = 7, end: datetime | None = None
) -> pa.Table:
    """The hidden daily health behind :func:`generate` with the same arguments.

    Not a canonical table: it exists for tests and calibration (does a score recover
    the health that produced the data?). Computing it skips the expensive stages.

    Parameters
    ----------
    accounts, months, seed, end
        As for :func:`generate`; equal arguments describe the same accounts.

    Returns
    -------
    pyarrow.Table
        ``account_id`` (string), ``day`` (timestamp[us], midnight UTC), ``health``
        (float64 in [0, 1]); one row per account and day of the data span on which
        the account exists (from its creation until its churn date, exclusive).

    Examples
    --------
    >>> from datetime import datetime
    >>> h = latent_health(accounts=20, months=3, seed=1, end=datetime(2025, 1, 1))
    >>> h.column_names
    ['account_id', 'day', 'health']
    >>> 0.0 <= pc.min(h["health"]).as_py() <= pc.max(h["health"]).as_py() <= 1.0
    True
    """
    w = _simulate(accounts, months, seed, end, lambda step, fraction: None)
    days = w.start_day + np.arange(w.D)
    lo = np.maximum(w.created_day, w.start_day)
    keep = (days[None, :] >= lo[:, None]) & (days[None, :] < w.alive_end[:, None])
    acc, d = np.nonzero(keep)
    return pa.table(
        {
            "account_id": _labels(acc, w.account_ids),
            "day": _ts(days[d] * DAY_US),
            "health": pa.array(w.Hs[acc, d].astype(np.float64)),
        }
    )


# --------------------------------------------------------------------------- world


@dataclass
class _World:
    """Everything the stages share: accounts, latent health, contracts, outcomes."""

    seed: int
    N: int
    D: int  # days in the data span
    start_day: int  # first day of the span (days since 1970-01-01)
    end_day: int  # exclusive
    grid0: int  # first day of the health grid (start_day - BURN_IN)
    account_ids: np.ndarray
    names: list[str]
    seg: np.ndarray
    csm: np.ndarray
    created_day: np.ndarray
    created_us: np.ndarray
    first_start: np.ndarray
    attention: np.ndarray
    H: np.ndarray  # N x (BURN_IN + D) health, grid days
    ev: dict[str, np.ndarray]  # health events
    subs: dict[str, np.ndarray]
    outs: dict[str, np.ndarray]
    alive_end: np.ndarray  # churn day or end_day (exclusive)
    interest_days: tuple[np.ndarray, np.ndarray]  # expansion_interest flags (acc, day)

    @property
    def Hs(self) -> np.ndarray:
        """Health over the data span only (N x D)."""
        return self.H[:, BURN_IN:]

    def alive(self) -> np.ndarray:
        """N x D: the account is a paying customer on that span day."""
        days = self.start_day + np.arange(self.D)
        return (days[None, :] >= self.first_start[:, None]) & (
            days[None, :] < self.alive_end[:, None]
        )


def _rng(seed: int, stage: str) -> np.random.Generator:
    """An independent random stream per stage, so stages never shift each other."""
    return np.random.default_rng([seed, *stage.encode()])


def _end_day(end: datetime | None) -> int:
    if end is None:
        end = datetime.now(UTC)
    if end.tzinfo is not None:
        end = end.astimezone(UTC).replace(tzinfo=None)
    return int(np.datetime64(end.date(), "D").astype(np.int64))


def _add_months(days, k):
    """Calendar-month arithmetic on day numbers (day of month clamped to month end)."""
    d = np.asarray(days, dtype=np.int64).astype("datetime64[D]")
    m = d.astype("datetime64[M]")
    dom = (d - m.astype("datetime64[D]")).astype(np.int64)
    m2 = m + np.asarray(k, dtype=np.int64)
    dim = ((m2 + 1).astype("datetime64[D]") - m2.astype("datetime64[D]")).astype(np.int64)
    return m2.astype("datetime64[D]").astype(np.int64) + np.minimum(dom, dim - 1)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _simulate(accounts, months, seed, end, report) -> _World:
    from healthscore.core.limits import MAX_DEMO_ACCOUNTS, MAX_DEMO_MONTHS

    if not 1 <= int(accounts) <= MAX_DEMO_ACCOUNTS:
        raise SourceError(
            f"demo: accounts must be from 1 to {MAX_DEMO_ACCOUNTS:,} (got {accounts})"
        )
    if not 1 <= int(months) <= MAX_DEMO_MONTHS:
        raise SourceError(f"demo: months must be from 1 to {MAX_DEMO_MONTHS} (got {months})")
    if int(seed) < 0:
        raise SourceError(f"demo: seed must be 0 or more (got {seed})")
    N, seed = int(accounts), int(seed)
    end_day = _end_day(end)
    start_day = int(_add_months(end_day, -int(months)))
    D = end_day - start_day
    report("accounts", 0.0)
    a = _make_accounts(N, seed, start_day, end_day)
    report("health", 0.0)
    grid0 = start_day - BURN_IN
    H, ev, interest = _make_health(N, seed, grid0, BURN_IN + D, a)
    report("subscriptions", 0.0)
    subs, outs, alive_end = _make_subscriptions(N, seed, start_day, end_day, grid0, H, a, interest)
    return _World(
        seed=seed,
        N=N,
        D=D,
        start_day=start_day,
        end_day=end_day,
        grid0=grid0,
        account_ids=a["account_ids"],
        names=a["names"],
        seg=a["seg"],
        csm=a["csm"],
        created_day=a["created_day"],
        created_us=a["created_us"],
        first_start=a["first_start"],
        attention=a["attention"],
        H=H,
        ev=ev,
        subs=subs,
        outs=outs,
        alive_end=alive_end,
        interest_days=interest,
    )


def _make_accounts(N, seed, start_day, end_day) -> dict:
    rng = _rng(seed, "accounts")
    n_ent = int(round(N * _SEG_SHARE[0]))
    n_mid = int(round(N * _SEG_SHARE[1]))
    seg = rng.permutation(np.repeat([0, 1, 2], [n_ent, n_mid, N - n_ent - n_mid]))
    med = np.array(_SEAT_MEDIAN)[seg]
    sig = np.array(_SEAT_SIGMA)[seg]
    lo_s = np.array([r[0] for r in _SEAT_RANGE])[seg]
    hi_s = np.array([r[1] for r in _SEAT_RANGE])[seg]
    seats = np.clip(np.round(rng.lognormal(np.log(med), sig)), lo_s, hi_s)
    lo_a = np.array([r[0] for r in _ARR_RANGE])[seg]
    hi_a = np.array([r[1] for r in _ARR_RANGE])[seg]
    arr = seats * np.array(_PRICE_PER_SEAT)[seg] * rng.lognormal(0.0, 0.25, N)
    arr = np.round(np.clip(arr, lo_a, hi_a), -1)
    price = arr / seats

    n_new = int(round(0.25 * N))
    new_logo = rng.permutation(np.arange(N) < n_new)
    latest_new = max(start_day + 1, end_day - 21)
    created_day = np.where(
        new_logo,
        rng.integers(start_day, latest_new, N),
        start_day - rng.integers(30, 5 * 365, N),
    )
    created_us = created_day * DAY_US + rng.integers(8 * 3600, 18 * 3600, N) * 1_000_000
    first_start = np.minimum(created_day + rng.integers(1, 22, N), end_day - 1)
    first_start = np.maximum(first_start, created_day + 1)

    csm = np.empty(N, dtype=np.int64)
    for s in range(3):
        idx = np.nonzero(seg == s)[0]
        csm[idx] = rng.choice(_SEG_CSMS[s], size=idx.size, p=_SEG_CSM_WEIGHTS[s])
    neglected = rng.random(N) < np.array([0.05, 0.12, 0.2])[seg]
    attention = np.where(neglected, 0.3, rng.lognormal(0.0, 0.3, N))
    open_ended = rng.random(N) < np.array([0.0, 0.04, 0.1])[seg]
    billing = np.where(rng.random(N) < np.array([0.85, 0.7, 0.6])[seg], 12, 1)
    billing = np.where(open_ended, 1, billing)
    auto_renew = np.where(open_ended, True, rng.random(N) < 0.7)
    plan = np.where(seg == 0, 0, np.where(seg == 1, 1, np.where(seats >= 10, 2, 3)))

    n_combo = len(_NAME_WORDS) * len(_NAME_INDUSTRIES)
    perm = rng.permutation(n_combo)
    names = []
    for i in range(N):
        c = int(perm[i % n_combo])
        word, industry = divmod(c, len(_NAME_INDUSTRIES))
        name = f"{_NAME_WORDS[word]} {_NAME_INDUSTRIES[industry]}"
        names.append(name if i < n_combo else f"{name} {i // n_combo + 1}")
    account_ids = np.array([f"ACC-{i + 1:05d}" for i in range(N)], dtype=object)
    return dict(
        account_ids=account_ids,
        names=names,
        seg=seg,
        seats=seats,
        arr=arr,
        price=price,
        created_day=created_day,
        created_us=created_us,
        first_start=first_start,
        csm=csm,
        neglected=neglected,
        attention=attention,
        open_ended=open_ended,
        billing=billing,
        auto_renew=auto_renew,
        plan=plan,
    )


def _make_health(N, seed, grid0, T, a):
    """Latent health per account and grid day, plus the events that shaped it."""
    rng = _rng(seed, "health")
    seg = a["seg"]
    base = np.clip(
        np.array(_BASE_HEALTH)[seg] + rng.normal(0.0, 0.11, N) - 0.06 * a["neglected"],
        0.15,
        0.92,
    )
    # slow wandering: AR(1) with a stationary sd of 0.05
    phi, sd = 0.97, 0.05
    eps = rng.normal(0.0, sd * np.sqrt(1 - phi**2), (T, N))
    ou = np.empty((T, N))
    x = rng.normal(0.0, sd, N)
    for t in range(T):
        x = phi * x + eps[t]
        ou[t] = x

    start_t = a["first_start"] - grid0  # grid index of the first contract day
    scale = T / 548.0  # event rates below are per 18 months

    # Each event: acc, kind, t0 (grid day), down (days to full effect), m (size, > 0 is
    # bad), r0 (recovery start), up (recovery days), frac (share recovered), flag_end
    # (grid day the CSM flag is resolved, -1 = never).
    cols: dict[str, list[np.ndarray]] = {
        k: [] for k in ("acc", "kind", "t0", "down", "m", "r0", "up", "frac", "flag_end")
    }

    def add(acc, kind, t0, *, m, down=1, r0=NEVER, up=1, frac=0.0, flag_end=-1):
        values = dict(acc=acc, kind=kind, t0=t0, down=down, m=m, r0=r0, up=up, frac=frac)
        values["flag_end"] = flag_end
        for k, v in values.items():
            dtype = np.float64 if k in ("m", "frac") else np.int64
            cols[k].append(np.broadcast_to(np.asarray(v, dtype=dtype), (len(acc),)))

    def draw(rate):
        counts = rng.poisson(rate * scale, N)
        acc = np.repeat(np.arange(N), counts)
        t0 = rng.integers(0, T, acc.size)
        keep = t0 >= start_t[acc] + 30  # nothing happens in the first month of a contract
        return acc[keep], t0[keep]

    # onboarding: new accounts start around 0.5 and settle on their baseline in ~90 days
    # (in full effect from the day the account is created)
    created_t = a["created_day"] - grid0
    add(np.arange(N), _EV_ONBOARD, created_t - 1, m=base - 0.5, r0=created_t, up=90, frac=1.0)
    # slow declines (neglected accounts more often), a third of them recover
    counts = (rng.random(N) < np.where(a["neglected"], 0.45, 0.2)).astype(np.int64)
    acc = np.repeat(np.arange(N), counts)
    t0 = rng.integers(0, T, acc.size)
    keep = t0 >= start_t[acc] + 30
    acc, t0 = acc[keep], t0[keep]
    n = acc.size
    down = rng.integers(60, 121, n)
    rec = rng.random(n) < 0.35
    r0 = t0 + down + rng.integers(20, 91, n)
    m = rng.uniform(0.15, 0.4, n)
    up = rng.integers(30, 91, n)
    frac = np.where(rec, rng.uniform(0.5, 1.0, n), 0.0)
    add(acc, _EV_DECLINE, t0, m=m, down=down, r0=np.where(rec, r0, NEVER), up=up, frac=frac)
    # sudden shocks
    acc, t0 = draw(0.36)
    n = acc.size
    kind = rng.choice([_EV_CHAMPION, _EV_OUTAGE, _EV_FREEZE], size=n, p=[0.4, 0.3, 0.3])
    m = np.where(
        kind == _EV_CHAMPION,
        rng.uniform(0.25, 0.45, n),
        np.where(kind == _EV_OUTAGE, rng.uniform(0.2, 0.32, n), rng.uniform(0.2, 0.35, n)),
    )
    down = np.where(kind == _EV_FREEZE, rng.integers(1, 8, n), rng.integers(1, 4, n))
    champ_rec = rng.random(n) < 0.5
    champ_r0 = t0 + rng.integers(30, 121, n)
    freeze_r0 = t0 + rng.integers(60, 181, n)
    r0 = np.select(
        [kind == _EV_CHAMPION, kind == _EV_OUTAGE],
        [np.where(champ_rec, champ_r0, NEVER), t0 + rng.integers(5, 16, n)],
        freeze_r0,
    )
    up = np.select(
        [kind == _EV_CHAMPION, kind == _EV_OUTAGE],
        [rng.integers(30, 61, n), rng.integers(20, 46, n)],
        np.full(n, 30),
    )
    frac = np.select(
        [kind == _EV_CHAMPION, kind == _EV_OUTAGE],
        [np.where(champ_rec, rng.uniform(0.6, 1.0, n), 0.0), rng.uniform(0.8, 1.0, n)],
        rng.uniform(0.5, 1.0, n),
    )
    flag_end = np.select(
        [kind == _EV_CHAMPION, kind == _EV_OUTAGE],
        [np.where(champ_rec, champ_r0, -1), np.full(n, -1)],
        freeze_r0,
    )
    for k in (_EV_CHAMPION, _EV_OUTAGE, _EV_FREEZE):
        s = kind == k
        add(acc[s], k, t0[s], m=m[s], down=down[s], r0=r0[s], up=up[s], frac=frac[s],
            flag_end=flag_end[s])  # fmt: skip
    # a found replacement champion is its own (positive) flag
    s = (kind == _EV_CHAMPION) & champ_rec
    resolved = champ_r0[s] + rng.integers(30, 61, s.sum())
    add(acc[s], _EV_NEW_CHAMPION, champ_r0[s], m=0.0, flag_end=resolved)
    # reorganisations: mild, recover
    acc, t0 = draw(0.12)
    n = acc.size
    down = rng.integers(5, 21, n)
    r0 = t0 + down + rng.integers(20, 61, n)
    up = rng.integers(30, 61, n)
    m = rng.uniform(0.05, 0.15, n)
    resolved = np.where(rng.random(n) < 0.7, r0 + up, -1)
    add(acc, _EV_REORG, t0, m=m, down=down, r0=r0, up=up, frac=1.0, flag_end=resolved)
    # executive sponsor lost
    acc, t0 = draw(0.08)
    n = acc.size
    rec = rng.random(n) < 0.4
    r0 = t0 + rng.integers(60, 151, n)
    down = rng.integers(1, 6, n)
    m = rng.uniform(0.1, 0.2, n)
    add(acc, _EV_SPONSOR, t0, m=m, down=down, r0=np.where(rec, r0, NEVER), up=30,
        frac=np.where(rec, 1.0, 0.0), flag_end=np.where(rec, r0, -1))  # fmt: skip
    # a new champion out of the blue lifts health
    acc, t0 = draw(0.08)
    n = acc.size
    down = rng.integers(20, 41, n)
    m = -rng.uniform(0.08, 0.18, n)
    add(acc, _EV_NEW_CHAMPION, t0, m=m, down=down, flag_end=t0 + rng.integers(30, 61, n))

    ev = {k: np.concatenate(v) for k, v in cols.items()}
    t = np.arange(T)[None, :]
    ramp_down = np.clip((t - ev["t0"][:, None]) / ev["down"][:, None], 0.0, 1.0)
    ramp_up = np.clip((t - ev["r0"][:, None]) / ev["up"][:, None], 0.0, 1.0)
    effect = ev["m"][:, None] * (ramp_down - ev["frac"][:, None] * ramp_up)
    total = np.zeros((N, T))
    np.add.at(total, ev["acc"], effect)
    H = np.clip(base[:, None] + ou.T - total, 0.02, 0.98)

    # expansion interest: healthy accounts occasionally ask about more
    rate = np.where(H > 0.72, 0.002, 0.0)
    rate[np.arange(T)[None, :] < start_t[:, None] + 30] = 0.0
    ia, it = np.nonzero(rng.random((N, T)) < rate)
    ev["t0"] = ev["t0"].astype(np.int64)
    return H, ev, (ia, it + grid0)


def _make_subscriptions(N, seed, start_day, end_day, grid0, H, a, interest):
    """Contract chains, renewal outcomes (churn driven by health) and churn dates."""
    rng = _rng(seed, "subscriptions")
    seg = a["seg"]
    lo_s = np.array([r[0] for r in _SEAT_RANGE])
    hi_s = np.array([r[1] for r in _SEAT_RANGE])
    churn_base = np.array([-3.35, -2.8, -2.4])
    ia, iday = interest
    interest_by_acc: dict[int, np.ndarray] = {}
    order = np.argsort(ia, kind="stable")
    for i, days in zip(*_group(ia[order], iday[order]), strict=True):
        interest_by_acc[int(i)] = days

    # open-ended monthly subscriptions churn on any day, with a hazard rising as health drops
    Hs = H[:, start_day - grid0 :]
    hazard = 0.0004 * np.exp(8.0 * (0.5 - Hs))
    days = start_day + np.arange(Hs.shape[1])
    hit = (rng.random(Hs.shape) < hazard) & (days[None, :] > a["first_start"][:, None] + 30)
    hit[:, 0] = False  # a churn on the first day would leave the account without any data
    open_churn = np.where(hit.any(axis=1), start_day + hit.argmax(axis=1), NEVER)

    S: dict[str, list] = {k: [] for k in ("acc", "start", "end", "seats", "arr", "plan")}
    R: dict[str, list] = {k: [] for k in ("acc", "day", "kind", "delta")}
    alive_end = np.full(N, end_day, dtype=np.int64)

    def sub(i, s, e, seats, arr):
        for k, v in zip(S, (i, s, e, seats, arr, a["plan"][i]), strict=True):
            S[k].append(v)

    def outcome(i, day, kind, delta):
        for k, v in zip(R, (i, day, kind, delta), strict=True):
            R[k].append(v)

    for i in range(N):
        s, seats, price = int(a["first_start"][i]), float(a["seats"][i]), float(a["price"][i])
        g = int(seg[i])
        arr = float(a["arr"][i])
        if a["open_ended"][i]:
            c = int(open_churn[i])
            if c < end_day:
                sub(i, s, c, seats, arr)
                outcome(i, c, 3, -arr)
                alive_end[i] = c
            else:
                sub(i, s, -1, seats, arr)
            continue
        while True:
            e = int(_add_months(s, 12))
            sub(i, s, e, seats, arr)
            if e >= end_day:
                break
            u = rng.random(3)
            if e <= start_day:  # history before the data span: growth, no recorded outcome
                h90, interested = 0.7, False
                p_churn = 0.0
            else:
                h90 = float(H[i, e - 90 - grid0 : e - grid0].mean())
                days_i = interest_by_acc.get(i)
                interested = days_i is not None and bool(((days_i >= e - 120) & (days_i < e)).any())
                logit = churn_base[g] - 11.0 * (h90 - 0.5) + (0.0 if a["auto_renew"][i] else 0.3)
                p_churn = float(_sigmoid(logit))
            if u[0] < p_churn:
                outcome(i, e, 3, -arr)
                alive_end[i] = e
                break
            p_exp = float(_sigmoid(-1.6 + 8.0 * (h90 - 0.7) + (1.5 if interested else 0.0)))
            p_con = float(_sigmoid(-2.4 + 8.0 * (0.5 - h90)))
            new_seats = seats
            if u[1] < p_exp:
                new_seats = np.ceil(seats * rng.uniform(1.1, 1.6))
            elif u[2] < p_con:
                new_seats = np.floor(seats * rng.uniform(0.6, 0.9))
            new_seats = float(np.clip(new_seats, lo_s[g], hi_s[g]))
            new_arr = float(np.round(new_seats * price, -1)) if new_seats != seats else arr
            delta = new_arr - arr
            if e > start_day:
                outcome(i, e, 0 if delta == 0 else (1 if delta > 0 else 2), delta)
            seats, arr, s = new_seats, new_arr, e

    subs = {k: np.asarray(v) for k, v in S.items()}
    subs["seats"] = subs["seats"].astype(np.float64)
    subs["arr"] = subs["arr"].astype(np.float64)
    subs["billing"] = a["billing"][subs["acc"]]
    subs["auto_renew"] = a["auto_renew"][subs["acc"]]
    outs = {k: np.asarray(v) for k, v in R.items()}
    if outs["acc"].size == 0:
        outs = {
            "acc": np.zeros(0, np.int64),
            "day": np.zeros(0, np.int64),
            "kind": np.zeros(0, np.int64),
            "delta": np.zeros(0),
        }
    return subs, outs, alive_end


def _group(keys: np.ndarray, values: np.ndarray):
    """Split ``values`` (sorted by ``keys``) into (unique keys, list of arrays)."""
    if keys.size == 0:
        return [], []
    uniq, starts = np.unique(keys, return_index=True)
    return list(uniq), np.split(values, starts[1:])


# --------------------------------------------------------------------------- arrow helpers


def _ts(us: np.ndarray, null: np.ndarray | None = None) -> pa.Array:
    us = np.asarray(us, dtype=np.int64)
    return pa.array(us, type=pa.timestamp("us"), mask=null)


def _labels(idx: np.ndarray, labels, null: np.ndarray | None = None) -> pa.Array:
    """Strings by index into ``labels`` (fast: a dictionary array cast to plain strings)."""
    indices = pa.array(np.asarray(idx, dtype=np.int32), mask=null)
    return pa.DictionaryArray.from_arrays(indices, pa.array(list(labels), pa.string())).cast(
        pa.string()
    )


def _ids(prefix: str, n: int, width: int) -> pa.Array:
    numbers = pc.cast(pa.array(np.arange(1, n + 1, dtype=np.int64)), pa.string())
    return pc.binary_join_element_wise(prefix, pc.utf8_lpad(numbers, width, "0"), "")


def _table(name: str, columns: dict[str, pa.Array]) -> pa.Table:
    spec = TABLES[name].columns
    assert list(columns) == list(spec), (name, list(columns))
    schema = pa.schema([pa.field(c, _ARROW_TYPES[t]) for c, t in spec.items()])
    arrays = []
    for c, t in spec.items():
        x = columns[c]
        if isinstance(x, pa.ChunkedArray):
            x = x.combine_chunks()
        elif not isinstance(x, pa.Array):
            x = pa.array(x)
        arrays.append(x.cast(_ARROW_TYPES[t]))
    return pa.Table.from_arrays(arrays, schema=schema)


def _time_of_day(rng: np.random.Generator, n: int, mean_h: float = 14.0, sd_h: float = 3.0):
    """Microseconds into the day, bunched around working hours (UTC)."""
    sec = np.clip(rng.normal(mean_h * 3600, sd_h * 3600, n), 0, 86_399).astype(np.int64)
    return sec * 1_000_000


def _weekend(days: np.ndarray) -> np.ndarray:
    return (days + 3) % 7 >= 5  # 1970-01-01 was a Thursday


# --------------------------------------------------------------------------- tables


def _accounts_table(w: _World) -> pa.Table:
    return _table(
        "accounts",
        {
            "account_id": pa.array(list(w.account_ids), pa.string()),
            "name": pa.array(w.names, pa.string()),
            "segment": _labels(w.seg, SEGMENTS),
            "csm": _labels(w.csm, CSMS),
            "created_at": _ts(w.created_us),
        },
    )


def _subscriptions_table(w: _World) -> pa.Table:
    s = w.subs
    sub_ids = _ids("SUB-", len(s["acc"]), 6)
    arr = s["arr"]
    open_end = s["end"] < 0
    return _table(
        "subscriptions",
        {
            "subscription_id": sub_ids,
            "account_id": _labels(s["acc"], w.account_ids),
            "plan": _labels(s["plan"], _PLANS),
            "seats": pa.array(s["seats"]),
            "mrr": pa.array(np.round(arr / 12.0, 2)),
            "arr": pa.array(arr),
            "start_date": _ts(s["start"] * DAY_US),
            "end_date": _ts(np.where(open_end, 0, s["end"]) * DAY_US, open_end),
            "billing_period_months": pa.array(s["billing"].astype(np.int64)),
            "auto_renew": pa.array(s["auto_renew"].astype(bool)),
        },
    )


@dataclass
class _Users:
    table: pa.Table
    acc: np.ndarray  # account index per user (users sorted by account, then created)
    created_day: np.ndarray
    last_day: np.ndarray  # exclusive: no activity from this day (account churn, user left)
    engagement: np.ndarray
    key: np.ndarray  # acc * 2**32 + created_day, sorted: "users of account a created before d"


def _users(w: _World) -> _Users:
    rng = _rng(w.seed, "users")
    alive = w.alive()
    # seats of each account's latest contract
    s = w.subs
    last = np.zeros(w.N, dtype=np.int64)
    last[s["acc"]] = np.arange(len(s["acc"]))  # later rows overwrite earlier ones
    seats = s["seats"][last]
    h_mean = np.where(
        alive.any(axis=1),
        (w.Hs * alive).sum(axis=1) / np.maximum(alive.sum(1), 1),
        w.H[:, BURN_IN - 30 : BURN_IN].mean(axis=1),
    )
    share = np.clip(0.25 + 0.75 * h_mean + rng.normal(0.0, 0.07, w.N), 0.3, 1.0)
    n_users = np.maximum(1, np.round(seats * share)).astype(np.int64)
    acc = np.repeat(np.arange(w.N), n_users)
    lo = w.created_day[acc] + 1
    hi = w.alive_end[acc]  # exclusive
    span = np.maximum(hi - lo, 1)
    created_day = lo + np.floor(rng.random(acc.size) ** 2.0 * span).astype(np.int64)
    created_day = np.minimum(created_day, hi - 1)
    order = np.lexsort((created_day, acc))
    acc, created_day = acc[order], created_day[order]
    created_us = created_day * DAY_US + _time_of_day(rng, acc.size, 13.0, 3.0)
    engagement = np.clip(rng.gamma(1.5, 1 / 1.5, acc.size), 0.05, 4.0)
    last_day = w.alive_end[acc].copy()
    # a champion who leaves is the account's most engaged user: their activity stops
    ev = w.ev
    champ = np.nonzero(ev["kind"] == _EV_CHAMPION)[0]
    starts = np.searchsorted(acc, np.arange(w.N + 1))
    for e in champ:
        i, day = int(ev["acc"][e]), int(ev["t0"][e]) + w.grid0
        lo_u, hi_u = starts[i], starts[i + 1]
        cand = np.nonzero(created_day[lo_u:hi_u] < day)[0]
        if cand.size:
            u = lo_u + cand[np.argmax(engagement[lo_u:hi_u][cand])]
            last_day[u] = min(last_day[u], day)
    table = _table(
        "users",
        {
            "user_id": _ids("USR-", acc.size, 6),
            "account_id": _labels(acc, w.account_ids),
            "created_at": _ts(created_us),
        },
    )
    key = acc.astype(np.int64) * 2**32 + created_day
    return _Users(table, acc, created_day, last_day, engagement, key)


def _feature_cdf() -> np.ndarray:
    """Cumulative feature choice probabilities per (segment, health bucket)."""
    names = [f[0] for f in FEATURES]
    tier = np.array([f[1] for f in FEATURES])
    weight = np.array([f[2] for f in FEATURES])
    h = (np.arange(_HEALTH_BUCKETS) + 0.5) / _HEALTH_BUCKETS
    w = np.where(
        tier[None, :] == 0,
        weight[None, :],
        np.where(
            tier[None, :] == 1,
            weight[None, :] * (0.2 + 1.6 * h[:, None] ** 2),
            weight[None, :] * 6.0 * np.maximum(h[:, None] - 0.35, 0.0) ** 2,
        ),
    )
    out = np.empty((3, _HEALTH_BUCKETS, len(FEATURES)))
    for s in range(3):
        gate = np.array([n not in _GATED.get(s, set()) for n in names])
        ws = w * gate[None, :]
        out[s] = np.cumsum(ws, axis=1) / ws.sum(axis=1, keepdims=True)
    out[..., -1] = 1.0
    return out


def _usage_table(w: _World, users: _Users, report) -> pa.Table:
    rng = _rng(w.seed, "usage")
    D = w.D
    days = w.start_day + np.arange(D)
    weekday = np.where(_weekend(days), 0.12, 1.0)
    # per account-day propensity: fewer users show up as health drops
    A = (_USAGE_RATE * (w.Hs / 0.65) ** 1.5 * weekday[None, :]).astype(np.float32)
    cdf = _feature_cdf()
    qty_lam = np.array([f[3] for f in FEATURES])
    n_f = len(FEATURES)
    c_lo = np.maximum(users.created_day + 1, w.first_start[users.acc]) - w.start_day
    c_hi = users.last_day - w.start_day
    parts: list[tuple[np.ndarray, ...]] = []
    U = users.acc.size
    for lo in range(0, U, _USER_CHUNK):
        hi = min(U, lo + _USER_CHUNK)
        report("usage_events", lo / max(U, 1))
        acc = users.acc[lo:hi]
        P = A[acc] * users.engagement[lo:hi, None].astype(np.float32)
        d = np.arange(D)[None, :]
        valid = (d >= c_lo[lo:hi, None]) & (d < c_hi[lo:hi, None])
        active = (rng.random(P.shape, dtype=np.float32) < P) & valid
        uu, dd = np.nonzero(active)
        if uu.size == 0:
            continue
        ua = acc[uu]
        h = w.Hs[ua, dd]
        bucket = np.minimum((h * _HEALTH_BUCKETS).astype(np.int64), _HEALTH_BUCKETS - 1)
        c = cdf[w.seg[ua], bucket]  # (n, features)
        # a first feature for every active user-day, a second and third for broader use
        picks = [np.arange(uu.size)]
        extra2 = rng.random(uu.size) < 0.25 + 0.35 * h
        extra3 = extra2 & (rng.random(uu.size) < 0.1 + 0.4 * h)
        picks += [np.nonzero(extra2)[0], np.nonzero(extra3)[0]]
        rows = np.concatenate(picks)
        r = rng.random(rows.size)
        feat = (r[:, None] > c[rows]).sum(axis=1)
        feat = np.minimum(feat, n_f - 1)
        key = np.unique(rows * 32 + feat)  # one row per (user, day, feature)
        rows, feat = key // 32, key % 32
        n = rows.size
        hq = h[rows]
        qty = 1.0 + rng.poisson(qty_lam[feat] * (0.5 + hq))
        ts = days[dd[rows]] * DAY_US + _time_of_day(rng, n)
        parts.append((uu[rows] + lo, ua[rows], feat, ts, qty.astype(np.float64)))
    report("usage_events", 1.0)
    if parts:
        user, acc, feat, ts, qty = (np.concatenate(x) for x in zip(*parts, strict=True))
    else:
        user = acc = feat = ts = np.zeros(0, np.int64)
        qty = np.zeros(0)
    order = np.lexsort((feat, user, ts))
    user, acc, feat, ts, qty = user[order], acc[order], feat[order], ts[order], qty[order]
    return _table(
        "usage_events",
        {
            "event_id": _ids("EVT-", ts.size, 8),
            "account_id": _labels(acc, w.account_ids),
            "user_id": users.table["user_id"].take(pa.array(user.astype(np.int64))),
            "event": _labels(feat, [f[0] for f in FEATURES]),
            "ts": _ts(ts),
            "quantity": pa.array(qty),
        },
    )


def _event_grid(w: _World, kind: int, length: np.ndarray | None = None) -> list[tuple]:
    """(account, first span day index, last span day index exclusive) of one event kind."""
    ev = w.ev
    s = np.nonzero(ev["kind"] == kind)[0]
    out = []
    for j, e in enumerate(s):
        a0 = int(ev["t0"][e]) - BURN_IN
        a1 = a0 + int(length[j]) if length is not None else int(ev["r0"][e]) - BURN_IN
        out.append((int(ev["acc"][e]), max(a0, 0), min(max(a1, 0), w.D)))
    return out


def _tickets_table(w: _World) -> pa.Table:
    rng = _rng(w.seed, "tickets")
    D, N = w.D, w.N
    days = w.start_day + np.arange(D)
    alive = w.alive()
    weekday = np.where(_weekend(days), 0.3, 1.0)
    base = np.array([0.06, 0.025, 0.008])[w.seg]
    rate = base[:, None] * (0.5 + 3.0 * (1.0 - w.Hs) ** 2) * weekday[None, :]
    burst = np.zeros((N, D))
    n_out = int((w.ev["kind"] == _EV_OUTAGE).sum())
    burst_rate = np.array([1.5, 0.6, 0.3])
    for i, d0, d1 in _event_grid(w, _EV_OUTAGE, rng.integers(1, 5, n_out)):
        burst[i, d0:d1] += burst_rate[w.seg[i]]
    rate = (rate + burst) * alive
    counts = rng.poisson(rate)
    acc, dd = np.nonzero(counts)
    rep = counts[acc, dd]
    acc, dd = np.repeat(acc, rep), np.repeat(dd, rep)
    n = acc.size
    h = w.Hs[acc, dd]
    outage = rng.random(n) < burst[acc, dd] / np.maximum(rate[acc, dd], 1e-12)
    # priority: low / normal / high / urgent, heavier when unhealthy, mostly high during outages
    bad = 1.0 - h
    p = np.stack([0.35 - 0.2 * bad, 0.5 - 0.1 * bad, 0.11 + 0.2 * bad, 0.04 + 0.1 * bad], axis=1)
    p[outage] = [0.03, 0.17, 0.45, 0.35]
    prio = (rng.random(n)[:, None] > np.cumsum(p, axis=1)[:, :-1]).sum(axis=1)
    opened = days[dd] * DAY_US + _time_of_day(rng, n, 13.0, 3.5)
    median_h = np.array([30.0, 16.0, 8.0, 4.0])[prio] * (1.0 + 1.5 * bad)
    res_us = (rng.lognormal(np.log(median_h), 1.0) * HOUR_US).astype(np.int64) + 60_000_000
    closed = opened + res_us
    p_esc = 0.02 + 0.12 * bad + np.array([0.0, 0.0, 0.08, 0.25])[prio] + 0.2 * outage
    escalated = rng.random(n) < p_esc
    esc = opened + (res_us * rng.uniform(0.1, 0.7, n)).astype(np.int64)
    end_us = w.end_day * DAY_US
    churn_us = w.alive_end[acc] * DAY_US
    # a backlog: some recent tickets are still open at the end (more for unhealthy accounts)
    recent = dd >= D - 90
    stuck = recent & (rng.random(n) < 0.05 + 0.2 * bad)
    closed = np.where(churn_us < end_us, np.minimum(closed, churn_us - 1), closed)
    closed_null = stuck | (closed >= end_us)
    esc_null = ~escalated | (esc >= end_us) | (esc >= churn_us) | (~closed_null & (esc > closed))
    rated = ~closed_null & (rng.random(n) < 0.45)
    csat = np.clip(np.round(rng.normal(1.2 + 4.0 * h - 0.5 * escalated, 0.8)), 1, 5)
    order = np.lexsort((acc, opened))
    return _table(
        "tickets",
        {
            "ticket_id": _ids("TKT-", n, 6),
            "account_id": _labels(acc[order], w.account_ids),
            "opened_at": _ts(opened[order]),
            "closed_at": _ts(np.where(closed_null, 0, closed)[order], closed_null[order]),
            "priority": _labels(prio[order], ("low", "normal", "high", "urgent")),
            "escalated_at": _ts(np.where(esc_null, 0, esc)[order], esc_null[order]),
            "csat": pa.array(csat[order], mask=~rated[order]),
        },
    )


def _freeze_grid(w: _World) -> np.ndarray:
    frz = np.zeros((w.N, w.D), dtype=bool)
    for i, d0, d1 in _event_grid(w, _EV_FREEZE):
        frz[i, d0:d1] = True
    return frz


def _invoices_table(w: _World) -> pa.Table:
    rng = _rng(w.seed, "invoices")
    s = w.subs
    bp = s["billing"].astype(np.int64)
    acc = s["acc"]
    stop = np.where(s["end"] < 0, w.alive_end[acc], s["end"])
    stop = np.minimum(np.minimum(stop, w.end_day), w.alive_end[acc])
    months = np.maximum(
        (
            stop.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)
            - s["start"].astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)
        )
        + 1,
        1,
    )
    n_per = np.ceil(months / bp).astype(np.int64)
    sub = np.repeat(np.arange(len(acc)), n_per)
    k = np.arange(sub.size) - np.repeat(np.cumsum(n_per) - n_per, n_per)
    issued = _add_months(s["start"][sub], k * bp[sub])
    keep = (issued >= w.start_day) & (issued < stop[sub])
    sub, issued = sub[keep], issued[keep]
    a = acc[sub]
    n = sub.size
    amount = np.round(s["arr"][sub] * bp[sub] / 12.0, 2)
    h = w.Hs[a, issued - w.start_day]
    frz = _freeze_grid(w)[a, issued - w.start_day]
    p_late = _sigmoid(-2.6 + 6.0 * (0.55 - h) + 2.0 * frz)
    p_unpaid = _sigmoid(-4.8 + 6.0 * (0.5 - h) + 1.5 * frz)
    u = rng.random(n)
    unpaid = u < p_unpaid
    late = ~unpaid & (u < p_unpaid + p_late)
    delay_days = np.where(late, 31 + rng.exponential(20.0, n), rng.uniform(1, 30, n))
    issued_us = issued * DAY_US
    paid = issued_us + (delay_days * DAY_US).astype(np.int64)
    churn_us = w.alive_end[a] * DAY_US
    paid_null = unpaid | (paid >= w.end_day * DAY_US) | (paid >= churn_us)
    order = np.lexsort((a, issued_us))
    return _table(
        "invoices",
        {
            "invoice_id": _ids("INV-", n, 6),
            "account_id": _labels(a[order], w.account_ids),
            "issued_at": _ts(issued_us[order]),
            "due_at": _ts((issued_us + 30 * DAY_US)[order]),
            "paid_at": _ts(np.where(paid_null, 0, paid)[order], paid_null[order]),
            "amount": pa.array(amount[order]),
        },
    )


def _surveys_table(w: _World, users: _Users) -> pa.Table:
    rng = _rng(w.seed, "surveys")
    D = w.D
    alive = w.alive()
    # NPS campaigns twice a year, each open for three weeks
    camps = np.arange(30, D, 182)
    acc_l, day_l, kind_l = [], [], []
    for c in camps:
        al = np.nonzero(alive[:, c])[0]
        lam = np.array([4.0, 2.0, 0.9])[w.seg[al]] * (0.4 + 0.8 * w.Hs[al, c])
        cnt = rng.poisson(lam)
        a = np.repeat(al, cnt)
        d = c + rng.integers(0, 21, a.size)
        acc_l.append(a), day_l.append(d), kind_l.append(np.zeros(a.size, np.int64))
    # CSAT pulses: occasional, any day
    rate = np.array([1 / 60, 1 / 120, 1 / 240])[w.seg][:, None] * alive
    ca, cd = np.nonzero(rng.random(alive.shape) < rate)
    acc_l.append(ca), day_l.append(cd), kind_l.append(np.ones(ca.size, np.int64))
    acc, dd, kind = np.concatenate(acc_l), np.concatenate(day_l), np.concatenate(kind_l)
    keep = (dd < D) & (dd + w.start_day < w.alive_end[acc])
    acc, dd, kind = acc[keep], dd[keep], kind[keep]
    # respondent: a random user of the account created before that day
    day_abs = dd + w.start_day
    first = np.searchsorted(users.key, acc.astype(np.int64) * 2**32)
    avail = np.searchsorted(users.key, acc.astype(np.int64) * 2**32 + day_abs) - first
    ok = avail > 0
    acc, dd, kind, day_abs, first, avail = (x[ok] for x in (acc, dd, kind, day_abs, first, avail))
    user = first + np.floor(rng.random(acc.size) * avail).astype(np.int64)
    n = acc.size
    h = w.Hs[acc, dd]
    nps = np.clip(np.round(rng.normal(1.0 + 10.0 * h, 1.5)), 0, 10)
    csat = np.clip(np.round(rng.normal(1.2 + 4.0 * h, 0.7)), 1, 5)
    score = np.where(kind == 0, nps, csat)
    mood = np.where(
        kind == 0,
        np.digitize(score, [7, 9]),  # detractor 0-6, passive 7-8, promoter 9-10
        np.digitize(score, [3, 4]),
    )
    flat = [c for group in _COMMENTS for c in group]
    offsets = np.cumsum([0] + [len(g) for g in _COMMENTS])[:-1]
    sizes = np.array([len(g) for g in _COMMENTS])
    comment = offsets[mood] + np.floor(rng.random(n) * sizes[mood]).astype(np.int64)
    no_comment = rng.random(n) >= 0.35
    ts = day_abs * DAY_US + _time_of_day(rng, n, 15.0, 3.0)
    order = np.lexsort((acc, ts))
    return _table(
        "surveys",
        {
            "response_id": _ids("SRV-", n, 6),
            "account_id": _labels(acc[order], w.account_ids),
            "user_id": users.table["user_id"].take(pa.array(user[order])),
            "ts": _ts(ts[order]),
            "kind": _labels(kind[order], ("nps", "csat")),
            "score": pa.array(score[order].astype(np.float64)),
            "comment": _labels(comment[order], flat, no_comment[order]),
        },
    )


def _touchpoints_table(w: _World) -> pa.Table:
    rng = _rng(w.seed, "touchpoints")
    D = w.D
    days = w.start_day + np.arange(D)
    alive = w.alive()
    weekday = np.where(_weekend(days), 0.03, 1.0)
    engage = (w.attention[:, None] * (0.4 + 0.9 * w.Hs)) * weekday[None, :] * alive
    acc_l, day_l, kind_l = [], [], []
    # kinds: 0 meeting, 1 qbr, 2 call, 3 email
    for kind, rates in (
        (3, (0.25, 0.1, 0.035)),
        (2, (0.06, 0.025, 0.008)),
        (0, (0.04, 0.012, 0.003)),
    ):
        lam = np.array(rates)[w.seg][:, None] * engage
        cnt = rng.poisson(lam)
        a, d = np.nonzero(cnt)
        rep = cnt[a, d]
        acc_l.append(np.repeat(a, rep)), day_l.append(np.repeat(d, rep))
        kind_l.append(np.full(rep.sum(), kind))
    # quarterly business reviews for enterprise and mid-market, skipped when the
    # relationship is weak or the account is neglected
    big = np.nonzero(w.seg <= 1)[0]
    offset = (w.first_start[big] - w.start_day) % 91
    quarters = np.arange(0, D // 91 + 2)
    qa = np.repeat(big, quarters.size)
    qd = (offset[:, None] + 91 * quarters[None, :]).ravel() + rng.integers(-7, 8, qa.size)
    ok = (qd >= 0) & (qd < D)
    qa, qd = qa[ok], qd[ok]
    held = alive[qa, qd] & (
        rng.random(qa.size)
        < np.clip(0.2 + 0.8 * np.minimum(w.attention[qa], 1.2) * w.Hs[qa, qd], 0, 0.97)
    )
    qa, qd = qa[held], qd[held]
    qd = np.where(_weekend(qd + w.start_day), np.maximum(qd - 2, 0), qd)
    held = alive[qa, qd]
    acc_l.append(qa[held]), day_l.append(qd[held]), kind_l.append(np.full(held.sum(), 1))
    acc, dd, kind = np.concatenate(acc_l), np.concatenate(day_l), np.concatenate(kind_l)
    n = acc.size
    p_exec = np.select(
        [kind == 1, kind == 2, kind == 0],
        [
            np.ones(n),
            np.array([0.25, 0.1, 0.03])[w.seg[acc]],
            np.array([0.15, 0.08, 0.02])[w.seg[acc]],
        ],
        np.full(n, 0.01),
    )
    executive = rng.random(n) < p_exec
    ts = days[dd] * DAY_US + _time_of_day(rng, n, 14.0, 2.5)
    order = np.lexsort((acc, ts))
    return _table(
        "touchpoints",
        {
            "touchpoint_id": _ids("TP-", n, 6),
            "account_id": _labels(acc[order], w.account_ids),
            "ts": _ts(ts[order]),
            "kind": _labels(kind[order], ("meeting", "qbr", "call", "email")),
            "executive": pa.array(executive[order]),
        },
    )


def _flags_table(w: _World) -> pa.Table:
    rng = _rng(w.seed, "flags")
    ev = w.ev
    has = np.isin(ev["kind"], list(_EV_FLAG))
    acc = ev["acc"][has]
    day = ev["t0"][has] + w.grid0
    kind = np.array([_EV_FLAG[int(k)] for k in ev["kind"][has]], dtype=np.int64)
    res = ev["flag_end"][has]
    res_day = np.where(res >= 0, res + w.grid0, NEVER)
    ia, iday = w.interest_days
    acc = np.concatenate([acc, ia])
    day = np.concatenate([day, iday])
    kind = np.concatenate([kind, np.full(ia.size, 5)])
    res_day = np.concatenate([res_day, iday + rng.integers(30, 121, ia.size)])
    keep = (day >= w.start_day) & (day < w.alive_end[acc]) & (day >= w.first_start[acc])
    acc, day, kind, res_day = acc[keep], day[keep], kind[keep], res_day[keep]
    n = acc.size
    ts = day * DAY_US + _time_of_day(rng, n, 15.0, 2.5)
    res_us = np.where(res_day < NEVER, res_day, 0) * DAY_US + _time_of_day(rng, n, 15.0, 2.5)
    res_null = (
        (res_day >= NEVER) | (res_us >= w.end_day * DAY_US) | (res_us >= w.alive_end[acc] * DAY_US)
    )
    res_null |= res_us <= ts
    flat = [s for group in _FLAG_NOTES for s in group]
    offsets = np.cumsum([0] + [len(g) for g in _FLAG_NOTES])[:-1]
    sizes = np.array([len(g) for g in _FLAG_NOTES])
    note = offsets[kind] + np.floor(rng.random(n) * sizes[kind]).astype(np.int64)
    order = np.lexsort((acc, ts))
    return _table(
        "flags",
        {
            "flag_id": _ids("FLG-", n, 5),
            "account_id": _labels(acc[order], w.account_ids),
            "ts": _ts(ts[order]),
            "kind": _labels(kind[order], _FLAG_KINDS),
            "note": _labels(note[order], flat),
            "author": _labels(w.csm[acc[order]], CSMS),
            "resolved_at": _ts(np.where(res_null, 0, res_us)[order], res_null[order]),
        },
    )


def _outcomes_table(w: _World) -> pa.Table:
    o = w.outs
    order = np.lexsort((o["acc"], o["day"]))
    return _table(
        "outcomes",
        {
            "outcome_id": _ids("OUT-", order.size, 5),
            "account_id": _labels(o["acc"][order], w.account_ids),
            "ts": _ts(o["day"][order].astype(np.int64) * DAY_US),
            "kind": _labels(o["kind"][order], ("renewed", "expanded", "contracted", "churned")),
            "arr_delta": pa.array(o["delta"][order].astype(np.float64)),
        },
    )
