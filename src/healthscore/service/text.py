r"""Text a client sends that no store can keep: unpaired UTF-16 surrogates, and a NUL
character in the name of a batch's column.

Place in the flow: under the routes of ``service/`` that read JSON bodies (ingest,
Segment, tokens, users). JSON may spell a surrogate code point on its own (``"\ud800"``,
half of a pair whose other half is missing); Python's reader then gives a string that
cannot be written as UTF-8, so Arrow, DuckDB and PostgreSQL all refuse it, and an error
message echoing it cannot be sent either. (A whole pair, ``"\ud83d\ude00"``, is read as
the one character it stands for and is fine.) The routes refuse such text where it is,
before anything is written: a row and column of an ingestion batch (400), a field of a
small JSON body (422, :data:`StoredText`), a field of a Segment message (parked as a
reject with the reason). A column's name holding a NUL (U+0000) is refused the same way
(a value holding one is the batch's own checks', :mod:`healthscore.sources.checks`): the
reader's SQL would end at it.

Examples
--------
>>> unpaired("ok \u00e9 \U0001f600"), unpaired("half \ud83d of a pair")
(False, True)
>>> for p in row_problems([{"a": "x", "b": "\udc00"}, {"\ud800": 1}]):
...     print(p)
row 0: b: not valid Unicode text: an unpaired surrogate (got '\\udc00')
row 1: '\ud800': not valid Unicode text: an unpaired surrogate in the column's name
>>> print(*row_problems([{"a\x00": 1}]))
row 0: 'a\x00': the column's name holds a NUL character (U+0000), which no name may hold
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

from healthscore.core.limits import NUL
from healthscore.errors import Problem

_SURROGATE = re.compile("[\ud800-\udfff]")
REASON = "not valid Unicode text: an unpaired surrogate"
NUL_IN_NAME = "the column's name holds a NUL character (U+0000), which no name may hold"


def unpaired(text: str) -> bool:
    """Whether ``text`` holds a surrogate code point (one JSON spelt without its pair)."""
    return not text.isascii() and _SURROGATE.search(text) is not None


def row_problems(rows: list) -> list[Problem]:
    """One problem per value or column name of a batch's rows holding an unpaired
    surrogate, and per column name holding a NUL (``row``: the index in ``rows``, from
    0); rows that are not objects are left to the batch's own checks."""
    problems = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            continue
        for k, v in row.items():
            if unpaired(k):
                problems.append(Problem(f"{REASON} in the column's name", row=i, column=repr(k)))
            elif NUL in k:
                problems.append(Problem(NUL_IN_NAME, row=i, column=repr(k)))
            elif isinstance(v, str) and unpaired(v):
                problems.append(Problem(REASON, row=i, column=k, got=escaped(v)))
    return problems


def escaped(text: str) -> str:
    """``text`` with each surrogate written as its escape (a backslash, ``ud800``): what
    an error message can show of it."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def readable(text: str) -> str:
    """``text`` with each surrogate replaced by U+FFFD (the replacement character): what
    a parked copy of a refused message keeps of it."""
    return _SURROGATE.sub("\ufffd", text) if unpaired(text) else text


def _storable(text: str) -> str:
    if unpaired(text):
        raise ValueError(REASON)
    return text


#: a text field of a JSON body that must be storable (422 naming the field when not)
StoredText = Annotated[str, AfterValidator(_storable)]
