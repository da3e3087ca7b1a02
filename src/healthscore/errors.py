"""One error root, one class per stage; the data lives on the exception.

Every message has the shape ``<file>:<line or row>: <key path or column>: <what is
wrong> (got X, expected Y)`` followed by a hint when the cause is common. A stage that
finds several problems collects them as :class:`Problem` entries and raises once; the
message lists the first 20 and says how many more there are.

Examples
--------
>>> p = Problem("bad date", file="a.csv", row=3, column="ts", got="31/02/2024")
>>> str(p)
"a.csv:3: ts: bad date (got '31/02/2024')"
>>> err = SourceError.collect([p, p])
>>> print(err)
2 problems:
  a.csv:3: ts: bad date (got '31/02/2024')
  a.csv:3: ts: bad date (got '31/02/2024')
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

MAX_SHOWN = 20


@dataclass
class Problem:
    """One thing wrong, with where it is."""

    reason: str
    file: str | None = None
    line: int | None = None  # model files: 1-based line
    row: int | None = None  # data files: spreadsheet row (CSV header = 1), JSONL line, Parquet row
    column: str | None = None  # data files: column name
    key: str | None = None  # model files: key path like pillars.usage.metrics.x.weight
    got: Any = None
    expected: str | None = None
    hint: str | None = None

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = self.file
            if self.line is not None:
                where += f":{self.line}"
            elif self.row is not None:
                where += f":{self.row}"
            where += ": "
        elif self.row is not None:
            where = f"row {self.row}: "
        elif self.line is not None:
            where = f"line {self.line}: "
        field = self.key or self.column
        text = f"{where}{field + ': ' if field else ''}{self.reason}"
        extra = []
        if self.got is not None:
            extra.append(f"got {self.got!r}")
        if self.expected:
            extra.append(f"expected {self.expected}")
        if extra:
            text += f" ({', '.join(extra)})"
        if self.hint:
            text += f"; hint: {self.hint}"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


class HealthscoreError(Exception):
    """Root of every error healthscore raises on purpose."""

    def __init__(self, message: str = "", problems: list[Problem] | None = None, hint=None):
        self.problems = list(problems or [])
        self.message = message
        self.hint = hint
        super().__init__(self.get_message())

    @classmethod
    def collect(cls, problems: list[Problem], message: str = ""):
        return cls(message, problems=problems)

    def get_message(self) -> str:
        if not self.problems:
            text = self.message
            if self.hint:
                text += f"; hint: {self.hint}"
            return text
        if len(self.problems) == 1 and not self.message:
            return str(self.problems[0])
        head = self.message or f"{len(self.problems)} problems"
        lines = [f"{head}:"]
        lines += [f"  {p}" for p in self.problems[:MAX_SHOWN]]
        if len(self.problems) > MAX_SHOWN:
            lines.append(f"  ... and {len(self.problems) - MAX_SHOWN} more")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.get_message()


class SourceError(HealthscoreError):
    """A data file cannot be read or has invalid rows (file, row, column, reason)."""


class ModelError(HealthscoreError):
    """A model file is invalid (file, line, key path, reason)."""


class StoreError(HealthscoreError):
    """The store cannot be opened, created or written."""


class StoreInUseError(StoreError):
    """A DuckDB store another process holds open (a DuckDB file has one writer process):
    ``path`` and the holder's ``pid`` when the driver names it. The CLI names the
    healthscore server when it is that process (see ``service.owner``)."""

    def __init__(self, message: str = "", problems=None, hint=None, path=None, pid=None):
        self.path = path
        self.pid = pid
        super().__init__(message, problems=problems, hint=hint)


class OutputError(HealthscoreError):
    """A file healthscore writes (scores, a report, rejects, a model file) cannot be
    written: the path, why (disk full, permission denied ...) and what to do."""

    def __init__(self, message: str = "", problems=None, hint=None, path=None):
        self.path = path
        super().__init__(message, problems=problems, hint=hint)


class ScoringError(HealthscoreError):
    """A score cannot be computed (e.g. an unknown account or a bad as-of date)."""


class DurationError(HealthscoreError):
    """A duration such as ``30d``, ``4w`` or ``3mo`` is malformed (the text and why)."""


class Interrupted(KeyboardInterrupt):
    """The process was asked to stop (SIGTERM) while it waited on the store.

    A ``KeyboardInterrupt``, so the database driver treats it as Ctrl-C (psycopg cancels
    the running query in the server) and nothing catches it as an ordinary error;
    ``signum`` is the signal, for the exit code (128 + signum).
    """

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
