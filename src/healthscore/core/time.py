"""Time, one way everywhere: as-of dates, "today", model durations and date ranges.

Place in the flow: the bottom layer, beside :mod:`healthscore.core.tables`. Every
command, the engine and the evaluation read dates through these functions, so "as of
D", "today at 00:00 UTC" and "3mo before D" mean the same thing in every output.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

from dateutil.relativedelta import relativedelta

from healthscore.errors import DurationError, ScoringError

DURATION = re.compile(r"^(\d+)(d|w|mo)$")


def parse_as_of(value: str | date | datetime | None) -> datetime:
    """An as-of date as a naive UTC datetime; None means :func:`today` (00:00 UTC).

    A date means 00:00 UTC of that day; a timestamp with an offset is converted to UTC.
    Every command defaults to the start of the current UTC day, so ``score``,
    ``explain``, ``report``, ``trends`` and ``compare`` run without ``--as-of`` agree with
    each other and with stored history (midnights): a score as of D uses data dated before
    D, so data of the current day counts from the next day. Pass a timestamp for "now".

    >>> parse_as_of("2025-01-01")
    datetime.datetime(2025, 1, 1, 0, 0)
    >>> parse_as_of("2025-01-01T12:30:00+02:00")
    datetime.datetime(2025, 1, 1, 10, 30)
    """
    if value is None:
        return today()
    if isinstance(value, datetime):
        d = value
    elif isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    else:
        text = str(value).strip()
        try:
            d = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ScoringError(
                f"as-of date {text!r} is not a date",
                hint="use YYYY-MM-DD or an ISO timestamp such as 2025-01-01T12:00:00Z",
            ) from None
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
    if int(m.group(1)) == 0:
        raise DurationError(f"a duration must be longer than 0: {text!r} (e.g. 1d, 1w, 1mo)")
    return int(m.group(1)), m.group(2)


def duration_days(text: str) -> float:
    """Approximate length in days (months count as 30.44 days); used for freshness."""
    n, unit = parse_duration(text)
    return n * {"d": 1, "w": 7, "mo": 30.44}[unit]


def shift(d: datetime, duration: str, sign: int = -1) -> datetime:
    """``d`` moved back (or forward) by a model duration (calendar months for ``mo``)."""
    n, unit = parse_duration(duration)
    delta = {"d": relativedelta(days=n), "w": relativedelta(weeks=n), "mo": relativedelta(months=n)}
    return d + delta[unit] * sign


def dates_between(start: datetime, end: datetime, every: str) -> list[datetime]:
    """``end``, ``end - every``, ... back to ``start``, oldest first: ``end`` is always in.

    >>> [d.day for d in dates_between(datetime(2025, 1, 1), datetime(2025, 1, 16), "1w")]
    [2, 9, 16]
    """
    parse_duration(every)
    if end < start:
        raise ScoringError(f"the end {end:%Y-%m-%d} is before the start {start:%Y-%m-%d}")
    out, k = [], 0
    while True:
        # multiples back from the end, so month steps from the 31st stay on month ends
        d = end if k == 0 else shift(end, _times(every, k))
        if d < start:
            return out[::-1]
        out.append(d)
        k += 1


def _times(every: str, k: int) -> str:
    n, unit = parse_duration(every)
    return f"{n * k}{unit}"
