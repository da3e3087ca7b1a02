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
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np

from healthscore.core.time import shift_each
from healthscore.engine import asof
from healthscore.engine.history import SCORES, ensure_tables
from healthscore.errors import ScoringError
from healthscore.model import Model
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
) -> tuple[pd.DataFrame, list[str]]:
    """Scored (account, date) pairs at ``dates`` with their label and whether a renewal
    followed (``renewed``), and notes on what was left out.

    With ``until``, only outcomes up to then are read, as if the table ended there:
    observations whose horizon ends later are left out (a fit never sees later data).
    """
    notes = []
    stored = stored_scores(store, model)
    obs = stored[stored["as_of"].isin(dates)].reset_index(drop=True)
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
    store: Store, model: Model, dates: list[datetime], horizon: str, outcome: str, until: datetime
) -> pd.DataFrame:
    """Calibration's observations at ``dates``, reading only outcomes dated by ``until``.

    Labels need no later outcome (every window closes by ``until``); windows that end
    after the last outcome known by ``until`` are left out, as :func:`observations` does.
    """
    stored = stored_scores(store, model)
    obs = stored[stored["as_of"].isin(dates)].reset_index(drop=True)
    out = outcome_events(store)
    out = out[out["ts"] <= until].reset_index(drop=True)
    if out.empty:
        raise ScoringError(f"no outcome on file by {until:%Y-%m-%d}: nothing to learn from")
    return label_observations(obs, out, horizon, outcome)[0]


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
    "label_observations",
    "observations",
    "outcome_events",
    "outcome_kind",
    "snapshot_date",
    "snapshot_observations",
    "stored_scores",
    "training_observations",
]
