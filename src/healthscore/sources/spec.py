"""Load specs: how one file becomes rows of one table, from a YAML file or parameters.

Place in the flow: before :func:`~healthscore.sources.read_source`, which takes what a
:class:`LoadSpec` holds as its parameters (``mapping``, ``values``, ``constants``,
``date_format``). :func:`read_spec` reads a spec file with line numbers
(:mod:`healthscore.core.yamlio`) and checks it whole, every problem located;
:func:`parse_mapping` and :func:`parse_constants` turn ``source=canonical`` and
``column=value`` items (as a command line gives them) into the same dictionaries, and
:meth:`LoadSpec.with_flags` lets such items override a spec file.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from healthscore.core.tables import Table
from healthscore.core.yamlio import (
    Number,
    key_path,
    load_yaml,
    node_at,
    plain,
    read_yaml_text,
    scalar_text,
    validation_problems,
)
from healthscore.errors import Problem, SourceError
from healthscore.sources.coerce import DATE_FORMAT_EXAMPLES, NUMBER_FORMATS, date_format_problem
from healthscore.sources.columns import canonical_table, columns_hint, target_problem
from healthscore.store.scratch import open_scratch


def parse_mapping(items: Iterable[str] | None) -> dict[str, str | list[str]]:
    """Turn ``source=canonical`` items into the ``mapping`` ``{source: canonical}``.

    Parameters
    ----------
    items
        Strings like ``"signup_date=created_at"``; whitespace around names is ignored. A
        source given several times feeds several columns (the first is the file's
        column renamed; the others must be canonical columns).

    Returns
    -------
    dict
        Source column name -> canonical column name, or the list of names, in the order
        given, for a source mapped more than once.

    Examples
    --------
    >>> parse_mapping(["signup_date=created_at", " plan_tier = segment "])
    {'signup_date': 'created_at', 'plan_tier': 'segment'}
    >>> parse_mapping(["Customer ID=account_id", "Customer ID=outcome_id"])
    {'Customer ID': ['account_id', 'outcome_id']}
    >>> parse_mapping(["signup_date"])
    Traceback (most recent call last):
    ...
    healthscore.errors.SourceError: `mapping` 'signup_date': expected source=canonical, \
e.g. signup_date=created_at
    """
    mapping: dict[str, list[str]] = {}
    targets: dict[str, str] = {}
    for item in items or []:
        source, sep, target = str(item).partition("=")
        source, target = source.strip(), target.strip()
        if not sep or not source or not target or "=" in target:
            raise SourceError(
                f"`mapping` {item!r}: expected source=canonical, e.g. signup_date=created_at"
            )
        if target in targets and targets[target] != source:
            raise SourceError(
                f"`mapping` {item!r}: {targets[target]!r} is already mapped to {target!r}"
            )
        if target not in mapping.setdefault(source, []):  # the same item twice is harmless
            mapping[source].append(target)
        targets[target] = source
    return {s: t[0] if len(t) == 1 else t for s, t in mapping.items()}


def parse_key(text: str | list[str] | None) -> list[str] | None:
    """Turn ``col,col`` (or a list of names) into the ``key`` column names.

    >>> parse_key("account_id, ts,kind")
    ['account_id', 'ts', 'kind']
    """
    if text is None:
        return None
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text)]
    if not names or not all(names):
        raise SourceError(f"`key` {text!r}: expected column names separated by commas")
    return names


def parse_constants(items: Iterable[str] | None) -> dict[str, str]:
    """Turn ``column=value`` items into the ``constants`` ``{column: value}``.

    >>> parse_constants(["kind=churned"])
    {'kind': 'churned'}
    """
    out: dict[str, str] = {}
    for item in items or []:
        col, sep, value = str(item).partition("=")
        if not sep or not col.strip():
            raise SourceError(f"`constants` {item!r}: expected column=value, e.g. kind=churned")
        out[col.strip()] = value.strip()
    return out


@dataclass
class LoadSpec:
    """How one file becomes rows of one table: names, value maps, constants, a date format.

    ``mapping`` is ``{source: name or [names]}`` as :func:`parse_mapping` returns,
    ``values`` ``{source: {text: new text or None}}``, ``constants`` ``{column: text}``
    as :func:`parse_constants` returns and ``date_format`` a strptime format; each is
    the :func:`read_source` argument of that name. :func:`read_spec` reads one from a
    YAML file.
    """

    mapping: dict[str, str | list[str]] = field(default_factory=dict)
    values: dict[str, dict[str, str | None]] = field(default_factory=dict)
    constants: dict[str, str] = field(default_factory=dict)
    date_format: str | None = None
    number_format: str | None = None
    key: list[str] | None = None
    #: ``{column: (min, max)}``: a column's domain (see ``read_source``'s ``domains``)
    domains: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)

    def with_flags(
        self,
        mapping: dict[str, str | list[str]] | None = None,
        constants: dict[str, str] | None = None,
        date_format: str | None = None,
        *,
        number_format: str | None = None,
        key: list[str] | None = None,
    ) -> LoadSpec:
        """This spec with names, constants and a date format given apart (a command line's
        flags) added; where they disagree, those given apart win.

        A ``mapping`` of a source the spec maps replaces the spec's names for it (its value
        map stays) and takes its target away from any other source of the spec; a
        ``constants`` entry replaces the spec's value for that column; ``date_format`` the
        spec's.

        Examples
        --------
        >>> spec = LoadSpec({"Id": ["account_id", "outcome_id"], "Status": "kind"})
        >>> spec.with_flags({"Ref": "outcome_id"}, {"ts": "2024-02-01"}).mapping
        {'Id': 'account_id', 'Status': 'kind', 'Ref': 'outcome_id'}
        """
        mapping = mapping or {}
        taken = {t for v in mapping.values() for t in _names_of(v)}
        merged: dict[str, str | list[str]] = {}
        for source, names in self.mapping.items():
            kept = [t for t in _names_of(names) if t not in taken]
            if source not in mapping and kept:
                merged[source] = kept[0] if len(kept) == 1 else kept
        return LoadSpec(
            {**merged, **mapping},
            {s: dict(v) for s, v in self.values.items()},
            {**self.constants, **(constants or {})},
            date_format or self.date_format,
            number_format or self.number_format,
            key or self.key,
            dict(self.domains),
        )


def read_spec(path, table: str | None = None) -> LoadSpec:
    """Read a load spec file: column names, value maps, constants and a date format.

    The file is YAML::

        map:
          Customer ID: [account_id, outcome_id]   # one column feeds two
          Tenure in Months: tenure_months         # rename
          Customer Status:                        # rename and recode values
            to: kind
            values: {Churned: churned, Stayed: renewed, Joined: null}
          Phone Service:
            values: {"Yes": true, "No": false}    # recode only
        set: {ts: 2022-09-30}                     # constants
        date_format: "%d/%m/%Y"                   # strptime format
        number_format: "1.234,56"                 # how numbers are written
        key: [account_id, ts, kind]               # columns the missing id is built from
        domains:                                  # bounds on numbers (inclusive)
          tenure_months: {min: 0, max: 1200}      # an extra column
          csat: {min: 1, max: 10}                 # a CSAT scale other than 1-5

    ``values`` keys are compared with a file's values as text: YAML reads ``true``,
    ``1.5`` or ``2024-03-01`` unquoted as other types, which are taken back to the text
    ``true``, ``1.5``, ``2024-03-01``; quote keys to match other spellings exactly. New
    values may be text, numbers, true/false (all written as text, then coerced like
    the file's values) or null.

    Parameters
    ----------
    path
        The YAML file.
    table
        The canonical table the spec is for: when given, the column names it maps to
        and sets are checked against that table's here, with the spec's line numbers.

    Returns
    -------
    LoadSpec

    Raises
    ------
    SourceError
        Listing every problem as ``<file>:<line>: <key path>: <what is wrong>``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "status.yaml"
    >>> _ = f.write_text(
    ...     "map:\\n  Status:\\n    to: kind\\n    values: {Lost: churned, New: null}\\n"
    ...     "set: {ts: 2024-03-01}\\n"
    ... )
    >>> spec = read_spec(f, "outcomes")
    >>> spec.mapping, spec.values, spec.constants
    ({'Status': 'kind'}, {'Status': {'Lost': 'churned', 'New': None}}, {'ts': '2024-03-01'})
    >>> _ = f.write_text("map:\\n  Status:\\n    to: knd\\n")
    >>> try:
    ...     read_spec(f, "outcomes")
    ... except SourceError as e:
    ...     print(str(e).replace(str(f), "status.yaml"))
    status.yaml:3: map.Status.to: 'knd' is not a column of outcomes; did you mean 'kind'?; \
hint: columns: outcome_id, account_id, ts, kind, arr_delta
    """
    file = str(path)
    p = Path(path)
    if not p.is_file():
        raise SourceError(
            f"{file}: load spec not found" if not p.exists() else f"{file}: not a file"
        )
    doc = load_yaml(read_yaml_text(p, file, SourceError), file, SourceError)
    if not isinstance(doc, dict):
        raise SourceError(
            problems=[
                Problem(
                    "a load spec must be a YAML mapping",
                    file=file,
                    line=1,
                    expected="keys " + ", ".join(_SPEC_KEYS),
                    hint="see `healthscore load` in docs/data.md",
                )
            ]
        )
    try:
        parsed = _SpecFile.model_validate(plain(doc))
    except ValidationError as e:
        raise SourceError(problems=validation_problems(e, doc, file, _SpecFile)) from None
    problems = _spec_checks(parsed, doc, file, table)
    try:
        key = parse_key(parsed.key)
    except SourceError as e:
        key = None
        problems.append(Problem(e.message, file=file, line=node_at(doc, ("key",))[1], key="key"))
    if problems:
        raise SourceError(problems=problems)
    return LoadSpec(
        {s.strip(): c.to[0] if len(c.to) == 1 else c.to for s, c in parsed.map_.items() if c.to},
        {s.strip(): c.values for s, c in parsed.map_.items() if c.values},
        {c.strip(): v for c, v in parsed.set_.items()},
        parsed.date_format,
        parsed.number_format,
        key,
        {c.strip(): (d.min, d.max) for c, d in parsed.domains.items()},
    )


_SPEC_KEYS = ("map", "set", "date_format", "number_format", "key", "domains")
_COLUMN_FORMS = (
    "expected a column name, a list of names, or a mapping with `to:` (names) and/or "
    "`values:` (a value map)"
)


class _SpecBase(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # .nan, .inf: not numbers


class _SpecColumn(_SpecBase):
    """One entry of ``map:``: the names a file column feeds and the map of its values."""

    to: list[str] | None = None
    values: dict[str, str | None] | None = None

    @model_validator(mode="before")
    @classmethod
    def _short_forms(cls, v: Any) -> Any:
        if isinstance(v, str | list):
            return {"to": v}
        if not isinstance(v, dict):
            raise ValueError(_COLUMN_FORMS)
        return v

    @field_validator("to", mode="before")
    @classmethod
    def _names(cls, v: Any) -> Any:
        names = [v] if isinstance(v, str) else v
        if v is None:
            return None
        if not isinstance(names, list) or not names:
            raise ValueError("expected a column name or a list of column names")
        if not all(isinstance(n, str) and n.strip() for n in names):
            raise ValueError("expected column names (text), not empty")
        return [n.strip() for n in names]

    @field_validator("values", mode="before")
    @classmethod
    def _texts(cls, v: Any) -> Any:
        if v is None:
            return None
        if not isinstance(v, dict):
            raise ValueError("expected a map of file value: new value, e.g. {Churned: churned}")
        out = {}
        for key, new in v.items():
            if key is None or not scalar_text(key).strip():
                raise ValueError("a key must be a value found in the file (empty cells are NULL)")
            if isinstance(new, dict | list):
                raise ValueError(
                    f"{scalar_text(key)!r}: a new value must be text, a number, true/false or null"
                )
            text = scalar_text(key).strip()
            if text in out:  # the later one replaced the earlier one, silently
                raise ValueError(
                    f"{text!r} is given twice (surrounding spaces do not matter): keep one"
                )
            out[text] = None if new is None else scalar_text(new)
        return out

    @model_validator(mode="after")
    def _does_something(self):
        if self.to is None and self.values is None:
            raise ValueError(_COLUMN_FORMS)
        return self


class _SpecDomain(_SpecBase):
    """One entry of ``domains:``: the inclusive bounds of a column's numbers."""

    min: Number | None = None
    max: Number | None = None

    @model_validator(mode="after")
    def _bounds(self):
        if self.min is None and self.max is None:
            raise ValueError("give `min:`, `max:` or both, e.g. {min: 0, max: 10}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min:g} is above max {self.max:g}")
        return self


class _SpecFile(_SpecBase):
    map_: dict[str, _SpecColumn] = Field(default_factory=dict, alias="map")
    set_: dict[str, str] = Field(default_factory=dict, alias="set")
    date_format: str | None = None
    number_format: str | None = None
    key: str | list[str] | None = None

    @field_validator("number_format")
    @classmethod
    def _number_format(cls, v: Any) -> Any:
        if v is not None and v not in NUMBER_FORMATS:
            raise ValueError("expected one of " + ", ".join(NUMBER_FORMATS))
        return v

    domains: dict[str, _SpecDomain] = Field(default_factory=dict)

    @field_validator("map_", "set_", mode="before")
    @classmethod
    def _text_keys(cls, v: Any) -> Any:
        if v is None:
            return {}
        return {scalar_text(k): x for k, x in v.items()} if isinstance(v, dict) else v

    @field_validator("set_", mode="before")
    @classmethod
    def _text_values(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            return v
        return {k: x if isinstance(x, dict | list) else scalar_text(x) for k, x in v.items()}


def _names_of(names: str | list[str]) -> list[str]:
    return [names] if isinstance(names, str) else list(names)


def _spec_checks(parsed: _SpecFile, doc: Any, file: str, table: str | None) -> list[Problem]:
    """What the schema cannot see: names mapped twice, names not in ``table``, the format."""
    problems: list[Problem] = []
    spec = canonical_table(table) if table else None

    def add(reason: str, path: tuple, **kw) -> None:
        problems.append(
            Problem(reason, file=file, line=node_at(doc, path)[1], key=key_path(path), **kw)
        )

    _check_same_names(parsed, add)
    _check_map_targets(parsed, doc, spec, add)
    _check_set_columns(parsed, spec, add)
    _check_spec_date_format(parsed, add)
    _check_domain_columns(parsed, spec, add)
    return problems


def _check_same_names(parsed: _SpecFile, add) -> None:
    """Names are read without their surrounding spaces: two that differ only so are one
    name given twice (the last one silently replaced the first)."""
    sections = {"map": parsed.map_, "set": parsed.set_, "domains": parsed.domains}
    for section, entries in sections.items():
        seen: dict[str, str] = {}
        for name in entries:
            first = seen.setdefault(name.strip(), name)
            if first != name:
                add(
                    f"{first!r} and {name!r} are the same column (surrounding spaces do not "
                    "matter): keep one",
                    (section, name),
                )


def _check_map_targets(parsed: _SpecFile, doc: Any, spec: Table | None, add) -> None:
    """A target is listed once, fed by one source, and (for ``table``) a column of it."""
    owner: dict[str, str] = {}
    for source, column in parsed.map_.items():
        raw = node_at(doc, ("map", source))[0]
        base = ("map", source, "to") if isinstance(raw, dict) else ("map", source)
        listed = isinstance(raw.get("to") if isinstance(raw, dict) else raw, list)
        for k, target in enumerate(column.to or []):
            path = base + ((k,) if listed else ())
            if target in (column.to or [])[:k]:
                add(f"{target!r} is listed twice", path)
            elif target in owner:
                add(f"{owner[target]!r} is already mapped to {target!r}", path)
            elif spec and (wrong := target_problem(spec, target, further=k > 0)):
                add(wrong, path, hint=columns_hint(spec))
            owner.setdefault(target, source)


def _check_set_columns(parsed: _SpecFile, spec: Table | None, add) -> None:
    """A constant is set on a column of ``table``."""
    for column in parsed.set_:
        if spec and column not in spec.columns:
            close = difflib.get_close_matches(column, list(spec.columns), n=1, cutoff=0.6)
            guess = f"; did you mean {close[0]!r}?" if close else ""
            add(
                f"{column!r} is not a column of {spec.name}{guess}",
                ("set", column),
                hint=columns_hint(spec),
            )


def _check_domain_columns(parsed: _SpecFile, spec: Table | None, add) -> None:
    """A domain bounds numbers: not a canonical text, true/false or timestamp column."""
    for column in parsed.domains:
        ctype = spec.columns.get(column.strip()) if spec else None
        twin = next(
            (
                c
                for c in (spec.columns if spec else ())
                if c.casefold() == column.strip().casefold()
            ),
            None,
        )
        if ctype is None and twin is not None:  # bounded nothing: domains match names exactly
            add(
                f"{column!r} is not a column of {spec.name}; did you mean {twin!r}?",
                ("domains", column),
                hint=columns_hint(spec),
            )
            continue
        if ctype is not None and ctype not in ("int64", "float64"):
            add(f"{column!r} holds {ctype} values; a domain bounds numbers", ("domains", column))


def _check_spec_date_format(parsed: _SpecFile, add) -> None:
    """``date_format`` is a strptime format DuckDB accepts."""
    if parsed.date_format is None:
        return
    with open_scratch() as db:
        problem = date_format_problem(db, parsed.date_format)
    if problem:
        add(problem, ("date_format",), got=parsed.date_format, hint=DATE_FORMAT_EXAMPLES)
