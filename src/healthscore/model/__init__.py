"""The scoring model as code: one YAML file, validated with precise errors.

Place in the flow: read by every stage after ``store``. ``load_model(path)`` parses
the YAML keeping line numbers, checks it against the pydantic schema (unknown keys
are named with the keys allowed at that spot), then checks what spans sections:
metric references, table columns, expressions (parsed with sqlglot and built as Ibis
expressions against the canonical schema, so an unknown column or a type mismatch
fails here with its line), formula cycles, weights, segments and bands. Every problem
is collected and raised once as a :class:`~healthscore.errors.ModelError`.

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

from __future__ import annotations

import hashlib
import json
import re
from datetime import date, datetime, timedelta
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import ibis
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError

from healthscore import expressions as ex
from healthscore.core.tables import TABLES
from healthscore.core.time import duration_days, parse_duration
from healthscore.errors import DurationError, ModelError, Problem

SCORING_SECTIONS = (
    "bands",
    "population",
    "columns",
    "metrics",
    "pillars",
    "segments",
    "rules",
    "trends",
    "probability",
)
#: the scorecard made of the file's top-level pillars, bands, segments and rules
HEALTH = "health"
BAND_NAMES = ("green", "yellow", "red")


def _duration(v: str) -> str:
    try:
        parse_duration(v)
    except DurationError as e:  # pydantic turns ValueError into a located problem
        raise ValueError(e.message) from None
    return v


# --- schema ------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class MetricSpec(_Strict):
    """A metric: a windowed aggregate, an as-of read, a formula or an account column."""

    description: str | None = None
    unit: str | None = None
    from_: str | None = Field(None, alias="from", description="table to aggregate")
    aggregate: str | None = Field(None, description="e.g. count(), count_distinct(user_id)")
    where: str | None = Field(None, description="SQL filter on the table's rows")
    window: str | None = Field(None, description="rows with time in [D - window, D), e.g. 30d")
    time: str | None = Field(None, description="time column (default: the table's)")
    change_vs: str | None = Field(
        None,
        description="relative change (a fraction): `previous` = vs the previous window; "
        "a duration like 90d = vs the value as of D - 90d",
    )
    if_previous_zero: float | None = Field(
        None, description="change when the previous window is empty and the current is not"
    )
    formula: str | None = Field(None, description="expression over metrics and account columns")
    column: str | None = Field(None, description="an account column used directly")
    fill: float | None = Field(None, description="raw value when there is no data")

    _check_window = field_validator("window")(lambda cls, v: v if v is None else _duration(v))
    _check_change = field_validator("change_vs")(
        lambda cls, v: v if v in (None, "previous") else _duration(v)
    )

    @model_validator(mode="after")
    def _one_kind(self):
        kinds = [k for k in ("aggregate", "formula", "column") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(
                "a metric needs exactly one of `aggregate` (with `from`), `formula` or `column`"
                + (f" (got {', '.join(kinds)})" if kinds else "")
            )
        if self.aggregate is not None and self.from_ is None:
            raise ValueError("`aggregate` needs `from: <table>`")
        if self.aggregate is None:
            for k in ("from_", "where", "window", "time", "change_vs"):
                if getattr(self, k) is not None:
                    raise ValueError(f"`{k.rstrip('_')}` only applies to aggregate metrics")
        if self.change_vs == "previous" and not self.window:
            raise ValueError("`change_vs: previous` needs a `window`; or give a duration like 90d")
        if self.if_previous_zero is not None and not self.change_vs:
            raise ValueError("`if_previous_zero` only applies with `change_vs: previous`")
        return self

    @property
    def kind(self) -> str:
        return "aggregate" if self.aggregate else "formula" if self.formula else "column"


class MissingPolicy(_Strict):
    """What a metric contributes when it has no value."""

    policy: Literal["neutral", "reweight", "penalty"] = "reweight"
    value: float | None = Field(None, ge=0, le=100)

    @model_validator(mode="after")
    def _value(self):
        if self.policy == "reweight" and self.value is not None:
            raise ValueError("`reweight` takes no value")
        if self.value is None and self.policy != "reweight":
            self.value = 50.0 if self.policy == "neutral" else 0.0
        return self


def _missing(v: Any) -> Any:
    if isinstance(v, str):
        return {"policy": v}
    if isinstance(v, dict) and len(v) == 1 and next(iter(v)) in ("neutral", "penalty"):
        k, val = next(iter(v.items()))
        return {"policy": k, "value": val}
    return v


class Percentile(_Strict):
    """Percentile normalisation, fitted once and stored as piecewise points per segment."""

    better: Literal["higher", "lower"] = Field("higher", description="which end scores 100")
    by_segment: bool = Field(True, description="fit separately within each segment")
    quantiles: list[float] = Field(
        default_factory=lambda: [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0],
        description="quantiles to fit (0-1)",
    )
    fitted_at: str | None = Field(None, description="as-of date of the fit (written by the fit)")
    points: dict[str, list[tuple[float, float]]] | None = Field(
        None,
        description="segment -> [[raw, score], ...] ('*' = all accounts; written by "
        "`healthscore model fit-percentiles`)",
    )

    @model_validator(mode="after")
    def _check(self):
        if any(not 0 <= q <= 1 for q in self.quantiles) or len(self.quantiles) < 2:
            raise ValueError("`quantiles` needs 2+ values within 0-1")
        for seg, pts in (self.points or {}).items():
            xs = [p[0] for p in pts]
            if not pts or any(b <= a for a, b in zip(xs, xs[1:], strict=False)):
                raise ValueError(f"percentile points for {seg!r} must have raw strictly ascending")
        if self.points is not None and "*" not in self.points:
            raise ValueError("percentile points need a '*' entry for accounts of other segments")
        return self


class MetricUse(_Strict):
    """A metric inside a pillar: its weight, normalisation to 0-100 and missing policy."""

    weight: float = Field(ge=0)
    bad: float | None = None
    good: float | None = None
    points: list[tuple[float, float]] | None = Field(
        None, description="piecewise-linear [[raw, score], ...], raw ascending"
    )
    map: dict[str, float] | None = Field(None, description="category -> score 0-100")
    percentile: Percentile | None = Field(None, description="percentile within segment")
    missing: Annotated[MissingPolicy, Field(default_factory=MissingPolicy)]

    _m = field_validator("missing", mode="before")(lambda cls, v: _missing(v))

    @model_validator(mode="after")
    def _one_normalisation(self):
        has_linear = self.bad is not None or self.good is not None
        n = sum(
            [has_linear, self.points is not None, self.map is not None, self.percentile is not None]
        )
        if n != 1:
            raise ValueError(
                "give exactly one normalisation: `bad`+`good`, `points`, `map` or `percentile`"
            )
        if has_linear:
            if self.bad is None or self.good is None:
                raise ValueError("`bad` and `good` go together")
            if self.bad == self.good:
                raise ValueError(f"`bad` and `good` must differ (both {self.bad})")
        if self.points is not None:
            xs = [p[0] for p in self.points]
            if len(xs) < 2 or any(b <= a for a, b in zip(xs, xs[1:], strict=False)):
                raise ValueError("`points` needs 2+ [raw, score] pairs with raw strictly ascending")
            if any(not 0 <= p[1] <= 100 for p in self.points):
                raise ValueError("`points` scores must be within 0-100")
        if self.map is not None and any(not 0 <= v <= 100 for v in self.map.values()):
            raise ValueError("`map` scores must be within 0-100")
        return self


class Pillar(_Strict):
    weight: float = Field(ge=0)
    label: str | None = None
    metrics: dict[str, MetricUse]


class Bands(_Strict):
    green: float = Field(80, ge=0, le=100)
    yellow: float = Field(50, ge=0, le=100)

    @model_validator(mode="after")
    def _order(self):
        if not self.green > self.yellow:
            raise ValueError(f"green ({self.green}) must be above yellow ({self.yellow})")
        return self


class Segments(_Strict):
    by: str = Field(description="account column or metric giving the segment")
    weights: dict[str, dict[str, Annotated[float, Field(ge=0)]]] = Field(
        default_factory=dict,
        description="segment -> pillar -> weight (pillars left out keep their default weight)",
    )
    bands: dict[str, Bands] = Field(
        default_factory=dict,
        description="segment -> its own green and yellow thresholds (others use `bands`)",
    )


class RapidDecline(_Strict):
    drop: float = Field(20, gt=0, description="points lost ...")
    within: str = Field("30d", description="... within this long")

    _d = field_validator("within")(lambda cls, v: _duration(v))


class Slope(_Strict):
    slope: float = Field(5, gt=0, description="points per 30 days (a fitted line's slope)")
    over: str = Field("90d", description="fitted over the scores of this long")
    min_span: str = Field("60d", description="the stored scores must span at least this")
    r2: float = Field(0.5, ge=0, le=1, description="how consistent: the fit's R squared")

    _d = field_validator("over", "min_span")(lambda cls, v: _duration(v))


class StableHigh(_Strict):
    for_: str = Field("60d", alias="for", description="green at every stored date of this long")
    max_range: float = Field(10, ge=0, description="highest minus lowest score at most this")

    _d = field_validator("for_")(lambda cls, v: _duration(v))


class Trends(_Strict):
    """Thresholds of the trend classes (checked in this order; else `stable`)."""

    rapid_decline: Annotated[RapidDecline, Field(default_factory=RapidDecline)]
    gradual_decline: Annotated[Slope, Field(default_factory=Slope)]
    improving: Annotated[Slope, Field(default_factory=Slope)]
    stable_high: Annotated[StableHigh, Field(default_factory=StableHigh)]


class Rule(_Strict):
    """A condition over metrics, account columns and flags, and what it does to the score.

    Effects apply in a fixed order over all rules that hold: ``add`` points, then
    ``floor``, then ``cap``, then the 0-100 clamp; ``band`` forces the band (the worst
    forced band wins); ``signal`` raises a named signal shown beside the score.
    """

    description: str | None = None
    when: str = Field(description="SQL condition, e.g. usage_change_30d < -0.2 AND nps_latest < 7")
    add: float | None = Field(None, ge=-100, le=100, description="points added (negative: taken)")
    floor: float | None = Field(None, ge=0, le=100, description="the score is at least this")
    cap: float | None = Field(None, ge=0, le=100, description="the score is at most this")
    band: Literal["green", "yellow", "red"] | None = Field(None, description="force this band")
    signal: str | None = Field(None, description="name of a signal raised while the rule holds")

    @model_validator(mode="after")
    def _has_effect(self):
        if all(getattr(self, k) is None for k in ("add", "floor", "cap", "band", "signal")):
            raise ValueError("a rule needs an effect: add, floor, cap, band or signal")
        return self


#: outcomes whose probability falls as the score rises (the others rise with it)
RISK_OUTCOMES = ("churned", "contracted")
OUTCOME_KINDS = ("churned", "contracted", "expanded", "renewed", "reactivated")


class Probability(_Strict):
    """A calibrated probability of an outcome within a horizon, as a function of the score.

    Fitted out of sample by ``healthscore model fit-probability`` on stored point-in-time
    scores and the outcomes that followed them; stored as piecewise-linear points so that
    scoring reads it like any other normalisation.
    """

    outcome: Literal["churned", "contracted", "expanded", "renewed", "reactivated"] = Field(
        "churned", description="the outcome it is the probability of (an outcomes kind)"
    )
    horizon: str = Field("90d", description="the outcome happens within this long")
    method: Literal["isotonic", "platt"] = Field("isotonic", description="how it was fitted")
    fitted_until: str | None = Field(
        None, description="only observations whose horizon closed by this date were used"
    )
    observations: int | None = Field(None, ge=0, description="(account, date) pairs fitted on")
    events: int | None = Field(None, ge=0, description="of which followed by the outcome")
    points: list[tuple[float, float]] = Field(
        description="[[score, probability], ...], score strictly ascending within 0-100, "
        "linear in between and flat beyond the ends"
    )

    _h = field_validator("horizon")(lambda cls, v: _duration(v))

    @field_validator("fitted_until", mode="before")
    @classmethod
    def _date_text(cls, v):
        # YAML reads an unquoted 2025-06-01 as a date
        if isinstance(v, datetime):
            return f"{v:%Y-%m-%d}" if v.time() == datetime.min.time() else v.isoformat()
        return v.isoformat() if isinstance(v, date) else v

    @field_validator("points")
    @classmethod
    def _points(cls, points):
        xs = [p[0] for p in points]
        if len(xs) < 2 or any(b <= a for a, b in zip(xs, xs[1:], strict=False)):
            raise ValueError("needs 2+ [score, probability] pairs, score strictly ascending")
        if any(not 0 <= x <= 100 for x in xs):
            raise ValueError("scores must be within 0-100")
        if any(not 0 <= p[1] <= 1 for p in points):
            raise ValueError("probabilities must be within 0-1")
        return points

    @model_validator(mode="after")
    def _check(self):
        if self.events is not None and self.observations is not None:
            if self.events > self.observations:
                raise ValueError(
                    f"`events` ({self.events}) cannot exceed `observations` ({self.observations})"
                )
        return self

    @property
    def decreasing(self) -> bool:
        """Whether the probability falls as the score rises (a risk such as churn)."""
        return self.outcome in RISK_OUTCOMES

    def describe(self) -> str:
        """``churn within 90d``: what the probability is of, in words."""
        noun = {"churned": "churn", "contracted": "contraction", "expanded": "expansion"}
        return f"{noun.get(self.outcome, self.outcome)} within {self.horizon}"


class Scorecard(_Strict):
    """Another score over the same metrics: its own pillars, weights, bands and rules."""

    description: str | None = None
    population: str | None = Field(
        None, description="which accounts get this score (with the model's own population)"
    )
    bands: Annotated[Bands, Field(default_factory=Bands)]
    pillars: dict[str, Pillar]
    segments: Segments | None = None
    rules: dict[str, Rule] = Field(default_factory=dict)
    probability: Probability | None = Field(
        None, description="calibrated probability of an outcome from this scorecard's score"
    )


ColumnType = Literal["string", "int64", "float64", "boolean", "timestamp"]


class ModelSpec(_Strict):
    """The whole model file."""

    name: str | None = Field(None, description="human label stored beside the version")
    description: str | None = None
    bands: Annotated[Bands, Field(default_factory=Bands)]
    population: str | None = Field(None, description="filter on account columns")
    columns: dict[str, dict[str, ColumnType]] = Field(
        default_factory=dict, description="extra columns the model reads: table -> column -> type"
    )
    freshness: dict[str, str] = Field(
        default_factory=dict, description="table -> expected lag, e.g. usage_events: 2d"
    )
    metrics: dict[str, MetricSpec]
    pillars: dict[str, Pillar]
    segments: Segments | None = None
    rules: dict[str, Rule] = Field(
        default_factory=dict, description="rules of the health score: name -> condition, effect"
    )
    trends: Annotated[Trends, Field(default_factory=Trends)]
    probability: Probability | None = Field(
        None,
        description="calibrated probability of an outcome (e.g. churn within 90d) from the "
        "score; written by `healthscore model fit-probability`",
    )
    scorecards: dict[str, Scorecard] = Field(
        default_factory=dict,
        description="more scores over the same metrics, e.g. expansion, onboarding "
        "(the top-level pillars make the `health` scorecard)",
    )

    _f = field_validator("freshness")(
        lambda cls, v: {k: _duration(d) for k, d in (v or {}).items()}
    )


# --- loading -------------------------------------------------------------------------------


def _yaml() -> YAML:
    y = YAML(typ="rt")
    y.allow_duplicate_keys = False
    return y


def _line_of(doc: Any, path: tuple) -> int | None:
    """1-based line of the deepest node along ``path`` found in the ruamel document."""
    line = None
    node = doc
    for key in path:
        lc = getattr(node, "lc", None)
        try:
            if isinstance(node, dict) and key in node:
                if lc is not None:
                    line = lc.key(key)[0] + 1
                node = node[key]
            elif isinstance(node, list) and isinstance(key, int) and key < len(node):
                if lc is not None:
                    line = lc.item(key)[0] + 1
                node = node[key]
            else:
                break
        except (KeyError, TypeError, AttributeError):
            break
    return line


def _allowed_keys(loc: tuple) -> list[str] | None:
    """Keys allowed at the mapping that holds ``loc[-1]`` (walks the schema)."""
    import typing

    cls: Any = ModelSpec
    for key in loc[:-1]:
        if typing.get_origin(cls) is dict:  # a user's name (metric, pillar ...): step into values
            cls = _unwrap(typing.get_args(cls)[1])
            continue
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)):
            return None
        field = next(
            (f for n, f in cls.model_fields.items() if (f.alias or n) == key or n == key), None
        )
        if field is None:
            return None
        cls = _unwrap(field.annotation)
    if isinstance(cls, type) and issubclass(cls, BaseModel):
        return [f.alias or n for n, f in cls.model_fields.items()]
    return None


def _unwrap(t: Any) -> Any:
    """Unwrap Optional[...] and Annotated[...]."""
    import types
    import typing

    origin = typing.get_origin(t)
    if origin is Annotated:
        return _unwrap(typing.get_args(t)[0])
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(t) if a is not type(None)]
        return _unwrap(args[0]) if len(args) == 1 else t
    return t


def _key_path(loc: tuple) -> str:
    out = ""
    for k in loc:
        out += f"[{k}]" if isinstance(k, int) else (f".{k}" if out else str(k))
    return out


def _schema_problems(e: ValidationError, doc: Any, file: str) -> list[Problem]:
    problems = []
    for err in e.errors():
        # pydantic puts the model-validator name or a union branch into loc; drop those
        loc = tuple(k for k in err["loc"] if not (isinstance(k, str) and k.startswith("function-")))
        reason = err["msg"].removeprefix("Value error, ")
        hint = None
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(loc)
            reason = f"unknown key {loc[-1]!r}"
            if allowed:
                hint = "allowed here: " + ", ".join(allowed)
        elif err["type"] == "missing":
            reason = "required key is missing"
        got = err.get("input") if err["type"] not in ("missing", "extra_forbidden") else None
        if isinstance(got, dict | list):
            got = None
        problems.append(
            Problem(
                reason, file=file, line=_line_of(doc, loc), key=_key_path(loc), got=got, hint=hint
            )
        )
    return problems


def load_model(path: str | Path | None = None) -> Model:
    """Load and validate a model file (the default model when ``path`` is None).

    Raises :class:`ModelError` listing every problem with its line and key path.
    """
    if path is None:
        text = default_model_text()
        return load_model_text(text, file="<default model>")
    p = Path(path)
    if not p.exists():
        raise ModelError(f"model file not found: {p}", hint="run `healthscore init` to write one")
    return load_model_text(p.read_text(encoding="utf-8"), file=str(p))


def default_model_text() -> str:
    """The text of the default four-pillar model that ``init`` writes."""
    return resources.files("healthscore.model").joinpath("default_model.yaml").read_text("utf-8")


def load_model_text(text: str, file: str = "<string>") -> Model:
    try:
        doc = _yaml().load(text)
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        lines = text.splitlines()
        ctx = ""
        if line:
            lo, hi = max(1, line - 2), min(len(lines), line + 2)
            ctx = "\n" + "\n".join(f"{i:>5} | {lines[i - 1]}" for i in range(lo, hi + 1))
        raise ModelError(
            problems=[Problem(f"YAML syntax error: {e.problem or e}{ctx}", file=file, line=line)]
        ) from None
    except Exception as e:  # ruamel raises a few non-marked errors (e.g. duplicate keys)
        raise ModelError(problems=[Problem(f"YAML error: {e}", file=file)]) from None
    if not isinstance(doc, dict):
        raise ModelError(problems=[Problem("a model file must be a YAML mapping", file=file)])
    try:
        spec = ModelSpec.model_validate(_plain(doc))
    except ValidationError as e:
        raise ModelError(problems=_schema_problems(e, doc, file)) from None
    model = Model(spec, file=file, doc=doc)
    problems = _Checker(model).run()
    if problems:
        raise ModelError(problems=problems)
    return model


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


# --- the validated model ----------------------------------------------------------------


class Model:
    """A validated model: the spec plus what every stage derives from it."""

    def __init__(
        self, spec: ModelSpec, file: str = "<string>", doc: Any = None, scorecard: str = HEALTH
    ):
        self.spec = spec
        self.file = file
        self._doc = doc
        self.scorecard_name = scorecard
        self._root: Model = self  # the whole file (a scorecard's view points back to it)

    def __repr__(self) -> str:
        return f"<Model {self.label!r} {self.scorecard_name} {self.version[:12]} from {self.file}>"

    @property
    def label(self) -> str:
        return self.spec.name or Path(self.file).stem

    def full_path(self, *path) -> tuple:
        """A key path of this view as a path in the file (under ``scorecards.<name>``)."""
        own = ("pillars", "bands", "segments", "rules", "population", "probability")
        if self._root is not self and path and path[0] in own:
            return ("scorecards", self.scorecard_name, *path)
        return path

    def line_of(self, *path) -> int | None:
        doc = self._root._doc
        return _line_of(doc, self.full_path(*path)) if doc is not None else None

    # scorecards ---------------------------------------------------------------------
    def scorecard_names(self) -> list[str]:
        """``health`` (the top-level pillars) and every scorecard the file defines."""
        return [HEALTH, *self._root.spec.scorecards]

    def scorecard(self, name: str | None) -> Model:
        """The model as seen by one scorecard: its pillars, bands, segments and rules.

        The view shares the file's metrics, columns and population (a scorecard's own
        ``population`` narrows it); its version covers only what it scores with.
        """
        root = self._root
        if name in (None, HEALTH):
            return root
        if name not in root.spec.scorecards:
            raise ModelError(
                f"{root.file}: no scorecard {name!r}",
                hint="scorecards: " + ", ".join(root.scorecard_names()),
            )
        card = root.spec.scorecards[name]
        population = root.spec.population
        if card.population:
            own = card.population
            population = f"({population}) AND ({own})" if population else own
        spec = root.spec.model_copy(
            update={
                "pillars": card.pillars,
                "bands": card.bands,
                "segments": card.segments,
                "rules": card.rules,
                "probability": card.probability,
                "population": population,
                "scorecards": {},
            }
        )
        view = Model(spec, file=root.file, doc=None, scorecard=name)
        view._root = root
        return view

    # weights ------------------------------------------------------------------------
    def pillar_weights(self, segment: str | None = None) -> dict[str, float]:
        """Pillar weights normalised to sum 1 (for a segment when it overrides them)."""
        raw = {p: v.weight for p, v in self.spec.pillars.items()}
        if segment is not None and self.spec.segments:
            raw.update(self.spec.segments.weights.get(segment, {}))
        total = sum(raw.values())
        return {p: w / total for p, w in raw.items()}

    def metric_shares(self) -> dict[str, dict[str, float]]:
        """Per pillar, each metric's share of the pillar (sums to 1 within a pillar)."""
        out = {}
        for p, pillar in self.spec.pillars.items():
            total = sum(u.weight for u in pillar.metrics.values())
            out[p] = {m: (u.weight / total if total else 0.0) for m, u in pillar.metrics.items()}
        return out

    def metric_weights(self, segment: str | None = None) -> dict[str, float]:
        """Effective weight of each scored metric (pillar weight x share), summing to 1."""
        pw = self.pillar_weights(segment)
        return {
            m: pw[p] * s for p, shares in self.metric_shares().items() for m, s in shares.items()
        }

    def scored_metrics(self) -> list[tuple[str, str, MetricUse]]:
        """(pillar, metric, use) for every metric that carries weight, in file order."""
        return [(p, m, u) for p, pl in self.spec.pillars.items() for m, u in pl.metrics.items()]

    def unfitted_percentiles(self) -> list[str]:
        """Scored metrics whose percentile normalisation has not been fitted yet."""
        return [m for _, m, u in self.scored_metrics() if u.percentile and not u.percentile.points]

    def segment_names(self) -> list[str]:
        return list(self.spec.segments.weights) if self.spec.segments else []

    def bands_for(self, segment: str | None) -> Bands:
        """The green and yellow thresholds an account of ``segment`` is banded by."""
        seg = self.spec.segments
        if seg is not None and segment is not None and segment in seg.bands:
            return seg.bands[segment]
        return self.spec.bands

    # version --------------------------------------------------------------------------
    @cached_property
    def version(self) -> str:
        """sha256 of the canonical JSON of the scoring sections (weights normalised)."""
        data = self.spec.model_dump(mode="json", by_alias=True, include=set(SCORING_SECTIONS))
        if data.get("probability") is None:  # versions of models without one stay as they were
            data.pop("probability", None)
        if self.scorecard_name != HEALTH:
            data["scorecard"] = self.scorecard_name
        for rule in data.get("rules", {}).values():
            rule.pop("description", None)
        shares = self.metric_shares()
        for p, pillar in data["pillars"].items():
            pillar["weight"] = _r(self.pillar_weights()[p])
            for m, use in pillar["metrics"].items():
                use["weight"] = _r(shares[p][m])
        if data.get("segments"):
            if not data["segments"].get("bands"):  # versions of models without them stay
                data["segments"].pop("bands", None)
            data["segments"]["weights"] = {
                s: {p: _r(w) for p, w in self.pillar_weights(s).items()}
                for s in data["segments"]["weights"]
            }
        for metric in data["metrics"].values():
            for k in [k for k, v in metric.items() if v is None or k in ("description", "unit")]:
                del metric[k]
        for pillar in data["pillars"].values():
            pillar.pop("label", None)
        blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    # tables ----------------------------------------------------------------------------
    def table_schema(self, table: str) -> dict[str, str]:
        """Canonical columns plus the extra columns the model declares for ``table``."""
        cols = dict(TABLES[table].columns)
        cols.update(self.spec.columns.get(table, {}))
        return cols

    def tables_used(self) -> list[str]:
        used = ["accounts"]
        for m in self.spec.metrics.values():
            if m.from_ and m.from_ not in used:
                used.append(m.from_)
        return used

    def expected_lag(self, table: str) -> timedelta | None:
        if table in self.spec.freshness:
            return timedelta(days=duration_days(self.spec.freshness[table]))
        return TABLES[table].expected_lag

    def formula_order(self) -> list[str]:
        """Formula metrics in dependency order."""
        order: list[str] = []
        formulas = {n: m for n, m in self.spec.metrics.items() if m.formula}

        def visit(n, stack=()):
            if n in order or n not in formulas:
                return
            for _, name in ex.names_in(formulas[n].formula):
                if name in formulas and name not in stack:
                    visit(name, (*stack, n))
            order.append(n)

        for n in formulas:
            visit(n)
        return order


def _r(x: float) -> float:
    return float(f"{x:.12g}")


# --- cross-section checks ----------------------------------------------------------------


class _Checker:
    """Checks that span sections; builds every expression against unbound Ibis tables."""

    def __init__(self, model: Model):
        self.m = model
        self.spec = model.spec
        self.problems: list[Problem] = []
        self.metric_types: dict[str, Any] = {}

    def add(self, reason: str, *path, got=None, hint=None, expected=None):
        self.problems.append(
            Problem(
                reason,
                file=self.m.file,
                line=self.m.line_of(*path),
                key=_key_path(self.m.full_path(*path)),
                got=got,
                hint=hint,
                expected=expected,
            )
        )

    def run(self) -> list[Problem]:
        self.check_columns()
        account_cols = self.m.table_schema("accounts")
        self.accounts = ibis.table(account_cols, name="accounts")
        as_of = ibis.literal(ibis.timestamp("2000-01-01"), type="timestamp")
        self.as_of = as_of
        for name, metric in self.spec.metrics.items():
            same_column = metric.column and metric.column.removeprefix("accounts.") == name
            if (name in account_cols) and not same_column:
                self.add(
                    f"metric name {name!r} clashes with an account column; rename the metric",
                    "metrics",
                    name,
                )
            if metric.aggregate:
                self.check_aggregate(name, metric)
            elif metric.column:
                self.check_column_metric(name, metric)
        self.check_formulas()
        self.check_scoring()
        if self.spec.population:
            self.check_row_expr(self.spec.population, "population")
        for t in self.spec.freshness:
            if t not in TABLES:
                self.add(f"unknown table {t!r}", "freshness", t, hint=_tables_hint())
        for name, card in self.spec.scorecards.items():
            if name == HEALTH:
                self.add(
                    "the `health` scorecard is the file's top-level pillars; name this one "
                    "differently",
                    "scorecards",
                    name,
                )
                continue
            sub = _Checker(self.m.scorecard(name))
            sub.metric_types, sub.accounts, sub.as_of = self.metric_types, self.accounts, as_of
            sub.check_scoring()
            if card.population:
                sub.check_row_expr(card.population, "scorecards", name, "population")
            self.problems += sub.problems
        return self.problems

    def check_scoring(self):
        """What one scorecard scores with: pillars, segments and rules."""
        self.check_pillars()
        self.check_segments()
        self.check_rules()

    def check_rules(self):
        for name, rule in self.spec.rules.items():
            path = ("rules", name)
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                self.add("a rule name is letters, digits and _ (it names output columns)", *path)
            value = self._compile(
                lambda rule=rule: ex.compile_row(
                    rule.when, self._formula_resolver(), as_of=self.as_of, has_flag=_flag_stub
                ),
                *path,
                "when",
            )
            if value is not None and not value.type().is_boolean():
                self.add("`when` must be a condition (true/false)", *path, "when")
            if rule.floor is not None and rule.cap is not None and rule.floor > rule.cap:
                self.add(f"floor {rule.floor:g} is above cap {rule.cap:g}", *path)

    def check_columns(self):
        for t, cols in self.spec.columns.items():
            if t not in TABLES:
                self.add(f"unknown table {t!r}", "columns", t, hint=_tables_hint())
                continue
            for c, typ in cols.items():
                canon = TABLES[t].columns.get(c)
                if canon and canon != typ:
                    self.add(
                        f"{t}.{c} is a canonical column of type {canon}", "columns", t, c, got=typ
                    )

    def check_aggregate(self, name: str, metric: MetricSpec):
        path = ("metrics", name)
        t = metric.from_
        if t not in TABLES:
            self.add(f"unknown table {t!r}", *path, "from", hint=_tables_hint())
            return
        table_def = TABLES[t]
        schema = self.m.table_schema(t)
        if t == "accounts":
            self.add("aggregate metrics read event or interval tables", *path, "from", got=t)
            return
        table = ibis.table(schema, name=t)
        time = metric.time or table_def.time
        if metric.time and (schema.get(metric.time) != "timestamp"):
            ts_cols = [c for c, ty in schema.items() if ty == "timestamp"]
            self.add(
                f"time column {metric.time!r} is not a timestamp column of {t}",
                *path,
                "time",
                hint="timestamp columns: " + ", ".join(ts_cols),
            )
            return
        resolve = _resolver(table, t)
        where = None
        if metric.where:
            where = self._compile(lambda: ex.compile_row(metric.where, resolve), *path, "where")
            if where is not None and not where.type().is_boolean():
                self.add("`where` must be a condition (true/false)", *path, "where")
        ctx = ex.AggregateContext(table, where, [table[time], table[table_def.primary_key]])
        value = self._compile(
            lambda: ex.compile_aggregate(metric.aggregate, resolve, ctx, as_of=self.as_of),
            *path,
            "aggregate",
        )
        if value is not None:
            self.metric_types[name] = value.type()

    def check_column_metric(self, name: str, metric: MetricSpec):
        cols = self.m.table_schema("accounts")
        col = metric.column.removeprefix("accounts.")
        if col not in cols:
            self.add(
                f"unknown account column {col!r}",
                "metrics",
                name,
                "column",
                hint="account columns: "
                + ", ".join(cols)
                + "; declare extra ones under `columns: {accounts: {name: type}}`",
            )
        else:
            self.metric_types[name] = ibis.dtype(cols[col])

    def check_formulas(self):
        formulas = {n: m for n, m in self.spec.metrics.items() if m.formula}
        # cycles first: an unresolvable formula would cascade into noise
        graph = {}
        for n, m in formulas.items():
            try:
                graph[n] = [x for _, x in ex.names_in(m.formula) if x in formulas]
            except ex.ExpressionError as e:
                self.add(str(e), "metrics", n, "formula")
                graph[n] = []
        cyclic = _cycle(graph)
        if cyclic:
            self.add(
                "formulas refer to each other in a cycle: " + " -> ".join(cyclic),
                "metrics",
                cyclic[0],
                "formula",
            )
            return
        for n in self.m.formula_order():
            m = formulas[n]
            value = self._compile(
                lambda m=m: ex.compile_row(
                    m.formula, self._formula_resolver(), as_of=self.as_of, has_flag=_flag_stub
                ),
                "metrics",
                n,
                "formula",
            )
            if value is not None:
                self.metric_types[n] = value.type()

    def _formula_resolver(self):
        known = {**self.metric_types}
        acc = self.accounts

        def resolve(name, qualifier=None):
            if qualifier not in (None, "accounts"):
                raise KeyError(f"only accounts.<column> may be qualified (got {qualifier}.)")
            if qualifier is None and name in known:
                return (
                    ibis.literal(None, type=known[name])
                    if not known[name].is_null()
                    else ibis.null()
                )
            if name in acc.columns:
                return acc[name]
            if name in self.spec.metrics:
                raise KeyError(f"metric {name!r} could not be built (see its own error)")
            raise KeyError(
                "formulas and rules may use metrics ("
                + ", ".join(self.spec.metrics)
                + ") and account columns"
            )

        return resolve

    def check_row_expr(self, text: str, *path):
        acc = self.accounts

        def resolve(name, qualifier=None):
            if qualifier not in (None, "accounts") or name not in acc.columns:
                raise KeyError("account columns: " + ", ".join(acc.columns))
            return acc[name]

        value = self._compile(
            lambda: ex.compile_row(text, resolve, as_of=self.as_of, has_flag=_flag_stub), *path
        )
        if value is not None and not value.type().is_boolean():
            self.add("must be a condition (true/false)", *path)

    def check_pillars(self):
        if not self.spec.pillars:
            self.add("a model needs at least one pillar", "pillars")
        total = 0.0
        for p, pillar in self.spec.pillars.items():
            total += pillar.weight
            if not pillar.metrics:
                self.add("a pillar needs at least one metric", "pillars", p, "metrics")
            elif pillar.weight > 0 and sum(u.weight for u in pillar.metrics.values()) <= 0:
                self.add(
                    "all metric weights are 0 in a pillar that has weight",
                    "pillars",
                    p,
                    "metrics",
                )
            for m, use in pillar.metrics.items():
                path = ("pillars", p, "metrics", m)
                if m not in self.spec.metrics:
                    self.add(
                        f"unknown metric {m!r}",
                        *path,
                        hint="defined metrics: " + ", ".join(self.spec.metrics),
                    )
                    continue
                typ = self.metric_types.get(m)
                if typ is None:
                    continue
                if use.map is None and not (typ.is_numeric() or typ.is_boolean()):
                    self.add(
                        f"metric {m!r} is {typ}, not a number: normalise it with `map:`", *path
                    )
                if use.map is not None and not typ.is_string():
                    self.add(f"`map:` normalises text categories; {m!r} is {typ}", *path, "map")
        seen: dict[str, str] = {}
        for p, pillar in self.spec.pillars.items():
            for m in pillar.metrics:
                if m in seen:
                    self.add(
                        f"metric {m!r} is already scored in pillar {seen[m]!r}",
                        "pillars",
                        p,
                        "metrics",
                        m,
                    )
                seen.setdefault(m, p)
        if self.spec.pillars and total <= 0:
            self.add("pillar weights add up to 0", "pillars")

    def check_segments(self):
        seg = self.spec.segments
        if seg is None:
            return
        by = seg.by.removeprefix("accounts.")
        cols = self.m.table_schema("accounts")
        if by not in cols and by not in self.spec.metrics:
            self.add(
                f"unknown segment column or metric {by!r}",
                "segments",
                "by",
                hint="account columns: " + ", ".join(cols),
            )
        for s, weights in seg.weights.items():
            for p in weights:
                if p not in self.spec.pillars:
                    self.add(
                        f"unknown pillar {p!r}",
                        "segments",
                        "weights",
                        s,
                        p,
                        hint="pillars: " + ", ".join(self.spec.pillars),
                    )
            merged = {pp: v.weight for pp, v in self.spec.pillars.items()}
            merged.update({k: v for k, v in weights.items() if k in merged})
            if sum(merged.values()) <= 0:
                self.add("pillar weights add up to 0 for this segment", "segments", "weights", s)

    def _compile(self, build, *path):
        try:
            return build()
        except ex.ExpressionError as e:
            self.add(str(e), *path)
            return None


def _resolver(table, name: str):
    def resolve(col, qualifier=None):
        if qualifier not in (None, name) or col not in table.columns:
            raise KeyError(
                f"columns of {name}: "
                + ", ".join(table.columns)
                + f"; declare extra ones under `columns: {{{name}: {{column: type}}}}`"
            )
        return table[col]

    return resolve


def _flag_stub(kind: str):
    return ibis.literal(False)


def _tables_hint() -> str:
    return "tables: " + ", ".join(TABLES)


def _cycle(graph: dict[str, list[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def dfs(n, stack):
        state[n] = 1
        for d in graph.get(n, []):
            if state.get(d) == 1:
                return [*stack[stack.index(d) :], d] if d in stack else [n, d]
            if state.get(d) is None:
                found = dfs(d, [*stack, d])
                if found:
                    return found
        state[n] = 2
        return None

    for n in graph:
        if state.get(n) is None:
            found = dfs(n, [n])
            if found:
                return found
    return None


def json_schema() -> dict:
    """JSON Schema of the model file, for editor completion."""
    schema = ModelSpec.model_json_schema(by_alias=True)
    schema["title"] = "healthscore model"
    return schema
