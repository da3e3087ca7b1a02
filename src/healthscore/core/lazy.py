"""A module imported on first use: its name stands in until an attribute is read.

Place in the flow: the bottom layer. The store and the engine use Ibis and sqlglot in
most functions but not on every path: a repeat command that runs a compiled plan kept in
the cache (:mod:`healthscore.core.cache`) never needs them, and importing them costs
about half a second of the command's start-up. ``ibis = lazy("ibis")`` at the top of a
module keeps its code as it reads (``ibis.literal(...)``) and defers the import to the
first call that needs it.

>>> json = lazy("json")
>>> json.dumps([1])
'[1]'
"""

from __future__ import annotations

import importlib
from typing import Any


class lazy:  # noqa: N801 - stands in for a module name
    """The module ``name``, imported when one of its attributes is first read."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return getattr(importlib.import_module(self._name), attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"
