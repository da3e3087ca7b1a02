"""The validated model: the spec plus what every stage derives from it.

Place in the flow: what :func:`~healthscore.model.load_model` returns and every stage
after ``store`` reads. A :class:`Model` holds the validated :class:`ModelSpec` and derives
the normalised pillar and metric weights, the bands of a segment, the tables and columns
the model reads, the formula order and the version; :meth:`Model.scorecard` gives the
same model seen through one of its scorecards.

Examples
--------
>>> from healthscore.model import load_model_text
>>> m = load_model_text('''
... metrics:
...   a: {from: usage_events, aggregate: count(), window: 30d}
...   b: {from: tickets, aggregate: count()}
... pillars:
...   usage: {weight: 30, metrics: {a: {weight: 1, bad: 0, good: 20}}}
...   support: {weight: 10, metrics: {b: {weight: 1, bad: 5, good: 0}}}
... ''')
>>> m.pillar_weights()
{'usage': 0.75, 'support': 0.25}
>>> m.line_of("pillars", "support", "weight")
7
"""

from __future__ import annotations

from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

from healthscore.core.tables import TABLES, Cadence
from healthscore.core.time import duration_days
from healthscore.core.yamlio import line_of
from healthscore.errors import ModelError
from healthscore.model.schema import HEALTH, Bands, MetricUse, ModelSpec
from healthscore.model.version import model_version


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
        return line_of(doc, self.full_path(*path)) if doc is not None else None

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
                "band_names": card.band_names,
                "list_first": card.list_first,
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

    def named_segments(self) -> list[str]:
        """Every segment the model names (own weights or own bands), in file order."""
        seg = self.spec.segments
        return list(dict.fromkeys([*seg.weights, *seg.bands])) if seg else []

    def bands_for(self, segment: str | None) -> Bands:
        """The green and yellow thresholds an account of ``segment`` is banded by."""
        seg = self.spec.segments
        if seg is not None and segment is not None and segment in seg.bands:
            return seg.bands[segment]
        return self.spec.bands

    # words ----------------------------------------------------------------------------
    def band_name(self, band: str | None) -> str:
        """What ``band`` (green/yellow/red; None: no score) is called in this scorecard.

        >>> from healthscore.model import load_model_text
        >>> m = load_model_text('''
        ... metrics: {a: {from: usage_events, aggregate: count(), window: 30d}}
        ... pillars: {usage: {weight: 1, metrics: {a: {weight: 1, bad: 0, good: 9}}}}
        ... scorecards:
        ...   expansion:
        ...     band_names: {green: ready, yellow: warming, red: not yet}
        ...     list_first: green
        ...     pillars: {usage: {weight: 1, metrics: {a: {weight: 1, bad: 0, good: 9}}}}
        ... ''')
        >>> m.band_name("red"), m.scorecard("expansion").band_name("red")
        ('red', 'not yet')
        >>> m.band_name(None), m.highest_first, m.scorecard("expansion").highest_first
        ('no data', False, True)
        """
        if band is None:
            return "no data"
        return getattr(self.spec.band_names, band, band)

    def band_of_name(self, name: str) -> str | None:
        """The band (green/yellow/red) that ``name`` (a band or its name) stands for."""
        wanted = name.strip().casefold()
        for band in ("green", "yellow", "red"):
            if wanted in (band, self.band_name(band).casefold()):
                return band
        return None

    @property
    def highest_first(self) -> bool:
        """Whether ``score`` lists the highest scores first (a readiness scorecard)."""
        return self.spec.list_first == "green"

    def metric_label(self, metric: str) -> str:
        """What people read for ``metric``: its ``label``, else its key."""
        spec = self.spec.metrics.get(metric)
        return (spec.label if spec is not None else None) or metric

    def metric_unit(self, metric: str) -> str | None:
        """The metric's ``unit`` (``days``, ``%`` ...), None without one."""
        spec = self.spec.metrics.get(metric)
        return spec.unit if spec is not None else None

    # version --------------------------------------------------------------------------
    @cached_property
    def version(self) -> str:
        """sha256 of the canonical JSON of the scoring sections (weights normalised)."""
        return model_version(self)

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

    def cadence(self, table: str) -> Cadence | None:
        """How ``table``'s freshness is judged: the model's ``freshness:`` entry, else the
        table's default (None: never stale)."""
        own = TABLES[table]
        given = self.spec.freshness.get(table)
        if given is None:
            lag = own.expected_lag
            return Cadence(own.freshness_by, lag) if lag is not None else None
        if isinstance(given, dict):
            by, text = next(iter(given.items()))
        else:
            by, text = own.freshness_by, given
        return Cadence(by, timedelta(days=duration_days(text)), "model")

    def formula_order(self) -> list[str]:
        """Formula metrics in dependency order."""
        from healthscore.expressions import names_in  # sqlglot and Ibis: on first use

        order: list[str] = []
        formulas = {n: m for n, m in self.spec.metrics.items() if m.formula}

        def visit(n, stack=()):
            if n in order or n not in formulas:
                return
            for _, name in names_in(formulas[n].formula):
                if name in formulas and name not in stack:
                    visit(name, (*stack, n))
            order.append(n)

        for n in formulas:
            visit(n)
        return order
