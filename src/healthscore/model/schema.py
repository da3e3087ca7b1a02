"""The model file's schema: pydantic classes from ``ModelSpec`` down to one metric's use.

Place in the flow: the first step of :mod:`healthscore.model`. ``load`` validates the
parsed YAML against :class:`ModelSpec`; what one section can check alone (a duration's
form, a metric's single kind, one normalisation per metric, a rule's effect) is checked
here by pydantic validators, whose errors ``load`` turns into located problems. Checks
that span sections are in :mod:`healthscore.model.checks`.

Examples
--------
>>> MetricUse(weight=1, bad=0, good=10).missing.policy
'reweight'
>>> Bands(green=50, yellow=60)
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for Bands
...
"""

from __future__ import annotations

import math
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from healthscore.core.time import parse_duration
from healthscore.core.yamlio import Count, Number
from healthscore.errors import DurationError

#: the scorecard made of the file's top-level pillars, bands, segments and rules
HEALTH = "health"
#: the bands, best first
BAND_NAMES = ("green", "yellow", "red")
#: columns of a scored row (besides the account columns) that a metric may not be named:
#: the scoring query would hold two columns of that name (``engine.scoring``)
SCORE_COLUMNS = (
    "as_of",
    "score",
    "band",
    "coverage",
    "probability",
    "base_score",
    "signals",
    "band_forced_by",
)


def _duration(v: str) -> str:
    """``v`` if it is a duration (``30d``, ``4w``, ``3mo``); else why not, for pydantic."""
    try:
        parse_duration(v)
    except DurationError as e:  # pydantic turns ValueError into a located problem
        raise ValueError(e.message) from None
    return v


def _cadence(v: str | dict) -> str | dict:
    """A freshness entry: a duration, or one of ``{data: D}`` / ``{load: D}``."""
    if isinstance(v, dict):
        if len(v) != 1:
            raise ValueError("give one of `data: <duration>` or `load: <duration>`")
        return {k: _duration(d) for k, d in v.items()}
    return _duration(v)


class _Strict(BaseModel):
    # a number in a model file is finite: .nan or .inf (YAML) validated and scored as nonsense
    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)


class MetricSpec(_Strict):
    """A metric: a windowed aggregate, an as-of read, a formula or an account column."""

    description: str | None = None
    label: str | None = Field(
        None, description="what people read instead of the key, e.g. Late invoices (90 days)"
    )
    unit: str | None = Field(
        None,
        description="shown after the value: days, hours, USD ...; `%` shows a fraction "
        "(0.25) as 25 %",
    )
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
    if_previous_zero: Number | None = Field(
        None, description="change when the previous window is empty and the current is not"
    )
    formula: str | None = Field(None, description="expression over metrics and account columns")
    column: str | None = Field(None, description="an account column used directly")
    fill: Number | None = Field(None, description="raw value when there is no data")

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
    value: Number | None = Field(None, ge=0, le=100)

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
    quantiles: list[Number] = Field(
        default_factory=lambda: [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0],
        description="quantiles to fit (0-1)",
    )
    fitted_at: str | None = Field(None, description="as-of date of the fit (written by the fit)")
    points: dict[str, list[tuple[Number, Number]]] | None = Field(
        None,
        description="segment -> [[raw, score], ...] ('*' = all accounts; written by "
        "`healthscore model fit-percentiles`)",
    )

    @model_validator(mode="after")
    def _check(self):
        qs = self.quantiles
        if any(not 0 <= q <= 1 for q in qs) or len(qs) < 2:
            raise ValueError("`quantiles` needs 2+ values within 0-1")
        if any(b <= a for a, b in zip(qs, qs[1:], strict=False)):
            raise ValueError(f"`quantiles` must be strictly ascending (got {qs})")
        for seg, pts in (self.points or {}).items():
            xs = [p[0] for p in pts]
            if not pts or any(b <= a for a, b in zip(xs, xs[1:], strict=False)):
                raise ValueError(f"percentile points for {seg!r} must have raw strictly ascending")
        if self.points is not None and "*" not in self.points:
            raise ValueError("percentile points need a '*' entry for accounts of other segments")
        return self


class MetricUse(_Strict):
    """A metric inside a pillar: its weight, normalisation to 0-100 and missing policy."""

    weight: Number = Field(ge=0)
    bad: Number | None = None
    good: Number | None = None
    scale: Literal["linear", "log"] | None = Field(
        None,
        description="`log`: `bad`, `good` and the value are read as ln(1 + x), for heavily "
        "skewed counts (anchors >= 0; a negative value reads as 0); written by "
        "`healthscore calibrate` when it fits clearly better",
    )
    points: list[tuple[Number, Number]] | None = Field(
        None, description="piecewise-linear [[raw, score], ...], raw ascending"
    )
    map: dict[str, Number] | None = Field(None, description="category -> score 0-100")
    percentile: Percentile | None = Field(None, description="percentile within segment")
    missing: Annotated[MissingPolicy, Field(default_factory=MissingPolicy)]
    direction: Literal["fixed", "learned"] | None = Field(
        None,
        description="`fixed`: `healthscore calibrate` never flips which end is healthy (it "
        "may move `bad`/`good`, never swap them; a `map` keeps its scores); `learned` "
        "(the default): the data may flip it. Not part of the model version",
    )

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
            if not math.isfinite(self.good - self.bad):  # every value would score 0
                raise ValueError(
                    f"`bad` ({self.bad:g}) and `good` ({self.good:g}) are too far apart to "
                    "score between"
                )
            if self.scale == "log" and min(self.bad, self.good) < 0:
                raise ValueError(
                    f"`scale: log` reads ln(1 + x): `bad` and `good` must be >= 0 "
                    f"(got {self.bad:g} and {self.good:g})"
                )
        elif self.scale is not None:
            raise ValueError("`scale` goes with `bad`+`good`")
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
    weight: Number = Field(ge=0)
    label: str | None = None
    metrics: dict[str, MetricUse]


class Bands(_Strict):
    green: Number = Field(80, ge=0, le=100)
    yellow: Number = Field(50, ge=0, le=100)

    @model_validator(mode="after")
    def _order(self):
        if not self.green > self.yellow:
            raise ValueError(f"green ({self.green}) must be above yellow ({self.yellow})")
        return self


class BandNames(_Strict):
    """What each band is called where people read it (the data keeps green/yellow/red)."""

    green: str = "green"
    yellow: str = "yellow"
    red: str = "red"

    @model_validator(mode="after")
    def _distinct(self):
        # a name is read back whatever its case (`score --band`): one that is another
        # band's name, or another band's own word, would select the wrong band
        names = {b: getattr(self, b).strip().casefold() for b in BAND_NAMES}
        for band in BAND_NAMES:
            for other in BAND_NAMES:
                if other != band and names[band] in (names[other], other):
                    whose = "the word for" if names[band] == other else "also the name of"
                    raise ValueError(
                        f"{band}: {getattr(self, band)!r} is {whose} the {other} band; "
                        "give each band a name of its own"
                    )
        return self


#: which end of a scorecard ``score`` lists first: the red (at risk, lowest score first)
#: or the green (ready, highest score first)
ListFirst = Literal["red", "green"]


class Segments(_Strict):
    by: str = Field(description="account column or metric giving the segment")
    weights: dict[str, dict[str, Annotated[Number, Field(ge=0)]]] = Field(
        default_factory=dict,
        description="segment -> pillar -> weight (pillars left out keep their default weight)",
    )
    bands: dict[str, Bands] = Field(
        default_factory=dict,
        description="segment -> its own green and yellow thresholds (others use `bands`)",
    )


class RapidDecline(_Strict):
    drop: Number = Field(20, gt=0, description="points lost ...")
    within: str = Field("30d", description="... within this long")

    _d = field_validator("within")(lambda cls, v: _duration(v))


class Slope(_Strict):
    slope: Number = Field(5, gt=0, description="points per 30 days (a fitted line's slope)")
    over: str = Field("90d", description="fitted over the scores of this long")
    min_span: str = Field("60d", description="the stored scores must span at least this")
    r2: Number = Field(0.5, ge=0, le=1, description="how consistent: the fit's R squared")

    _d = field_validator("over", "min_span")(lambda cls, v: _duration(v))


class StableHigh(_Strict):
    for_: str = Field("60d", alias="for", description="green at every stored date of this long")
    max_range: Number = Field(10, ge=0, description="highest minus lowest score at most this")

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
    add: Number | None = Field(None, ge=-100, le=100, description="points added (negative: taken)")
    floor: Number | None = Field(None, ge=0, le=100, description="the score is at least this")
    cap: Number | None = Field(None, ge=0, le=100, description="the score is at most this")
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
    observations: Count | None = Field(None, ge=0, description="(account, date) pairs fitted on")
    events: Count | None = Field(None, ge=0, description="of which followed by the outcome")
    points: list[tuple[Number, Number]] = Field(
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
    band_names: BandNames = Field(
        default_factory=BandNames, description="what this scorecard's bands are called"
    )
    list_first: ListFirst = Field(
        "red", description="`score` lists red first (lowest score) or green (highest score)"
    )
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
    band_names: BandNames = Field(
        default_factory=BandNames,
        description="what the health bands are called in tables and reports (presentation: "
        "not part of the version)",
    )
    list_first: ListFirst = Field(
        "red", description="`score` lists red first (lowest score) or green (highest score)"
    )
    population: str | None = Field(None, description="filter on account columns")
    columns: dict[str, dict[str, ColumnType]] = Field(
        default_factory=dict, description="extra columns the model reads: table -> column -> type"
    )
    freshness: dict[
        str, Annotated[str | dict[Literal["data", "load"], str], AfterValidator(_cadence)]
    ] = Field(
        default_factory=dict,
        description="table -> how long may pass before its data is stale: a duration "
        "(`usage_events: 2d`, measured the table's default way) or `{data: 90d}` (since "
        "its latest timestamp) or `{load: 35d}` (since its last load)",
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


def json_schema() -> dict:
    """JSON Schema of the model file, for editor completion."""
    schema = ModelSpec.model_json_schema(by_alias=True)
    schema["title"] = "healthscore model"
    return schema
