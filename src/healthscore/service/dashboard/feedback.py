"""What CSMs say about a score: "looks right", "too high" or "too low", with a reason.

Place in the flow: under the dashboard's routes; the ``score_feedback`` table is created
and written through the store like the service's other tables (see ``auth``). Each row
keeps the model version, scorecard and score the CSM saw, so the agreement rate is per
model version and a new version starts with a clean slate.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa

from healthscore.core.limits import NUL
from healthscore.errors import HealthscoreError
from healthscore.store import Store

FEEDBACK = "score_feedback"
COLUMNS = {
    "feedback_id": "string",
    "account_id": "string",
    "model_version": "string",
    "scorecard": "string",
    "score": "float64",
    "verdict": "string",  # agree | too_high | too_low
    "reason": "string",
    "username": "string",
    "created_at": "timestamp",
}
VERDICTS = {"agree": "looks right", "too_high": "too high", "too_low": "too low"}
MAX_REASON = 2000


class FeedbackError(HealthscoreError):
    """Feedback that cannot be stored as sent."""


def ensure_table(store: Store) -> None:
    if not store.has_table(FEEDBACK):
        store.create_table(FEEDBACK, COLUMNS)


def add(
    store: Store,
    *,
    account_id: str,
    model_version: str,
    scorecard: str,
    score: float | None,
    verdict: str,
    reason: str,
    username: str,
    at: datetime | None = None,
) -> dict:
    """Store one verdict on a score; returns the row."""
    if verdict not in VERDICTS:
        raise FeedbackError(
            f"`verdict` {verdict!r}: not one of {', '.join(VERDICTS)}",
            hint="agree, too_high, too_low",
        )
    reason = (reason or "").strip()
    if verdict != "agree" and not reason:
        raise FeedbackError("say why the score looks wrong (`reason`)")
    if len(reason) > MAX_REASON:
        raise FeedbackError(f"`reason` is {len(reason)} characters; at most {MAX_REASON}")
    if NUL in reason:  # PostgreSQL refuses it in text (a 500); DuckDB would keep it
        raise FeedbackError("`reason` holds a NUL character (U+0000), which no text may hold")
    row = {
        "feedback_id": uuid.uuid4().hex[:12],
        "account_id": account_id,
        "model_version": model_version,
        "scorecard": scorecard,
        "score": score,
        "verdict": verdict,
        "reason": reason or None,
        "username": username,
        "created_at": at or datetime.now(UTC).replace(tzinfo=None, microsecond=0),
    }
    ensure_table(store)
    store.insert(FEEDBACK, pa.Table.from_pylist([row], schema=_schema()))
    return row


def _schema() -> pa.Schema:
    types = {"string": pa.string(), "timestamp": pa.timestamp("us"), "float64": pa.float64()}
    return pa.schema([(c, types[t]) for c, t in COLUMNS.items()])


def export(store: Store, model_version: str | None = None) -> pa.Table:
    """Every verdict (of ``model_version`` when given), newest first, as a table: what
    ``GET /v1/feedback`` and the model page's download give, for calibration (none
    when no verdict was ever stored: the table is not made by a read)."""
    if not store.has_table(FEEDBACK):
        return _schema().empty_table()
    t = store.stored(FEEDBACK)
    if model_version is not None:
        t = t.filter(t.model_version == model_version)
    return store.execute(t.order_by([t.created_at.desc(), t.feedback_id]))


def rows(store: Store, account_id: str | None = None) -> list[dict]:
    """Every verdict (of one account when given), newest first."""
    ensure_table(store)
    t = store.stored(FEEDBACK)
    if account_id is not None:
        t = t.filter(t.account_id == account_id)
    return store.execute(t.order_by([t.created_at.desc(), t.feedback_id])).to_pylist()


@dataclass
class Agreement:
    """How often CSMs agreed with one model version's scores."""

    model_version: str
    scorecard: str
    verdicts: int
    agree: int
    too_high: int
    too_low: int

    @property
    def rate(self) -> float | None:
        return self.agree / self.verdicts if self.verdicts else None


def agreement(all_rows: list[dict]) -> list[Agreement]:
    """The agreement rate per model version and scorecard (each user's latest verdict per
    account counts once)."""
    latest: dict[tuple, dict] = {}
    for r in sorted(all_rows, key=lambda r: r["created_at"]):
        latest[(r["model_version"], r["scorecard"], r["account_id"], r["username"])] = r
    out: dict[tuple, Agreement] = {}
    for (version, card, _, _), r in latest.items():
        a = out.setdefault((version, card), Agreement(version, card, 0, 0, 0, 0))
        a.verdicts += 1
        setattr(a, r["verdict"], getattr(a, r["verdict"]) + 1)
    return sorted(out.values(), key=lambda a: (a.model_version, a.scorecard))


def disagreements(all_rows: list[dict], model_version: str, top: int = 10) -> list[dict]:
    """The accounts whose score CSMs dispute most for ``model_version``: per account the
    verdicts against it (latest per user), the direction and the latest reason."""
    latest: dict[tuple, dict] = {}
    for r in sorted(all_rows, key=lambda r: r["created_at"]):
        if r["model_version"] == model_version:
            latest[(r["scorecard"], r["account_id"], r["username"])] = r
    per: dict[tuple, dict] = {}
    for (card, acc, _), r in latest.items():
        d = per.setdefault(
            (card, acc),
            {
                "scorecard": card,
                "account_id": acc,
                "against": 0,
                "too_high": 0,
                "too_low": 0,
                "agree": 0,
                "score": r["score"],
                "reason": None,
                "at": r["created_at"],
            },
        )
        d[r["verdict"]] += 1
        if r["verdict"] != "agree":
            d["against"] += 1
            d["reason"], d["at"], d["score"] = r["reason"], r["created_at"], r["score"]
    found = [d for d in per.values() if d["against"]]
    found.sort(key=lambda d: (-(d["against"] - d["agree"]), -d["against"], d["account_id"]))
    return found[:top]
