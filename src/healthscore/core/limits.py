"""The limits on what healthscore reads from files it cannot trust, in one place.

Place in the flow: the bottom layer. Model files and load spec files are code a person
writes, but they arrive from anywhere (a pull request, an upload to the service): these
bounds make a hostile or broken file fail fast with a clear error instead of hanging the
tool or filling its memory. Every number here is documented in ``docs/model.md``
("Limits"); a real model stays far below each of them.
"""

from __future__ import annotations

#: a model file or load spec file larger than this is refused before it is parsed
MAX_YAML_BYTES = 1024 * 1024
#: aliases (``*name``, including ``<<: *name`` merges) allowed in one YAML file
MAX_YAML_ALIASES = 100
#: nodes (mappings, lists, scalars) a YAML file may expand to, aliases counted in full
MAX_YAML_NODES = 50_000
#: how deeply mappings and lists may nest in a YAML file
MAX_YAML_DEPTH = 50

#: counts in one model file (pillars, rules and segments: per scorecard)
MAX_METRICS = 500
MAX_PILLARS = 50
MAX_RULES = 200
MAX_SEGMENTS = 100
MAX_SCORECARDS = 20
#: tables under ``columns:``, and extra columns declared per table
MAX_COLUMNS = 200
#: entries in one ``map:`` (category -> 0-100) and points in one piecewise curve
MAX_MAP_ENTRIES = 1_000
#: characters in a metric, pillar or rule name: each names columns of the scoring query
#: with a suffix (``<metric>__contribution``, ``rule__<rule>__contribution``), and
#: PostgreSQL cuts a column name at 63 bytes, so two long names sharing a beginning became
#: one column ("column reference ... is ambiguous")
MAX_NAME_CHARS = 40
#: characters in one expression (``where``, ``formula``, a rule's ``when`` ...)
MAX_EXPRESSION_CHARS = 2_000
#: how deeply one expression may nest (``a + b + c`` nests as deeply as it has terms)
MAX_EXPRESSION_DEPTH = 100

#: how deeply one row of a JSON lines data file may nest (objects and lists): a row is a
#: flat record, and DuckDB's reader crashes the process (its stack) on tens of thousands
MAX_JSON_DEPTH = 100

#: the one character no text value may hold, wherever it comes from (a file, a JSON body,
#: a URL): no store keeps it in text (PostgreSQL refuses it; DuckDB's SQL text ends at it,
#: so an id holding one could never be looked up)
NUL = "\x00"

#: characters that do not show as themselves, by Unicode category: control characters (an
#: escape that colours or moves a terminal's cursor), format characters (invisible: a
#: zero-width space, a right-to-left override that shows a name as another) and line
#: separators; no name a person types or reads (a login, a token's name, a flag's kind)
#: may hold one
UNSHOWN = {"Cc": "a control character", "Cf": "an invisible format character",
           "Zl": "a line separator", "Zp": "a paragraph separator"}  # fmt: skip


def unshown(text: str) -> str | None:
    """The first character of ``text`` that does not show as itself (:data:`UNSHOWN`), in
    words (``U+001B (a control character) at character 3``); None when each one shows.

    >>> unshown("champion_left"), unshown("re\\norg")
    (None, 'U+000A (a control character) at character 3')
    """
    import unicodedata

    for i, c in enumerate(text):
        kind = UNSHOWN.get(unicodedata.category(c))
        if kind:
            return f"U+{ord(c):04X} ({kind}) at character {i + 1}"
    return None


#: characters of a value an error message repeats (an id, a name): past this, the start
#: and the value's length
MAX_SHOWN_CHARS = 80


def quoted(value: str) -> str:
    """``value`` quoted as an error message repeats it: whole when short, else its start
    and its length (a 10,000-character id made a 10 KB message).

    >>> quoted("ACC-1")
    "'ACC-1'"
    >>> quoted("x" * 100).replace("x" * 64, "x...x")
    "'x...x'... (100 characters)"
    """
    if len(value) <= MAX_SHOWN_CHARS:
        return repr(value)
    return f"{value[: MAX_SHOWN_CHARS - 16]!r}... ({len(value):,} characters)"


#: characters in a flag's kind (what ``has_flag('kind')`` matches: a word or two)
MAX_FLAG_KIND = 100

#: characters in an id: a loaded or ingested ``*_id`` value, and a Segment message's userId,
#: groupId, messageId or event name; real ones are tens of characters, so a longer one is
#: a row error (parked, for Segment), never stored as a key
MAX_ID_CHARS = 1_000

#: dates healthscore accepts anywhere (as-of dates, ranges, data files): years in this range
MIN_YEAR = 1900
MAX_YEAR = 2999
#: the longest duration a model or an option may name: 100 years (36,600d, 5,228w, 1,202mo)
MAX_DURATION_DAYS = 100 * 366
#: dates in one range (``backfill --from --to --every``, a backtest's dates)
MAX_DATES = 20_000
#: bootstrap resamples of one backtest or calibration (each holds a count per account)
MAX_REPS = 10_000
#: cross-validation folds of a calibration on data with no history
MAX_FOLDS = 100
#: accounts and months of a generated demo book
MAX_DEMO_ACCOUNTS = 100_000
MAX_DEMO_MONTHS = 120
