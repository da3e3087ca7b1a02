"""The model version: sha256 of the canonical JSON of the validated scoring sections.

Place in the flow: computed once per :class:`~healthscore.model.Model` (its ``version``)
and stored beside every score, so history is keyed by what scored it. Only what can
change a score counts: comments, key order, labels, units, rule descriptions, playbooks
and fitted artefacts that do not move a score (the ``probability:`` curve: a refit
must not orphan the version's history) stay out, and weights are normalised
first, so 30/25/20/25 and 0.3/0.25/0.2/0.25 give the same version.

Examples
--------
>>> from healthscore.model import load_model_text
>>> text = '''
... metrics: {a: {from: usage_events, aggregate: count(), window: 30d}}
... pillars: {usage: {weight: %s, label: %s, metrics: {a: {weight: 1, bad: 0, good: 9}}}}
... '''
>>> one, two = load_model_text(text % (30, "Usage")), load_model_text(text % (0.3, "Use"))
>>> model_version(one) == model_version(two) == one.version
True
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

from healthscore.model.schema import HEALTH

if TYPE_CHECKING:
    from healthscore.model.model import Model

#: the sections the version covers
SCORING_SECTIONS = (
    "bands",
    "population",
    "columns",
    "metrics",
    "pillars",
    "segments",
    "rules",
    "trends",
)


def model_version(model: Model) -> str:
    """sha256 of the canonical JSON of ``model``'s scoring sections (weights normalised)."""
    data = model.spec.model_dump(mode="json", by_alias=True, include=set(SCORING_SECTIONS))
    if model.scorecard_name != HEALTH:
        data["scorecard"] = model.scorecard_name
    for rule in data.get("rules", {}).values():
        rule.pop("description", None)
    shares = model.metric_shares()
    for p, pillar in data["pillars"].items():
        pillar["weight"] = _rounded(model.pillar_weights()[p])
        for m, use in pillar["metrics"].items():
            use["weight"] = _rounded(shares[p][m])
            use.pop("direction", None)  # guides calibration; never moves a score
            if use.get("scale") in (None, "linear"):  # the default: versions stay
                use.pop("scale", None)
    if data.get("segments"):
        if not data["segments"].get("bands"):  # versions of models without them stay
            data["segments"].pop("bands", None)
        data["segments"]["weights"] = {
            s: {p: _rounded(w) for p, w in model.pillar_weights(s).items()}
            for s in data["segments"]["weights"]
        }
    for metric in data["metrics"].values():
        shown = ("description", "label", "unit")  # presentation: not part of the version
        for k in [k for k, v in metric.items() if v is None or k in shown]:
            del metric[k]
    for pillar in data["pillars"].values():
        pillar.pop("label", None)
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def _rounded(x: float) -> float:
    """A normalised weight to 12 significant digits, so 1/3 hashes the same everywhere."""
    return float(f"{x:.12g}")
