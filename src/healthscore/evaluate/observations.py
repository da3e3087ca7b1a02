"""Observations: the (account, date) pairs every evaluation is measured on, labelled.

Place in the flow: the first step of ``evaluate``, after ``engine.history`` has stored
the point-in-time scores. It reads the ``scores`` history of one model version and the
``outcomes`` table through the store, and returns pandas frames with one row per
observation: ``account_id``, ``as_of``, ``score``, ``band``, ``segment`` and ``label``
(whether the outcome followed). Backtest, calibration, probability and the challenger
read their observations here, so all of them count the same pairs the same way.

- **History data** (:func:`observations`): the stored scores at a series of dates. The
  label is whether the outcome (default ``churned``) happens within ``horizon`` after the
  date. Accounts that had churned by the date are left out (no longer a prediction
  target; only churn is terminal: an expansion can recur), and so are observations
  whose label window ends after the last outcome on file (their label is not known
  yet). With ``until``, the outcomes table is read as if it ended then
  (:func:`training_observations` is calibration's variant).
- **Snapshot data** (:func:`snapshot_observations`): one row per customer and an
  undated outcome label. Every account is scored once at the snapshot date (by default
  :func:`snapshot_date`, the day after the last outcome), and its label is whether it
  has the outcome on file at all.
- **Outcome kinds** (:func:`outcome_kind`): the label's name as the ``outcomes`` table
  spells it (``churned``), from the noun people also use (``churn``).
- **Observation plans** (:class:`ObservationPlan`): which (account, date) pairs are
  observed, with the lead time. One calendar grid for all accounts (every ``every``),
  each account on its own contract anniversaries (first contract start + k x ``period``
  - ``lead``, k = 1, 2 ...), or an explicit list of pairs read from a file (through
  :mod:`healthscore.sources`, so a bad row is named by row and field). Backtest,
  calibration, the probability fit and the challenger all take the same plan, so their
  figures rest on the same observations; :meth:`ObservationPlan.observed` gives the
  dates whose history must be stored and the pairs kept at them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from healthscore.core.limits import MAX_DATES
from healthscore.core.tables import STRING, TIMESTAMP, Table
from healthscore.core.time import anniversaries, dates_between, parse_duration, shift_each
from healthscore.engine import asof
from healthscore.engine.history import SCORES, ensure_tables
from healthscore.errors import DurationError, Problem, ScoringError, SourceError
from healthscore.model import Model
from healthscore.sources.sql import plural
from healthscore.store import Store

if TYPE_CHECKING:  # pandas is imported where frames are built: importing this is cheap
    import pandas as pd

#: outcomes a score predicts by being low (red) and by being high (green)
RISK, GOOD = "churned", "expanded"
#: outcome kinds of the ``outcomes`` table, and the nouns people also use for them
OUTCOMES = {
    "churn": "churned",
    "churned": "churned",
    "renewal": "renewed",
    "renewed": "renewed",
    "expansion": "expanded",
    "expanded": "expanded",
    "contraction": "contracted",
    "contracted": "contracted",
    "reactivation": "reactivated",
    "reactivated": "reactivated",
}


def outcome_kind(text: str) -> str:
    """``churn`` -> ``churned``; the outcome kinds of the ``outcomes`` table.

    >>> outcome_kind("churn")
    'churned'
    """
    kind = OUTCOMES.get(str(text).strip().lower())
    if kind is None:
        raise ScoringError(
            f"unknown outcome {text!r}",
            hint="use churn, renewed, expanded, contracted or reactivated",
        )
    return kind


def stored_scores(store: Store, model: Model) -> pd.DataFrame:
    """Every stored score of ``model``'s version and scorecard, by account and date."""
    t = store.stored(SCORES)
    t = t.filter(
        t.model_version == model.version,
        t.scorecard == model.scorecard_name,
        t.score.notnull(),
    )
    df = store.execute(t.select("account_id", "as_of", "score", "band", "segment")).to_pandas()
    return df.sort_values(["account_id", "as_of"], kind="stable").reset_index(drop=True)


def outcome_events(store: Store) -> pd.DataFrame:
    """The ``outcomes`` table's account, date and kind, by account and date."""
    df = store.execute(store.table("outcomes").select("account_id", "ts", "kind")).to_pandas()
    return df.sort_values(["account_id", "ts"], kind="stable").reset_index(drop=True)


def within_horizon(obs: pd.DataFrame, events: pd.DataFrame, horizon: str) -> np.ndarray:
    """For each observation (account, as_of): an event in (as_of, as_of + horizon]."""
    if events.empty or obs.empty:
        return np.zeros(len(obs), dtype=bool)
    ends = shift_each(obs["as_of"], horizon, +1)
    m = obs[["account_id", "as_of"]].assign(_end=ends.values, _i=np.arange(len(obs)))
    j = m.merge(events[["account_id", "ts"]], on="account_id", how="inner")
    hit = j[(j["ts"] > j["as_of"]) & (j["ts"] <= j["_end"])]["_i"].unique()
    out = np.zeros(len(obs), dtype=bool)
    out[hit] = True
    return out


def label_observations(
    obs: pd.DataFrame, outcomes: pd.DataFrame, horizon: str, outcome: str
) -> tuple[pd.DataFrame, int]:
    """Scored pairs labelled with ``outcome`` within ``horizon``; how many were left out
    because their window ends after the last of ``outcomes`` (an unknown label).

    Accounts that had churned by the date are left out as well (see :func:`gone`).
    """
    last = outcomes["ts"].max()
    open_window = (shift_each(obs["as_of"], horizon, +1) > last).to_numpy(bool)
    obs = obs[~open_window].reset_index(drop=True)
    events = outcomes[outcomes["kind"] == outcome]
    obs = obs[~gone(obs, outcomes)].reset_index(drop=True)
    obs["label"] = within_horizon(obs, events, horizon)
    return obs, int(open_window.sum())


def gone(obs: pd.DataFrame, outcomes: pd.DataFrame) -> np.ndarray:
    """For each observation (account, as_of): the account had churned by then (its
    latest churn or reactivation on or before the date is a churn).

    Only churn is terminal: an account that expanded (or contracted, or renewed) stays a
    prediction target, and its next expansion is a new event to predict."""
    import pandas as pd

    ends = outcomes[outcomes["kind"].isin([RISK, "reactivated"])]
    if ends.empty or obs.empty:
        return np.zeros(len(obs), dtype=bool)
    left = obs[["account_id", "as_of"]].assign(_i=np.arange(len(obs))).sort_values("as_of")
    right = ends[["account_id", "ts", "kind"]].sort_values("ts")
    m = pd.merge_asof(
        left, right, left_on="as_of", right_on="ts", by="account_id", allow_exact_matches=True
    )
    out = np.zeros(len(obs), dtype=bool)
    out[m["_i"].to_numpy()] = (m["kind"] == RISK).to_numpy(bool)
    return out


def observations(
    store: Store,
    model: Model,
    dates: list[datetime],
    horizon: str,
    outcome: str = RISK,
    until: datetime | None = None,
    pairs: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """Scored (account, date) pairs at ``dates`` with their label and whether a renewal
    followed (``renewed``), and notes on what was left out.

    With ``pairs`` (``account_id``, ``as_of``: a plan's, see :class:`Observed`), only
    those pairs are kept; without, every account scored at each date.

    With ``until``, only outcomes up to then are read, as if the table ended there:
    observations whose horizon ends later are left out (a fit never sees later data).
    """
    notes = []
    stored = stored_scores(store, model)
    obs = stored[stored["as_of"].isin(dates)].reset_index(drop=True)
    if pairs is not None:
        obs, unscored = keep_pairs(obs, pairs, dates)
        if unscored:
            notes.append(
                f"{unscored:,} planned observations have no stored score (the account did "
                "not exist yet, or was left out at that date)"
            )
    out = outcome_events(store)
    if until is not None:
        out = out[out["ts"] <= until].reset_index(drop=True)
    if out.empty:
        raise ScoringError("the outcomes table is empty: load renewals and churns first")
    if obs.empty:
        raise ScoringError(
            f"no account has a stored score at the {len(dates)} observation dates "
            f"({min(dates):%Y-%m-%d} .. {max(dates):%Y-%m-%d})",
            hint="choose dates when the accounts existed and had data",
        )
    obs, left_out = label_observations(obs, out, horizon, outcome)
    if left_out:
        notes.append(
            f"{left_out:,} observations left out: their {horizon} horizon ends "
            f"after the last outcome on file ({out['ts'].max():%Y-%m-%d})"
        )
    obs["renewed"] = within_horizon(obs, out[out["kind"] == "renewed"], horizon)
    return obs, notes


def training_observations(
    store: Store,
    model: Model,
    dates: list[datetime],
    horizon: str,
    outcome: str,
    until: datetime,
    pairs: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Calibration's observations at ``dates`` (only ``pairs`` when given), reading only
    outcomes dated by ``until``.

    Labels need no later outcome (every window closes by ``until``); windows that end
    after the last outcome known by ``until`` are left out, as :func:`observations` does.
    """
    stored = stored_scores(store, model)
    obs = stored[stored["as_of"].isin(dates)].reset_index(drop=True)
    if pairs is not None:
        obs = keep_pairs(obs, pairs, dates)[0]
    out = outcome_events(store)
    out = out[out["ts"] <= until].reset_index(drop=True)
    if out.empty:
        raise ScoringError(f"no outcome on file by {until:%Y-%m-%d}: nothing to learn from")
    return label_observations(obs, out, horizon, outcome)[0]


def keep_pairs(
    obs: pd.DataFrame, pairs: pd.DataFrame, dates: list[datetime]
) -> tuple[pd.DataFrame, int]:
    """``obs`` kept to ``pairs`` (at ``dates``), and how many of those pairs had no row."""
    want = pairs[pairs["as_of"].isin(dates)][["account_id", "as_of"]]
    kept = obs.merge(want, on=["account_id", "as_of"], how="inner")
    kept = kept.sort_values(["account_id", "as_of"], kind="stable").reset_index(drop=True)
    return kept, len(want) - len(kept)


# --- observation plans ----------------------------------------------------------------------

#: how a pairs file is read: an account (looked up among the store's accounts) and a date;
#: the (account, date) pair is the row's key, so a pair given twice is a duplicate
PAIRS_TABLE = Table(
    name="observation pairs",
    columns={"pair": STRING, "account": STRING, "account_id": STRING, "as_of": TIMESTAMP},
    primary_key="pair",
    kind="event",
    required=("pair", "account", "account_id", "as_of"),
    time="as_of",
)
GRID, ANNIVERSARIES, PAIRS = "grid", "anniversaries", "pairs"


@dataclass
class Observed:
    """What a plan observes between two dates: the ``dates`` whose history must be
    stored, and the (``account_id``, ``as_of``) ``pairs`` kept at them (None: every
    account at every date, the grid)."""

    dates: list[datetime]
    pairs: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)

    def only(self, dates: list[datetime]) -> Observed:
        """The same plan at ``dates`` only (a subset of :attr:`dates`)."""
        keep = set(dates)
        pairs = self.pairs
        if pairs is not None:
            pairs = pairs[pairs["as_of"].isin(keep)].reset_index(drop=True)
        return Observed([d for d in self.dates if d in keep], pairs, list(self.notes))


@dataclass(frozen=True)
class ObservationPlan:
    """Which (account, date) pairs are observed, and the ``lead`` (how long before an
    outcome the score is judged; on anniversaries also how long before each one the
    account is observed).

    >>> ObservationPlan.anniversaries("12mo", "30d").describe()
    'each account 30d before each 12mo anniversary of its first contract'
    """

    how: str = GRID
    lead: str = "30d"
    every: str = "1mo"  # the grid's step
    period: str | None = None  # anniversaries: the contract period
    pairs: tuple[tuple[str, datetime], ...] = ()  # explicit pairs, as read
    source: str | None = None  # the pairs file

    @classmethod
    def grid(cls, every: str = "1mo", lead: str = "30d") -> ObservationPlan:
        """Every account at ``start``, ``start + every`` ... ``end`` (one calendar grid)."""
        _check_duration("every", every)
        _check_duration("lead", lead)
        return cls(GRID, lead, every=every)

    @classmethod
    def anniversaries(cls, period: str = "12mo", lead: str = "30d") -> ObservationPlan:
        """Each account at its first contract's start + k x ``period`` - ``lead``."""
        _check_duration("anniversaries", period)
        _check_duration("lead", lead)
        return cls(ANNIVERSARIES, lead, every="", period=period)

    @classmethod
    def from_pairs(
        cls, pairs: list[tuple[str, datetime]], lead: str = "30d", source: str | None = None
    ) -> ObservationPlan:
        """The given (account, date) pairs (``source``: where they came from)."""
        _check_duration("lead", lead)
        if not pairs:
            raise ScoringError(f"{source or 'the pairs'}: no (account, date) pair to observe")
        return cls(PAIRS, lead, every="", pairs=tuple(sorted(pairs)), source=source)

    @classmethod
    def read_pairs(cls, store: Store, path, lead: str = "30d") -> ObservationPlan:
        """Pairs from a file (CSV, Parquet or JSON lines) with the columns ``account_id``
        and ``as_of``: every row is checked (the account is one of the store's, the date
        a date, no pair twice) and a bad row is named by row and field; nothing is used
        unless every row is good."""
        from healthscore.sources.read import read_source

        file = str(path)
        ids = store.execute(store.table("accounts").select("account_id")).column(0).to_pylist()
        try:
            batch = read_source(
                file,
                PAIRS_TABLE,
                {"account_id": "account"},
                key=["account_id", "as_of"],
                account_lookup=("account", {a: a for a in ids}),
            )
        except SourceError as e:
            raise _pairs_error(e) from None
        data = batch.data
        pairs = list(
            zip(
                data.column("account_id").to_pylist(),
                [_naive(d) for d in data.column("as_of").to_pylist()],
                strict=True,
            )
        )
        return cls.from_pairs(pairs, lead, source=Path(file).name)

    def describe(self) -> str:
        """The plan in words, for reports and notes."""
        if self.how == ANNIVERSARIES:
            return (
                f"each account {self.lead} before each {self.period} anniversary of its "
                "first contract"
            )
        if self.how == PAIRS:
            n = len(self.pairs)
            return f"the {n:,} (account, date) {plural(n, 'pair')} of {self.source or 'a list'}"
        return f"every {self.every}"

    def span(self) -> tuple[datetime, datetime] | None:
        """The first and last date of an explicit list (None for the other plans)."""
        if self.how != PAIRS:
            return None
        dates = [d for _, d in self.pairs]
        return min(dates), max(dates)

    def observed(self, store: Store, start: datetime, end: datetime) -> Observed:
        """The dates from ``start`` to ``end`` (both included) this plan observes, and
        the pairs kept at them."""
        import pandas as pd

        if self.how == GRID:
            return Observed(dates_between(start, end, self.every))
        if end < start:
            raise ScoringError(f"the end {end:%Y-%m-%d} is before the start {start:%Y-%m-%d}")
        notes = []
        if self.how == PAIRS:
            frame = pd.DataFrame(list(self.pairs), columns=["account_id", "as_of"])
        else:
            frame, notes = self._anniversary_pairs(store, start, end)
        frame["as_of"] = pd.to_datetime(frame["as_of"]).astype("datetime64[us]")
        inside = (frame["as_of"] >= start) & (frame["as_of"] <= end)
        if self.how == PAIRS and not inside.all():
            n = int((~inside).sum())
            notes.append(
                f"{n:,} {plural(n, 'pair')} of {self.source or 'the list'} "
                f"{'falls' if n == 1 else 'fall'} outside {start:%Y-%m-%d} .. {end:%Y-%m-%d} "
                f"and {'is' if n == 1 else 'are'} not observed here"
            )
        frame = frame[inside]
        frame = frame.sort_values(["account_id", "as_of"], kind="stable").reset_index(drop=True)
        if frame.empty:
            raise ScoringError(
                f"{self.describe()}: no observation from {start:%Y-%m-%d} to {end:%Y-%m-%d}",
                hint="choose a wider range of dates",
            )
        dates = sorted({pd.Timestamp(d).to_pydatetime() for d in frame["as_of"]})
        if len(dates) > MAX_DATES:  # each date is a whole book scored and stored
            raise ScoringError(
                f"{self.describe()}: {len(dates):,} observation dates from {start:%Y-%m-%d} "
                f"to {end:%Y-%m-%d}, more than {MAX_DATES:,}",
                hint="choose a shorter range (`start`, `end`)",
            )
        return Observed(dates, frame, notes)

    def _anniversary_pairs(self, store: Store, start, end) -> tuple[pd.DataFrame, list[str]]:
        import pandas as pd

        subs = store.table("subscriptions")
        first = store.execute(
            subs.group_by("account_id").aggregate(start=subs.start_date.min())
        ).to_pandas()
        if first.empty:
            raise ScoringError(
                "observing on contract anniversaries needs contracts: the subscriptions "
                "table is empty",
                hint="load subscriptions, or observe on a grid (`every`)",
            )
        rows = []
        for account, began in zip(first["account_id"], first["start"], strict=True):
            day = pd.Timestamp(began).to_pydatetime().replace(tzinfo=None)
            day = datetime(day.year, day.month, day.day)
            # k periods from the start (not k steps), so a 31st stays on month ends
            for d in anniversaries(day, self.period, self.lead, start, end):
                rows.append((account, d))
        accounts = store.count("accounts") or 0
        notes = []
        if accounts > len(first):
            notes.append(
                f"{accounts - len(first):,} of {accounts:,} accounts have no contract "
                "(subscription) and are not observed on anniversaries"
            )
        return pd.DataFrame(rows, columns=["account_id", "as_of"]), notes


def _naive(d) -> datetime:
    """A timestamp read from a file as a naive UTC datetime (the store's convention)."""
    if d.tzinfo is not None:
        from datetime import UTC

        d = d.astimezone(UTC).replace(tzinfo=None)
    return d


def _check_duration(name: str, value: str) -> None:
    try:
        parse_duration(value)
    except DurationError as e:
        raise DurationError(f"`{name}`: {e}") from None


def _pairs_error(e: SourceError) -> SourceError:
    """The reader's problems in the words of a pairs file: its account column is
    ``account_id``, an account must be one of the store's and a pair is given once."""
    if not e.problems:
        return SourceError(str(e).replace("observation pairs", "a pairs file"))
    seen, problems = set(), []
    # rows whose account is missing or unknown all share an empty key: no duplicates
    no_account = {p.row for p in e.problems if p.column == "account"}
    for p in e.problems:
        if p.reason.startswith("duplicate key") and p.row in no_account:
            continue
        column = "account_id" if p.column == "account" else p.column
        if (p.row, column, p.reason) in seen:
            continue
        seen.add((p.row, column, p.reason))
        hint = p.hint
        if p.reason.startswith("unknown account"):
            hint = "a pair names an account by the account_id the store has"
        elif p.reason.startswith("duplicate key"):
            hint = "give each (account, date) pair once"
        elif hint and "looked up" in hint:
            hint = None
        problems.append(
            Problem(
                p.reason,
                file=p.file,
                row=p.row,
                column=column,
                got=p.got,
                expected=p.expected,
                hint=hint,
            )
        )
    rows = len({p.row for p in problems if p.row is not None})
    first = problems[0].file or "the pairs file"
    if not rows:
        head = f"{first}: cannot read (account, date) pairs: it needs the columns account_id, as_of"
    else:
        head = (
            f"{first}: {rows} invalid row{'s' if rows != 1 else ''} of (account, date) pairs, "
            "nothing observed"
        )
    return SourceError.collect(problems, head)


# --- snapshot data --------------------------------------------------------------------------


def snapshot_date(store: Store) -> datetime:
    """The default snapshot date: the day after the last outcome on file."""
    import pandas as pd

    out = outcome_events(store)
    if out.empty:
        raise ScoringError("the outcomes table is empty: load the churn labels first")
    last = pd.Timestamp(out["ts"].max()).to_pydatetime()
    return datetime(last.year, last.month, last.day) + timedelta(days=1)


def snapshot_observations(
    store: Store, model: Model, as_of: datetime, outcome: str
) -> pd.DataFrame:
    """Every account scored at ``as_of`` (stored in the history first), labelled:
    ``label`` (has the outcome on file) and ``renewed`` (has a renewal)."""
    import pandas as pd

    ensure_tables(store)
    asof.backfill(store, model, as_of, as_of, "1d")
    stored = stored_scores(store, model)
    obs = stored[stored["as_of"] == pd.Timestamp(as_of)].reset_index(drop=True)
    if obs.empty:
        raise ScoringError(
            f"no account has a score at {as_of:%Y-%m-%d}",
            hint="the snapshot date must be after the accounts' created_at; pass `as_of`",
        )
    out = outcome_events(store)
    if out.empty:
        raise ScoringError("the outcomes table is empty: load the churn labels first")
    has = set(out.loc[out["kind"] == outcome, "account_id"])
    renewed = set(out.loc[out["kind"] == "renewed", "account_id"])
    obs["label"] = obs["account_id"].isin(has).to_numpy(bool)
    obs["renewed"] = obs["account_id"].isin(renewed).to_numpy(bool)
    return obs


__all__ = [
    "GOOD",
    "OUTCOMES",
    "RISK",
    "ObservationPlan",
    "Observed",
    "keep_pairs",
    "label_observations",
    "observations",
    "outcome_events",
    "outcome_kind",
    "snapshot_date",
    "snapshot_observations",
    "stored_scores",
    "training_observations",
]
