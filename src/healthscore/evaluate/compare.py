"""Compare two models before one goes live: who changes band, by how much, and why.

Place in the flow: beside ``explain``; it scores the same accounts at the same as-of
date under a new and a current model (through :mod:`healthscore.api`), and reads the
stored history of both model versions (the ``scores`` table written by
:mod:`healthscore.engine.history`). It returns plain data that the CLI renders and
``to_dict`` serialises:

- the band migration matrix: from each band of the current model (or "not scored",
  when the account is outside the current model's population) to each band of the new
  one, with the number of accounts and their ARR (from the models' unscored ``arr``
  metric; counts only when neither model has one);
- per account, score(new) - score(current) split exactly into lines: per metric its
  contribution under the new model minus under the current one (0 in a model that
  does not score it), per rule likewise, and the 0-100 clamp likewise; the lines add up
  to the change (to 1e-9), ordered by size, with a one-line summary;
- the same migration at every as-of date both versions have stored history for.

The data keeps the bands' keys (green, yellow, red); what each model calls them (its
scorecard's ``band_names:``) travels with it (:attr:`ModelInfo.band_names`,
:meth:`AccountChange.summary`), for the views to show.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from healthscore.core.time import parse_as_of
from healthscore.engine import asof
from healthscore.engine.scoring import CLAMP, CONTRIB, NORM, WEIGHT
from healthscore.model import BAND_NAMES, Model
from healthscore.store import Store

NOT_SCORED = "not scored"  # outside the model's population at that date
NO_DATA = "no data"  # in the population, but no data in any pillar: no score, no band
_RANK = {"red": 0, "yellow": 1, "green": 2}
_RULE = "rule__"


@dataclass
class ModelInfo:
    """Which model: its label, file, version and scorecard, and what it calls its bands."""

    label: str
    file: str
    version: str
    scorecard: str
    has_arr: bool
    band_names: dict[str, str] = field(default_factory=dict)  # green -> e.g. "on track"

    @classmethod
    def of(cls, model: Model) -> ModelInfo:
        return cls(
            model.label,
            model.file,
            model.version,
            model.scorecard_name,
            "arr" in model.spec.metrics,
            {b: model.band_name(b) for b in BAND_NAMES},
        )

    def band_name(self, band: str) -> str:
        """What this model calls ``band`` (a matrix label: a band, "no data", "not scored").

        >>> ModelInfo("m", "m.yaml", "0", "onboarding", False, {"red": "stalled"}).band_name("red")
        'stalled'
        >>> ModelInfo("m", "m.yaml", "0", "health", False).band_name(NOT_SCORED)
        'not scored'
        """
        return self.band_names.get(band, band)

    def __str__(self) -> str:
        return f"{self.label} ({self.file}, {self.version[:12]})"


@dataclass
class Cell:
    """Accounts moving from one band to another, and their ARR (None: no ARR known)."""

    accounts: int = 0
    arr: float | None = None


@dataclass
class Line:
    """One line of an account's change: a metric, a rule or the 0-100 clamp.

    ``effect`` = ``contribution_new`` - ``contribution_current``; a metric or rule a model
    does not have contributes 0 there (and its ``weight``/``holds`` is None).
    """

    kind: str  # "metric" | "rule" | "clamp"
    name: str
    contribution_current: float
    contribution_new: float
    effect: float
    weight_current: float | None = None  # metrics: the effective weight for this account
    weight_new: float | None = None
    normalized_current: float | None = None
    normalized_new: float | None = None
    raw: Any = None
    holds_current: bool | None = None  # rules: whether the rule held
    holds_new: bool | None = None
    rule_current: str | None = None  # rules: its effects in each model, e.g. "cap 60"
    rule_new: str | None = None

    def text(self) -> str:
        """What changed on this line, in a few words, with its points."""
        return f"{self._what()} ({self.effect:+.1f})"

    def _what(self) -> str:
        if self.kind == "clamp":
            return "0-100 clamp"
        if self.kind == "rule":
            cur, new = self.rule_current, self.rule_new
            if cur is None:
                return f"new rule {self.name} {new}"
            if new is None:
                return f"rule {self.name} {cur} removed"
            if cur != new:
                a, b = cur.split(" "), new.split(" ")
                if len(a) == len(b) == 2 and a[0] == b[0]:  # one effect, e.g. cap 65 -> 55
                    return f"rule {self.name} {cur} -> {b[1]}"
                return f"rule {self.name} {cur} -> {new}"
            return f"rule {self.name} {new}"
        if self.weight_current is None:
            return f"{self.name} now scored, weight {_w(self.weight_new)}"
        if self.weight_new is None:
            return f"{self.name} no longer scored"
        parts = []
        if not _same(self.weight_current, self.weight_new):
            a, b = _w(self.weight_current), _w(self.weight_new)
            if a == b:
                a, b = _w(self.weight_current, 4), _w(self.weight_new, 4)
            parts.append(f"weight {a} -> {b}")
        if not _same(self.normalized_current, self.normalized_new):
            parts.append(f"0-100 {_n(self.normalized_current)} -> {_n(self.normalized_new)}")
        return f"{self.name} " + (", ".join(parts) if parts else "changed")


@dataclass
class AccountChange:
    """One account scored by both models: score(new) - score(current) = sum of effects."""

    account_id: str
    segment: str | None
    score_current: float | None
    score_new: float | None
    band_current: str
    band_new: str
    arr: float | None
    lines: list[Line]
    band_forced_current: str | None = None  # the rule that forced the band, if any
    band_forced_new: str | None = None
    band_name_current: str | None = None  # what each model calls its band (e.g. stalled)
    band_name_new: str | None = None

    @property
    def delta(self) -> float:
        return (self.score_new or 0.0) - (self.score_current or 0.0)

    def summary(self, n: int = 3) -> str:
        """One line: the scores and the largest lines with their points.

        e.g. ``acct-17 72.0 -> 48.5: usage_change_30d weight 0.07 -> 0.15 (-6.2),
        rule disengaging cap 60 (-8.1)``
        """
        head = f"{self.account_id} {_n(self.score_current)} -> {_n(self.score_new)}"
        movers = [ln.text() for ln in self.lines if abs(ln.effect) >= 0.05][:n]
        if self.band_forced_new and self.band_forced_new != self.band_forced_current:
            band = self.band_name_new or self.band_new
            movers.append(f"band {band} forced by rule {self.band_forced_new}")
        return f"{head}: " + (", ".join(movers) if movers else "no change")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["delta"] = self.delta
        d["summary"] = self.summary()
        return d


@dataclass
class Summary:
    """Counts over all accounts: who moved, by how much, and the share of red."""

    accounts_current: int = 0
    accounts_new: int = 0
    accounts_both: int = 0
    moved_up: int = 0  # scored by both, a better band under the new model
    moved_down: int = 0
    same_band: int = 0
    entered: int = 0  # scored by the new model only
    left: int = 0  # scored by the current model only
    mean_change: float | None = None  # over accounts with a score in both
    mean_abs_change: float | None = None
    red_share_current: float | None = None  # red accounts / accounts scored
    red_share_new: float | None = None
    arr_moved_up: float | None = None
    arr_moved_down: float | None = None

    @property
    def changed_band(self) -> int:
        return self.accounts_both - self.same_band


@dataclass
class HistoryPoint:
    """The migration at one stored as-of date (counts only: history holds no ARR)."""

    as_of: datetime
    summary: Summary
    matrix: dict[str, dict[str, int]]
    biggest_change: tuple[str, float] | None = None  # (account, score change)


@dataclass
class HistorySection:
    """The migration at each as-of date both model versions have stored history for."""

    dates_current: list[datetime] = field(default_factory=list)
    dates_new: list[datetime] = field(default_factory=list)
    points: list[HistoryPoint] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Comparison:
    """Two models side by side at one as-of date (and over stored history)."""

    as_of: datetime
    scorecard: str
    new: ModelInfo
    current: ModelInfo
    bands: list[str]  # matrix labels, best first, then "no data" (if any) and "not scored"
    matrix: dict[str, dict[str, Cell]]  # current band -> new band -> cell
    has_arr: bool
    summary: Summary
    changes: list[AccountChange]  # the biggest |change| first (``top`` of them)
    entered: list[str]  # accounts scored by the new model only
    left: list[str]  # accounts scored by the current model only
    history: HistorySection | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data (dates as ISO text)."""
        d = {
            "as_of": self.as_of.isoformat(),
            "scorecard": self.scorecard,
            "new": asdict(self.new),
            "current": asdict(self.current),
            "bands": self.bands,
            "has_arr": self.has_arr,
            "matrix": {
                b1: {b2: asdict(c) for b2, c in row.items()} for b1, row in self.matrix.items()
            },
            "summary": {**asdict(self.summary), "changed_band": self.summary.changed_band},
            "changes": [c.to_dict() for c in self.changes],
            "entered": self.entered,
            "left": self.left,
            "notes": self.notes,
            "history": None,
        }
        if self.history is not None:
            h = self.history
            d["history"] = {
                "dates_current": [x.isoformat() for x in h.dates_current],
                "dates_new": [x.isoformat() for x in h.dates_new],
                "notes": h.notes,
                "points": [
                    {
                        "as_of": p.as_of.isoformat(),
                        "summary": {**asdict(p.summary), "changed_band": p.summary.changed_band},
                        "matrix": p.matrix,
                        "biggest_change": (
                            None
                            if p.biggest_change is None
                            else {"account_id": p.biggest_change[0], "delta": p.biggest_change[1]}
                        ),
                    }
                    for p in h.points
                ],
            }
        return d


def compare_models(
    store: Store,
    new: Model,
    current: Model,
    as_of=None,
    *,
    scorecard: str | None = None,
    top: int | None = 10,
    history: bool = True,
) -> Comparison:
    """Score every account under both models at ``as_of`` and compare them.

    Parameters
    ----------
    store
        The store to score from (and to read stored history from).
    new, current
        The candidate model and the one in use.
    as_of
        The as-of date (default today 00:00 UTC).
    scorecard
        View both models through this scorecard (default: as given, usually ``health``).
    top
        How many of the biggest per-account changes to keep (None: every account).
    history
        Also compare the stored history of both model versions.

    Returns
    -------
    Comparison
        The migration matrix, the summary, the biggest changes with their exact
        decomposition, and the history section.
    """

    if scorecard is not None:
        new, current = new.scorecard(scorecard), current.scorecard(scorecard)
    d = parse_as_of(as_of)
    rows_new = {r["account_id"]: r for r in asof.score(store, new, d).to_pylist()}
    rows_cur = {r["account_id"]: r for r in asof.score(store, current, d).to_pylist()}
    has_arr = "arr" in new.spec.metrics or "arr" in current.spec.metrics
    notes = []
    if not has_arr:
        notes.append(
            "neither model has an `arr` metric (ARR in force): the matrix shows account counts only"
        )
    elif "arr" not in current.spec.metrics or "arr" not in new.spec.metrics:
        which = "new" if "arr" in new.spec.metrics else "current"
        notes.append(f"ARR comes from the {which} model's `arr` metric (the other has none)")
    if new.version == current.version:
        notes.append("both models have the same version: they score identically")

    def arr_of(acc: str) -> float | None:
        if not has_arr:
            return None
        for rows in (rows_cur, rows_new):
            r = rows.get(acc)
            if r is not None and r.get("arr") is not None:
                return float(r["arr"])
        return 0.0

    cur = {a: _label(r["band"]) for a, r in rows_cur.items()}
    nxt = {a: _label(r["band"]) for a, r in rows_new.items()}
    arr = {a: arr_of(a) for a in cur.keys() | nxt.keys()} if has_arr else None
    deltas = {
        a: rows_new[a]["score"] - rows_cur[a]["score"]
        for a in rows_cur.keys() & rows_new.keys()
        if rows_new[a]["score"] is not None and rows_cur[a]["score"] is not None
    }
    bands, matrix, summary = _migration(cur, nxt, deltas, arr)
    ranked = sorted(deltas, key=lambda a: (-abs(deltas[a]), a))
    if top is not None:
        ranked = ranked[:top]
    changes = [
        account_change(new, current, rows_new[a], rows_cur[a], arr.get(a) if arr else None)
        for a in ranked
    ]
    return Comparison(
        as_of=d,
        scorecard=new.scorecard_name,
        new=ModelInfo.of(new),
        current=ModelInfo.of(current),
        bands=bands,
        matrix=matrix,
        has_arr=has_arr,
        summary=summary,
        changes=changes,
        entered=sorted(nxt.keys() - cur.keys()),
        left=sorted(cur.keys() - nxt.keys()),
        history=compare_history(store, new, current) if history else None,
        notes=notes,
    )


def account_change(
    new: Model, current: Model, row_new: dict, row_current: dict, arr: float | None = None
) -> AccountChange:
    """Split one account's score(new) - score(current) into metric, rule and clamp lines.

    Both rows are wide score rows (from :func:`healthscore.engine.asof.score`) of the same account
    at the same date. The effects add up to the change exactly (to 1e-9), because each
    score is the sum of its contribution columns.
    """
    lines = []
    scored_new = {m: p for p, m, _ in new.scored_metrics()}
    scored_cur = {m: p for p, m, _ in current.scored_metrics()}
    for m in [*scored_new, *(m for m in scored_cur if m not in scored_new)]:
        c_new = _contribution(row_new, m + CONTRIB) if m in scored_new else 0.0
        c_cur = _contribution(row_current, m + CONTRIB) if m in scored_cur else 0.0
        lines.append(
            Line(
                "metric",
                m,
                c_cur,
                c_new,
                c_new - c_cur,
                weight_current=row_current[m + WEIGHT] if m in scored_cur else None,
                weight_new=row_new[m + WEIGHT] if m in scored_new else None,
                normalized_current=row_current[m + NORM] if m in scored_cur else None,
                normalized_new=row_new[m + NORM] if m in scored_new else None,
                raw=row_new[m] if m in row_new else row_current.get(m),
            )
        )
    rules_new, rules_cur = new.spec.rules, current.spec.rules
    for r in [*rules_new, *(r for r in rules_cur if r not in rules_new)]:
        c_new = _contribution(row_new, _RULE + r + CONTRIB)
        c_cur = _contribution(row_current, _RULE + r + CONTRIB)
        lines.append(
            Line(
                "rule",
                r,
                c_cur,
                c_new,
                c_new - c_cur,
                holds_current=row_current.get(_RULE + r) if r in rules_cur else None,
                holds_new=row_new.get(_RULE + r) if r in rules_new else None,
                rule_current=_effects(rules_cur[r], current) if r in rules_cur else None,
                rule_new=_effects(rules_new[r], new) if r in rules_new else None,
            )
        )
    c_new, c_cur = _contribution(row_new, CLAMP), _contribution(row_current, CLAMP)
    if c_new or c_cur:
        lines.append(Line("clamp", "clamp", c_cur, c_new, c_new - c_cur))
    lines.sort(key=lambda ln: (-abs(ln.effect), ln.kind != "metric", ln.name))
    return AccountChange(
        account_id=row_new["account_id"],
        segment=row_new.get("segment"),
        score_current=row_current["score"],
        score_new=row_new["score"],
        band_current=_label(row_current["band"]),
        band_new=_label(row_new["band"]),
        arr=arr,
        lines=lines,
        band_forced_current=row_current.get("band_forced_by"),
        band_forced_new=row_new.get("band_forced_by"),
        band_name_current=current.band_name(row_current["band"]),
        band_name_new=new.band_name(row_new["band"]),
    )


def compare_history(store: Store, new: Model, current: Model) -> HistorySection:
    """The band migration at every as-of date both model versions have stored scores for."""
    from healthscore.engine import history as hist

    section = HistorySection()
    rows: list[dict] = []
    if hist.SCORES in store.list_tables():
        t = store.stored(hist.SCORES)
        t = t.filter(
            ((t.model_version == new.version) & (t.scorecard == new.scorecard_name))
            | ((t.model_version == current.version) & (t.scorecard == current.scorecard_name))
        )
        rows = t.select("account_id", "as_of", "model_version", "score", "band").to_pyarrow()
        rows = rows.to_pylist()
    by_date: dict[str, dict[datetime, dict[str, dict]]] = {new.version: {}, current.version: {}}
    for r in rows:
        by_date[r["model_version"]].setdefault(r["as_of"], {})[r["account_id"]] = r
    section.dates_new = sorted(by_date[new.version])
    section.dates_current = sorted(by_date[current.version])
    both = sorted(set(section.dates_new) & set(section.dates_current))
    missing = [
        (m, name, other)
        for m, name, mine, other in (
            (new, "new", section.dates_new, section.dates_current),
            (current, "current", section.dates_current, section.dates_new),
        )
        if not mine
    ]
    for m, name, other in missing:
        section.notes.append(
            f"the {name} model ({m.version[:12]}) has no stored history; "
            f"run `{_history_command(m, other)}`"
        )
    if not missing:
        only_cur = sorted(set(section.dates_current) - set(section.dates_new))
        only_new = sorted(set(section.dates_new) - set(section.dates_current))
        if not both:
            section.notes.append(
                "the two versions have no stored as-of date in common: "
                f"new {_span(section.dates_new)}, current {_span(section.dates_current)}"
            )
        for m, name, dates in ((new, "new", only_cur), (current, "current", only_new)):
            if dates:
                other = "current" if name == "new" else "new"
                section.notes.append(
                    f"{_span(dates)} stored for the {other} model only; to compare them, "
                    f"run `{_history_command(m, dates)}`"
                )
    for d in both:
        got_new, got_cur = by_date[new.version][d], by_date[current.version][d]
        cur = {a: _label(r["band"]) for a, r in got_cur.items()}
        nxt = {a: _label(r["band"]) for a, r in got_new.items()}
        deltas = {
            a: got_new[a]["score"] - got_cur[a]["score"]
            for a in got_cur.keys() & got_new.keys()
            if got_new[a]["score"] is not None and got_cur[a]["score"] is not None
        }
        _, matrix, summary = _migration(cur, nxt, deltas, None)
        biggest = min(deltas.items(), key=lambda kv: (-abs(kv[1]), kv[0]), default=None)
        section.points.append(
            HistoryPoint(
                as_of=d,
                summary=summary,
                matrix={
                    b1: {b2: c.accounts for b2, c in row.items()} for b1, row in matrix.items()
                },
                biggest_change=biggest,
            )
        )
    return section


# --- helpers --------------------------------------------------------------------------------


def _migration(
    cur: dict[str, str],
    new: dict[str, str],
    deltas: dict[str, float],
    arr: dict[str, float | None] | None,
) -> tuple[list[str], dict[str, dict[str, Cell]], Summary]:
    """The matrix and summary from each account's band under both models (and its ARR)."""
    pairs = Counter()
    money: dict[tuple[str, str], float] = {}
    for a in cur.keys() | new.keys():
        key = (cur.get(a, NOT_SCORED), new.get(a, NOT_SCORED))
        pairs[key] += 1
        if arr is not None:
            money[key] = money.get(key, 0.0) + (arr.get(a) or 0.0)
    seen = {b for k in pairs for b in k}
    bands = [*BAND_NAMES, *(b for b in (NO_DATA,) if b in seen), NOT_SCORED]
    matrix = {
        b1: {
            b2: Cell(pairs.get((b1, b2), 0), money.get((b1, b2), 0.0) if arr is not None else None)
            for b2 in bands
        }
        for b1 in bands
    }
    s = Summary(accounts_current=len(cur), accounts_new=len(new))
    both = cur.keys() & new.keys()
    s.accounts_both = len(both)
    s.entered, s.left = len(new.keys() - cur.keys()), len(cur.keys() - new.keys())
    up = [a for a in both if _RANK.get(new[a], -1) > _RANK.get(cur[a], -1) >= 0]
    down = [a for a in both if _RANK.get(cur[a], -1) > _RANK.get(new[a], -1) >= 0]
    s.moved_up, s.moved_down = len(up), len(down)
    s.same_band = sum(cur[a] == new[a] for a in both)
    if deltas:
        s.mean_change = sum(deltas.values()) / len(deltas)
        s.mean_abs_change = sum(abs(v) for v in deltas.values()) / len(deltas)
    if cur:
        s.red_share_current = sum(b == "red" for b in cur.values()) / len(cur)
    if new:
        s.red_share_new = sum(b == "red" for b in new.values()) / len(new)
    if arr is not None:
        s.arr_moved_up = sum(arr.get(a) or 0.0 for a in up)
        s.arr_moved_down = sum(arr.get(a) or 0.0 for a in down)
    return bands, matrix, s


def _label(band: str | None) -> str:
    return band if band is not None else NO_DATA


def _contribution(row: dict, col: str) -> float:
    v = row.get(col)
    return float(v) if v is not None else 0.0


def _effects(rule, model: Model | None = None) -> str:
    """A rule's effects on the score and band, in a few words (signals change neither);
    the band as ``model`` names it.

    >>> from healthscore.model import Rule
    >>> _effects(Rule(when="x > 1", cap=60, signal="disengaging"))
    'cap 60'
    >>> _effects(Rule(when="x > 1", add=-10, band="red"))
    'add -10, band red'
    """
    parts = []
    if rule.add is not None:
        parts.append(f"add {rule.add:+g}")
    for k in ("floor", "cap"):
        if getattr(rule, k) is not None:
            parts.append(f"{k} {getattr(rule, k):g}")
    if rule.band is not None:
        parts.append(f"band {model.band_name(rule.band) if model else rule.band}")
    return ", ".join(parts) or "signal only"


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return abs(a - b) < 1e-9


def _w(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _n(x: float | None) -> str:
    return "none" if x is None else f"{x:.1f}"


def _span(dates: list[datetime]) -> str:
    if not dates:
        return "none"
    return f"{dates[0]:%Y-%m-%d} .. {dates[-1]:%Y-%m-%d} ({len(dates)} dates)"


def _every(dates: list[datetime]) -> str:
    """The most common step between stored dates, as a duration (``1w`` by default).

    >>> from datetime import datetime as D
    >>> _every([D(2025, 1, 1), D(2025, 1, 8), D(2025, 1, 15)])
    '1w'
    """
    gaps = Counter((b - a).days for a, b in zip(dates, dates[1:], strict=False))
    if not gaps:
        return "1w"
    days = gaps.most_common(1)[0][0]
    if days > 0 and days % 7 == 0:
        return f"{days // 7}w"
    if 28 <= days <= 31:
        return "1mo"
    return f"{max(days, 1)}d"


def _history_command(model: Model, like: list[datetime]) -> str:
    """The `healthscore history` command that stores the dates ``like`` for ``model``."""
    opt = "" if model.file.startswith("<") else f" --model {model.file}"
    if model.scorecard_name != "health":
        opt += f" --scorecard {model.scorecard_name}"
    if like:
        span = f"--from {like[0]:%Y-%m-%d} --to {like[-1]:%Y-%m-%d} --every {_every(like)}"
    else:
        span = "--from D1 --to D2 --every 1w"
    return f"healthscore history{opt} {span}"
