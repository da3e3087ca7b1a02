"""Time, one way everywhere: as-of dates, "today", model durations and date ranges.

Place in the flow: the bottom layer, beside :mod:`healthscore.core.tables`. Every
command, the engine and the evaluation read dates through these functions, so "as of
D", "today at 00:00 UTC" and "3mo before D" mean the same thing in every output.

Dates and durations are bounded (:mod:`healthscore.core.limits`): a date lies in the
years 1900 to 2999, a duration is at most 100 years and a range holds at most
:data:`~healthscore.core.limits.MAX_DATES` dates, so any date shifted by any duration
stays a date every backend stores, and a typo cannot start a run of a million dates.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

from dateutil.relativedelta import relativedelta

from healthscore.core.limits import MAX_DATES, MAX_DURATION_DAYS, MAX_YEAR, MIN_YEAR
from healthscore.errors import DurationError, ScoringError

DURATION = re.compile(r"^([0-9]+)(d|w|mo)$")  # ASCII digits: "３0d" is not 30 days


def parse_as_of(value: str | date | datetime | None, name: str = "as_of") -> datetime:
    """An as-of date as a naive UTC datetime; None means :func:`today` (00:00 UTC).

    A date means 00:00 UTC of that day; a timestamp with an offset is converted to UTC.
    Every command defaults to the start of the current UTC day, so ``score``,
    ``explain``, ``report``, ``trends`` and ``compare`` run without ``--as-of`` agree with
    each other and with stored history (midnights): a score as of D uses data dated before
    D, so data of the current day counts from the next day. Pass a timestamp for "now".
    A date outside the years :data:`~healthscore.core.limits.MIN_YEAR` to
    :data:`~healthscore.core.limits.MAX_YEAR` is refused; ``name`` is the parameter the
    value came from, named in the error (``start``, ``train_until`` ...).

    >>> parse_as_of("2025-01-01")
    datetime.datetime(2025, 1, 1, 0, 0)
    >>> parse_as_of("2025-01-01T12:30:00+02:00")
    datetime.datetime(2025, 1, 1, 10, 30)
    >>> parse_as_of("0001-01-01", "start")
    Traceback (most recent call last):
    ...
    healthscore.errors.ScoringError: `start` 0001-01-01 is out of range: dates must lie \
in the years 1900 to 2999
    """
    if value is None:
        return today()
    if isinstance(value, datetime):
        d = value
    elif isinstance(value, date):
        d = datetime(value.year, value.month, value.day)
    else:
        text = str(value).strip()
        try:
            d = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ScoringError(
                f"`{name}` {text!r} is not a date",
                hint="use YYYY-MM-DD or an ISO timestamp such as 2025-01-01T12:00:00Z",
            ) from None
    if not MIN_YEAR <= d.year <= MAX_YEAR:
        raise ScoringError(
            f"`{name}` {d.date().isoformat()} is out of range: dates must lie in the years "
            f"{MIN_YEAR} to {MAX_YEAR}"
        )
    if d.tzinfo is not None:
        d = d.astimezone(UTC).replace(tzinfo=None)
    return d


def today() -> datetime:
    """The start of the current UTC day (naive UTC): every command's default as-of."""
    return datetime.now(UTC).replace(tzinfo=None, hour=0, minute=0, second=0, microsecond=0)


def parse_duration(text: str) -> tuple[int, str]:
    """``'30d'`` -> ``(30, 'd')``; units are days, weeks and calendar months.

    >>> parse_duration("3mo")
    (3, 'mo')
    >>> parse_duration("0d")
    Traceback (most recent call last):
    ...
    healthscore.errors.DurationError: a duration must be longer than 0: '0d' (e.g. 1d, 1w, 1mo)
    """
    m = DURATION.match(str(text).strip())
    if not m:
        raise DurationError(f"not a duration: {text!r} (expected like 30d, 4w, 3mo)")
    n, unit = int(m.group(1)), m.group(2)
    if n == 0:
        raise DurationError(f"a duration must be longer than 0: {text!r} (e.g. 1d, 1w, 1mo)")
    if n * _DAYS[unit] > MAX_DURATION_DAYS:
        raise DurationError(
            f"a duration must be at most {MAX_DURATION_DAYS // 366} years: {text!r} "
            f"(e.g. 365d, 52w, 12mo)"
        )
    return n, unit


_DAYS = {"d": 1, "w": 7, "mo": 30.44}


def duration_days(text: str) -> float:
    """Approximate length in days (months count as 30.44 days); used for freshness."""
    n, unit = parse_duration(text)
    return n * _DAYS[unit]


def shift(d: datetime, duration: str, sign: int = -1) -> datetime:
    """``d`` moved back (or forward) by a model duration (calendar months for ``mo``)."""
    n, unit = parse_duration(duration)
    return d + _delta(n, unit) * sign


def shift_each(dates, duration: str, sign: int = -1):
    """:func:`shift` of every date of a pandas Series, computed once per distinct date
    (observations share a few dates: a backtest's 85,000 rows hold 23).

    >>> import pandas as pd
    >>> shift_each(pd.Series([datetime(2025, 1, 31)] * 2), "1mo", +1).tolist()
    [Timestamp('2025-02-28 00:00:00'), Timestamp('2025-02-28 00:00:00')]
    """
    moved = {d: shift(d, duration, sign) for d in dates.dropna().unique()}
    return dates.map(moved)


def _delta(n: int, unit: str) -> relativedelta:
    return {"d": relativedelta(days=n), "w": relativedelta(weeks=n), "mo": relativedelta(months=n)}[
        unit
    ]


def dates_between(start: datetime, end: datetime, every: str) -> list[datetime]:
    """``end``, ``end - every``, ... back to ``start``, oldest first: ``end`` is always in.

    >>> [d.day for d in dates_between(datetime(2025, 1, 1), datetime(2025, 1, 16), "1w")]
    [2, 9, 16]
    """
    n, unit = parse_duration(every)
    if end < start:
        raise ScoringError(f"the end {end:%Y-%m-%d} is before the start {start:%Y-%m-%d}")
    if (end - start).days / (n * _DAYS[unit]) >= MAX_DATES:
        raise ScoringError(
            f"{start:%Y-%m-%d} to {end:%Y-%m-%d} every {every} is more than {MAX_DATES:,} dates",
            hint="choose a longer step (`every`) or a shorter range",
        )
    out, k = [], 0
    while True:
        # multiples back from the end, so month steps from the 31st stay on month ends
        d = end if k == 0 else end - _delta(n * k, unit)
        if d < start:
            return out[::-1]
        out.append(d)
        k += 1


def anniversaries(
    first: datetime, period: str, lead: str, start: datetime, end: datetime
) -> list[datetime]:
    """``first`` + k x ``period`` - ``lead`` (k = 1, 2 ...) from ``start`` to ``end``.

    Whole periods count from ``first`` (a contract from 31 January has its monthly
    anniversaries on 29 February, 31 March, 30 April ...), the first k is found by
    arithmetic (a contract of 1920 observed in 2025 takes no step through the century
    between), and a range with more than :data:`~healthscore.core.limits.MAX_DATES`
    periods is refused as :func:`dates_between` refuses it.

    >>> [f"{d:%Y-%m-%d}" for d in anniversaries(
    ...     datetime(1920, 1, 31), "1mo", "1d", datetime(2024, 2, 1), datetime(2024, 4, 30))]
    ['2024-02-28', '2024-03-30', '2024-04-29']
    """
    n, unit = parse_duration(period)
    if (end - start).days / (n * _DAYS[unit]) >= MAX_DATES:
        raise ScoringError(
            f"{start:%Y-%m-%d} to {end:%Y-%m-%d} every {period} is more than {MAX_DATES:,} dates",
            hint="choose a longer period (`anniversaries`) or a shorter range",
        )
    back = _delta(*parse_duration(lead))
    longest = n * {"d": 1, "w": 7, "mo": 31}[unit]  # the most days one period can hold
    # every k below this one falls before ``start``: first + k x period <= first + k x longest
    k = max(1, (start + back - first).days // longest)
    out = []
    while True:
        d = first + _delta(n * k, unit) - back
        if d > end:
            return out
        if d >= start:
            out.append(d)
        k += 1
