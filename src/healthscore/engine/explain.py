"""Why an account has its score: pillars, metrics and how missing data was treated.

Place in the flow: after ``scoring``; reads one scored row (wide) and the model, and
returns plain data that the CLI renders and the API serialises. Every score decomposes
exactly: the contributions of the metric lines add up to the score.
"""

from __future__ import annotations

import functools
import json
import operator
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from datetime import datetime
from typing import Any

from healthscore.core.values import value_text
from healthscore.engine.metrics import RULE
from healthscore.engine.scoring import CLAMP, CONTRIB, MISSING, NORM, PILLAR, WEIGHT
from healthscore.model import Model


@dataclass
class MetricLine:
    pillar: str
    metric: str
    raw: Any
    normalized: float | None
    weight: float
    contribution: float
    missing: str | None  # policy applied when the metric had no data, else None
    description: str | None = None
    label: str | None = None  # what people read (the model's `label`, else the key)
    unit: str | None = None
    #: a ``points`` normalisation (e.g. a shape learned by calibration): [raw, score]
    points: list[tuple[float, float]] | None = None

    @property
    def shown(self) -> str:
        return self.label or self.metric


@dataclass
class RuleLine:
    """A rule of the model: whether it held, and the points it moved the score by."""

    rule: str
    holds: bool
    effect: str  # e.g. "cap 60", "add -10", "band red", "signal disengaging"
    contribution: float
    description: str | None = None


@dataclass
class PillarLine:
    pillar: str
    weight: float  # the pillar's weight for this account (after re-weighting)
    model_weight: float  # the pillar's weight for this account's segment in the model
    score: float | None


@dataclass
class Explanation:
    account_id: str
    as_of: datetime
    segment: str | None
    csm: str | None
    score: float | None
    band: str | None
    coverage: float
    model_version: str
    model_label: str
    pillars: list[PillarLine] = field(default_factory=list)
    metrics: list[MetricLine] = field(default_factory=list)
    segment_weights_used: str = "default"
    rules: list[RuleLine] = field(default_factory=list)
    base_score: float | None = None  # the weighted sum, before rules
    signals: list[str] = field(default_factory=list)
    band_forced_by: str | None = None
    # the model's calibrated probability of its outcome within its horizon (None without one)
    probability: float | None = None
    probability_of: str | None = None  # e.g. "churn within 90d"
    band_name: str | None = None  # what the band is called in this scorecard (e.g. ready)

    def to_dict(self) -> dict[str, Any]:
        """The explanation as plain data (what ``dataclasses.asdict`` gives, built
        without its deep copy of every value: the live service writes one for each
        account it rescores, thousands a batch under heavy ingest)."""
        d = _plain(self)
        d["as_of"] = self.as_of.isoformat()
        return d

    def to_json(self) -> str:
        """``json.dumps(self.to_dict(), default=str)``, the text the live service stores
        for each account it rescores, written without building :meth:`to_dict`'s copy:
        the encoder walks the lines themselves (:func:`_json_default`)."""
        return json.dumps(self, default=_json_default)

    def drivers(self, n: int = 3) -> list[MetricLine]:
        """The metrics that cost the most points (weight x (100 - normalized))."""
        lines = [m for m in self.metrics if m.weight > 0 and m.normalized is not None]
        lines.sort(key=lambda m: (-(m.weight * (100 - m.normalized)), m.metric))
        return [m for m in lines[:n] if m.weight * (100 - m.normalized) > 0.05]

    def missing_summary(self) -> list[str]:
        out = []
        for m in self.metrics:
            if m.missing == "fill":
                out.append(f"{m.shown}: no data; the model's fill value {m.raw!r} was used")
            elif m.missing == "reweight":
                out.append(
                    f"{m.shown}: no data; its weight was shared among the rest of {m.pillar}"
                )
            elif m.missing:
                out.append(f"{m.shown}: no data; scored {m.normalized:g} by the {m.missing} policy")
        return out


def _plain(obj: Any) -> dict[str, Any]:
    """The dataclass ``obj`` as ``dataclasses.asdict`` makes it, for the values an
    explanation holds: scalars (immutable: nothing to deep-copy) and lists of
    dataclasses, tuples or scalars. (The live service writes one for each account it
    rescores, thousands a micro-batch under heavy ingest: the fields are read at once,
    and only lists are walked.)"""
    names, get = _fields_of(type(obj))
    d = dict(zip(names, get(obj), strict=True))
    for k, v in d.items():
        if isinstance(v, list):
            d[k] = [_plain_item(x) for x in v]
    return d


def _json_default(obj: Any) -> Any:
    """What :meth:`Explanation.to_json` writes for a value JSON has no form for: a
    dataclass as its fields (the explanation's ``as_of`` in ISO form, as
    :meth:`Explanation.to_dict` gives it), anything else as ``str`` (as
    ``json.dumps(..., default=str)``)."""
    cls = type(obj)
    if cls in _LINES or cls is Explanation or (is_dataclass(obj) and not isinstance(obj, type)):
        names, get = _fields_of(cls)
        d = dict(zip(names, get(obj), strict=True))
        if cls is Explanation:
            d["as_of"] = obj.as_of.isoformat()
        return d
    return str(obj)


#: the line classes of an explanation (checked before the slower ``is_dataclass``)
_LINES = frozenset({MetricLine, PillarLine, RuleLine})


def _plain_item(x: Any) -> Any:
    if type(x) in _LINES or is_dataclass(x):
        return _plain(x)
    return type(x)(x) if isinstance(x, list | tuple) else x


@functools.cache
def _fields_of(cls: type) -> tuple[tuple[str, ...], Any]:
    """A dataclass's field names, and a function that reads them all (as a tuple)."""
    names = tuple(f.name for f in fields(cls))
    return names, operator.attrgetter(*names) if len(names) > 1 else lambda o: (
        getattr(o, names[0]),
    )


class Static:
    """What :func:`from_row` takes from the model, the same for every row: looked up
    once for a batch of rows (``engine.current.current_rows``) rather than once a row."""

    def __init__(self, model: Model):
        self.model = model
        self.metrics = [
            (
                p,
                m,
                model.spec.metrics[m].description,
                model.metric_label(m),
                model.metric_unit(m),
                use.points,
            )
            for p, m, use in model.scored_metrics()
        ]
        self.pillars = list(model.spec.pillars)
        self.rules = [
            (n, rule_effect(r, model), r.description) for n, r in model.spec.rules.items()
        ]
        self.segments = model.segment_names()
        self._weights: dict[str | None, dict[str, float]] = {}

    def pillar_weights(self, segment: str | None) -> dict[str, float]:
        found = self._weights.get(segment)
        if found is None:
            found = self._weights[segment] = self.model.pillar_weights(segment)
        return found


def from_row(model: Model, row: dict[str, Any], static: Static | None = None) -> Explanation:
    """Build the explanation of one scored row (a dict of the wide score columns)."""
    if static is None:
        static = Static(model)
    seg = row.get("segment")
    used = seg if seg in static.segments else "default"
    model_pw = static.pillar_weights(seg if used != "default" else None)
    metrics = []
    pillar_eff: dict[str, float] = {}
    for p, m, description, label, unit, points in static.metrics:
        w = row[m + WEIGHT]
        pillar_eff[p] = pillar_eff.get(p, 0.0) + w
        metrics.append(
            MetricLine(
                pillar=p,
                metric=m,
                raw=row[m],
                normalized=row[m + NORM],
                weight=w,
                contribution=row[m + CONTRIB],
                missing=row[m + MISSING],
                description=description,
                label=label,
                unit=unit,
                points=points,
            )
        )
    pillars = [
        PillarLine(p, pillar_eff.get(p, 0.0), model_pw[p], row[PILLAR + p]) for p in static.pillars
    ]
    rules = [
        RuleLine(
            rule=n,
            holds=bool(row[RULE + n]),
            effect=effect,
            contribution=row[RULE + n + CONTRIB],
            description=description,
        )
        for n, effect, description in static.rules
    ]
    if row.get(CLAMP):
        rules.append(RuleLine("clamp", True, "score kept within 0-100", row[CLAMP]))
    return Explanation(
        account_id=row["account_id"],
        as_of=row["as_of"],
        segment=seg,
        csm=row.get("csm"),
        score=row["score"],
        band=row["band"],
        coverage=row["coverage"],
        model_version=model.version,
        model_label=model.label,
        pillars=pillars,
        metrics=metrics,
        segment_weights_used=used,
        rules=rules,
        base_score=row.get("base_score", row["score"]),
        signals=(row.get("signals") or "").split(",") if row.get("signals") else [],
        band_forced_by=row.get("band_forced_by"),
        band_name=model.band_name(row["band"]),
        **_probability(model, row),
    )


def _probability(model: Model, row: dict[str, Any]) -> dict[str, Any]:
    spec = model.spec.probability
    if spec is None:
        return {}
    return {"probability": row.get("probability"), "probability_of": spec.describe()}


def from_stored(model: Model, row: dict[str, Any], lines: list[dict[str, Any]]) -> Explanation:
    """An explanation rebuilt from a stored score and its ``score_lines`` (see history)."""
    by = {(ln["kind"], ln["name"]): ln for ln in lines}
    seg = row.get("segment")
    used = seg if seg in model.segment_names() else "default"
    model_pw = model.pillar_weights(seg if used != "default" else None)
    metrics, pillar_eff = [], {}
    for p, m, _use in model.scored_metrics():
        ln = by.get(("metric", m), {})
        w = ln.get("weight") or 0.0
        pillar_eff[p] = pillar_eff.get(p, 0.0) + w
        raw = _stored_raw(ln.get("raw"), ln.get("raw_value"))
        metrics.append(
            MetricLine(
                p,
                m,
                raw,
                ln.get("normalized"),
                w,
                ln.get("contribution") or 0.0,
                ln.get("missing"),
                model.spec.metrics[m].description,
                model.metric_label(m),
                model.metric_unit(m),
                _use.points,
            )
        )
    pillars = [
        PillarLine(
            p, pillar_eff.get(p, 0.0), model_pw[p], by.get(("pillar", p), {}).get("normalized")
        )
        for p in model.spec.pillars
    ]
    rules = []
    for n, r in [*model.spec.rules.items(), ("clamp", None)]:
        ln = by.get(("rule", n))
        if ln is None or (r is None and not ln["contribution"]):
            continue
        rules.append(
            RuleLine(
                n,
                ln["raw"] == "true" if r is not None else True,
                rule_effect(r, model) if r is not None else "score kept within 0-100",
                ln["contribution"] or 0.0,
                r.description if r is not None else None,
            )
        )
    score = row["score"]
    return Explanation(
        account_id=row["account_id"],
        as_of=row["as_of"],
        segment=seg,
        csm=row.get("csm"),
        score=score,
        band=row["band"],
        coverage=row["coverage"],
        model_version=model.version,
        model_label=model.label,
        pillars=pillars,
        metrics=metrics,
        segment_weights_used=used,
        rules=rules,
        base_score=None if score is None else score - sum(r.contribution for r in rules),
        signals=row["signals"].split(",") if row.get("signals") else [],
        band_forced_by=_forced_by(model, rules) if score is not None else None,
        band_name=model.band_name(row["band"]),
        **_probability(model, row),
    )


def _forced_by(model: Model, rules: list[RuleLine]) -> str | None:
    """The rule that forced the band, as scoring picks it: the worst band, first rule."""
    held = {r.rule for r in rules if r.holds}
    for band in ("red", "yellow", "green"):
        for name, rule in model.spec.rules.items():
            if rule.band == band and name in held:
                return name
    return None


def _stored_raw(text: str | None, value: float | None):
    """A stored raw value back as its type: int, float, bool or text."""
    if value is None or text is None:
        return text
    if text in ("true", "false"):
        return text == "true"
    return int(value) if text.lstrip("-").isdigit() else value


def rule_effect(rule, model: Model | None = None) -> str:
    """A rule's effects in words, e.g. ``cap 60, signal disengaging``; a band as
    ``model``'s scorecard names it (``band stalled``)."""
    parts = []
    for key in ("add", "floor", "cap"):
        v = getattr(rule, key)
        if v is not None:
            parts.append(f"{key} {v:+g}" if key == "add" else f"{key} {v:g}")
    if rule.band:
        parts.append(f"band {model.band_name(rule.band) if model else rule.band}")
    if rule.signal:
        parts.append(f"signal {rule.signal}")
    return ", ".join(parts)


def long_rows(model: Model, row: dict[str, Any]) -> dict[str, Any]:
    """One scored row as nested JSON-ready data (``score --format json``)."""
    e = from_row(model, row)
    return {
        "account_id": e.account_id,
        "as_of": e.as_of.isoformat(),
        "segment": e.segment,
        "csm": e.csm,
        "score": e.score,
        "band": e.band,
        "coverage": e.coverage,
        **({"probability": e.probability} if e.probability_of else {}),
        "model_version": e.model_version,
        "pillars": {p.pillar: p.score for p in e.pillars},
        "lines": [
            {
                "kind": "metric",
                **{
                    k: v
                    for k, v in asdict(m).items()
                    if k not in ("description", "label", "unit", "points")
                },
            }
            for m in e.metrics
        ]
        + [
            {"kind": "rule", **{k: v for k, v in asdict(r).items() if k != "description"}}
            for r in e.rules
        ],
        "signals": e.signals,
        "band_forced_by": e.band_forced_by,
    }


@dataclass
class ChangeLine:
    """One line of a change: a metric's value effect, or the weight effect."""

    kind: str  # "metric" | "weights" | "rule"
    name: str
    pillar: str | None
    raw_before: Any
    raw_after: Any
    normalized_before: float | None
    normalized_after: float | None
    effect: float  # points this line moved the score
    # in words: the metric's label, or for the weights line why they moved
    # ("re-weighted because NPS (latest) has no data")
    label: str | None = None
    unit: str | None = None

    @property
    def shown(self) -> str:
        return self.label or self.name


@dataclass
class Change:
    """score(after) - score(before) = the sum of the effects, exactly (to 1e-9)."""

    account_id: str
    before: Explanation
    after: Explanation
    lines: list[ChangeLine]

    @property
    def delta(self) -> float:
        return (self.after.score or 0.0) - (self.before.score or 0.0)

    def summary(self, n: int = 3) -> str:
        """One plain line: the largest movers with their points, e.g. for a CSM's update."""
        movers = [ln for ln in self.lines if abs(ln.effect) >= 0.05][:n]
        forced = ""
        a, b = self.after, self.before
        if a.band_forced_by and (a.band_forced_by, a.band) != (b.band_forced_by, b.band):
            forced = f"; band forced {a.band_name or a.band} by rule {a.band_forced_by}"
        elif b.band_forced_by and not a.band_forced_by:
            forced = f"; rule {b.band_forced_by} no longer forces the band"
        if not movers:
            return f"{self.account_id}: no change ({self.delta:+.1f}){forced}"
        parts = []
        for ln in movers:
            if ln.kind == "weights":
                parts.append(f"{ln.shown} ({ln.effect:+.1f})")
            elif ln.kind == "rule":
                state = {(False, True): " now holds", (True, False): " no longer holds"}
                held = state.get((bool(ln.raw_before), bool(ln.raw_after)), "")
                parts.append(f"rule {ln.name}{held} ({ln.effect:+.1f})")
            else:
                before, after = _show(ln.raw_before, ln.unit), _show(ln.raw_after, ln.unit)
                parts.append(f"{ln.shown} {before} -> {after} ({ln.effect:+.1f})")
        return (
            f"{self.account_id} {_show(self.before.score)} -> {_show(self.after.score)}: "
            + ", ".join(parts)
            + forced
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "account_id": self.account_id,
            "before": _end(self.before),
            "after": _end(self.after),
            "delta": self.delta,
            "summary": self.summary(),
            "lines": [asdict(ln) for ln in self.lines],
        }


def _end(e: Explanation) -> dict[str, Any]:
    return {
        "as_of": e.as_of.isoformat(),
        "score": e.score,
        "band": e.band,
        "band_forced_by": e.band_forced_by,
        "signals": e.signals,
    }


def _show(v, unit: str | None = None) -> str:
    return value_text(v, unit)


def decompose(before: Explanation, after: Explanation) -> Change:
    """Split score(after) - score(before) into per-metric value effects and one weight line.

    With w the effective weight and n the normalized value (0 where a metric carries no
    weight): value effect of a metric = w_before * (n_after - n_before); weight line =
    sum of (w_after - w_before) * n_after (a segment change, missing data re-weighting).
    A metric whose data came or went (no value or no weight at one of the dates) carries
    both parts, w_after * n_after - w_before * n_before, on its own line. Each rule that
    held at either date (and the clamp) adds a line: its contribution after minus before.
    They add up to the change exactly, because score = sum of w * n + rule contributions.
    """
    old = {m.metric: m for m in before.metrics}
    lines = []
    weight_effect = 0.0
    for m in after.metrics:
        b = old[m.metric]
        n_b = b.normalized if b.weight and b.normalized is not None else 0.0
        n_a = m.normalized if m.weight and m.normalized is not None else 0.0
        value = b.weight * (n_a - n_b)
        shifted = (m.weight - b.weight) * n_a
        # data that came or went (no value, or no weight, at one date): the metric's whole
        # change is its own line, so "none -> 64.3" names the metric instead of the weights
        came_or_went = (b.normalized is None) != (m.normalized is None) or (
            (b.weight == 0) != (m.weight == 0)
        )
        if came_or_went:
            value, shifted = value + shifted, 0.0
        lines.append(
            ChangeLine(
                "metric",
                m.metric,
                m.pillar,
                b.raw,
                m.raw,
                b.normalized,
                m.normalized,
                value,
                m.label,
                m.unit,
            )
        )
        weight_effect += shifted
    rules_before = {r.rule: r for r in before.rules}
    for r in after.rules:
        b = rules_before.get(r.rule)
        was = b.contribution if b else 0.0
        if r.contribution or was or r.holds or (b is not None and b.holds):
            lines.append(
                ChangeLine(
                    "rule",
                    r.rule,
                    None,
                    b.holds if b else False,
                    r.holds,
                    None,
                    None,
                    r.contribution - was,
                )
            )
    for r in before.rules:  # a clamp line only the earlier score had
        if r.rule not in {x.rule for x in after.rules} and r.contribution:
            lines.append(
                ChangeLine("rule", r.rule, None, r.holds, False, None, None, -r.contribution)
            )
    if abs(weight_effect) > 0 or before.segment != after.segment:
        lines.append(
            ChangeLine(
                "weights",
                "weights",
                None,
                before.segment,
                after.segment,
                None,
                None,
                weight_effect,
                label=reweighting(before, after),
            )
        )
    lines.sort(key=lambda ln: (-abs(ln.effect), ln.name))
    return Change(after.account_id, before, after, lines)


def reweighting(before: Explanation, after: Explanation) -> str:
    """Why the weights moved between two explanations, in words: a segment change, and
    the metrics whose data went missing (their weight shared among the rest of the
    pillar) or came back.

    A segment weight, or the weight of a metric that came or went, is the same at both
    dates when nothing is named; then the weights are said to have shifted.
    """
    parts = []
    if before.segment != after.segment:
        parts.append(f"segment {before.segment or '-'} -> {after.segment or '-'}")
    old = {m.metric: m for m in before.metrics}

    def names(lines: list[MetricLine]) -> str:
        shown = [m.shown for m in lines]
        return ", ".join(shown[:-1]) + " and " + shown[-1] if len(shown) > 1 else shown[0]

    went = [
        m for m in after.metrics if m.missing == "reweight" and old[m.metric].missing != m.missing
    ]
    came = [m for m in after.metrics if old[m.metric].missing == "reweight" and not m.missing]
    if went:
        verb = "have" if len(went) > 1 else "has"
        parts.append(f"re-weighted because {names(went)} {verb} no data")
    if came:
        verb = "have" if len(came) > 1 else "has"
        parts.append(f"re-weighted because {names(came)} {verb} data again")
    return "; ".join(parts) or "weights shifted"
