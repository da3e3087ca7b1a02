"""The scoring model as code: one YAML file, validated with precise errors.

Place in the flow: read by every stage after ``store``. ``load_model(path)`` parses
the YAML keeping line numbers, checks it against the pydantic schema (unknown keys
are named with the keys allowed at that spot), then checks what spans sections:
metric references, table columns, expressions (parsed with sqlglot and built as Ibis
expressions against the canonical schema, so an unknown column or a type mismatch
fails here with its line), formula cycles, weights, segments and bands. Every problem
is collected and raised once as a :class:`~healthscore.errors.ModelError`.

One module per job: :mod:`~healthscore.model.schema` (the pydantic classes),
:mod:`~healthscore.model.load` (reading the file, schema errors as located problems),
:mod:`~healthscore.model.checks` (cross-section checks as small named validators),
:mod:`~healthscore.model.model` (the validated :class:`Model`, scorecards and weights)
and :mod:`~healthscore.model.version` (the canonical JSON and its hash).

The model version is the sha256 of the canonical JSON of the validated scoring
sections, with weights normalised: comments, key order, labels and (later) playbooks
never change it, and 30/25/20/25 means the same as 0.3/0.25/0.2/0.25.

Examples
--------
>>> m = load_model_text('''
... metrics:
...   logins_30d: {from: usage_events, aggregate: count(), window: 30d}
... pillars:
...   usage: {weight: 1, metrics: {logins_30d: {weight: 1, bad: 0, good: 20}}}
... ''')
>>> m.metric_weights()["logins_30d"]
1.0
>>> len(m.version)
64
>>> load_model_text('''
... metrics:
...   logins_30d: {from: usage_events, aggregate: count(), window: 30d}
... pillars:
...   usage: {weight: 1, metrics: {logins: {weight: 1, bad: 0, good: 20}}}
... ''')
Traceback (most recent call last):
...
healthscore.errors.ModelError: <string>:5: pillars.usage.metrics.logins: unknown metric ...
"""

from typing import TYPE_CHECKING, Any

from healthscore.model.load import default_model_text, load_model, load_model_text
from healthscore.model.model import Model
from healthscore.model.schema import (
    BAND_NAMES,
    HEALTH,
    OUTCOME_KINDS,
    RISK_OUTCOMES,
    Bands,
    ColumnType,
    MetricSpec,
    MetricUse,
    MissingPolicy,
    ModelSpec,
    Percentile,
    Pillar,
    Probability,
    RapidDecline,
    Rule,
    Scorecard,
    Segments,
    Slope,
    StableHigh,
    Trends,
    json_schema,
)
from healthscore.model.version import SCORING_SECTIONS, model_version

if TYPE_CHECKING:
    from healthscore.model.checks import check_model


def __getattr__(name: str) -> Any:
    # the checks build expressions with Ibis: imported when first used (PEP 562)
    if name == "check_model":
        from healthscore.model.checks import check_model

        return check_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BAND_NAMES",
    "HEALTH",
    "OUTCOME_KINDS",
    "RISK_OUTCOMES",
    "SCORING_SECTIONS",
    "Bands",
    "ColumnType",
    "MetricSpec",
    "MetricUse",
    "MissingPolicy",
    "Model",
    "ModelSpec",
    "Percentile",
    "Pillar",
    "Probability",
    "RapidDecline",
    "Rule",
    "Scorecard",
    "Segments",
    "Slope",
    "StableHigh",
    "Trends",
    "check_model",
    "default_model_text",
    "json_schema",
    "load_model",
    "load_model_text",
    "model_version",
]
