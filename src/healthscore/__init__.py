"""healthscore: explainable, backtested customer health scores.

The small Python API that the CLI (and later the service) is a thin layer over::

    import healthscore as hs
    store = hs.connect("healthscore.duckdb")      # or postgres://..., duckdb:// (memory)
    store.load("usage_events", hs.read_source("events.csv", "usage_events").data)
    model = hs.load_model("healthscore.yaml")     # None = the default model
    scores = hs.score(store, model, as_of="2025-01-01")   # a pyarrow Table
    print(hs.explain(store, model, "ACC-00001", as_of="2025-01-01"))

Place in the flow: the package's front door, re-exporting :mod:`healthscore.api` and
the error classes. Everything but the errors is imported on first use, so importing
the package (and so ``healthscore --help``) does not load Ibis or pyarrow.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from healthscore.errors import HealthscoreError, ModelError, ScoringError, SourceError, StoreError

if TYPE_CHECKING:
    from healthscore import api
    from healthscore.api import explain, load_file, score, score_expr
    from healthscore.model import Model, load_model, load_model_text
    from healthscore.sources import read_source
    from healthscore.store import Store, connect

__all__ = [
    "HealthscoreError",
    "Model",
    "ModelError",
    "ScoringError",
    "SourceError",
    "Store",
    "StoreError",
    "api",
    "connect",
    "explain",
    "load_file",
    "load_model",
    "load_model_text",
    "read_source",
    "score",
    "score_expr",
]

#: name -> the module that owns it, imported on first use (PEP 562)
_OWNERS = {
    "explain": "healthscore.api",
    "load_file": "healthscore.api",
    "score": "healthscore.api",
    "score_expr": "healthscore.api",
    "Model": "healthscore.model",
    "load_model": "healthscore.model",
    "load_model_text": "healthscore.model",
    "read_source": "healthscore.sources",
    "Store": "healthscore.store",
    "connect": "healthscore.store",
}


def __getattr__(name: str) -> Any:
    if name == "api":
        value = importlib.import_module(f"{__name__}.api")
    elif name in _OWNERS:
        value = getattr(importlib.import_module(_OWNERS[name]), name)
    elif name.startswith("__"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    else:  # a subpackage not imported yet (``hs.model``, ``hs.engine``)
        try:
            value = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_OWNERS))
