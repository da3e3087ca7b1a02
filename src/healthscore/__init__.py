"""healthscore: explainable, backtested customer health scores.

The small Python API that the CLI (and later the service) is a thin layer over::

    import healthscore as hs
    store = hs.connect("healthscore.duckdb")      # or postgres://..., duckdb:// (memory)
    store.load("usage_events", hs.read_source("events.csv", "usage_events").data)
    model = hs.load_model("healthscore.yaml")     # None = the default model
    scores = hs.score(store, model, as_of="2025-01-01")   # a pyarrow Table
    print(hs.explain(store, model, "ACC-00001", as_of="2025-01-01"))
"""

from healthscore.api import explain, load_file, score, score_expr
from healthscore.errors import HealthscoreError, ModelError, ScoringError, SourceError, StoreError
from healthscore.model import Model, load_model, load_model_text
from healthscore.store import Store, connect

__all__ = [
    "HealthscoreError",
    "Model",
    "ModelError",
    "ScoringError",
    "SourceError",
    "Store",
    "StoreError",
    "connect",
    "explain",
    "load_file",
    "load_model",
    "load_model_text",
    "score",
    "score_expr",
]
