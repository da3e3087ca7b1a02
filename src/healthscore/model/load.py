"""Loading a model file: YAML with line numbers → schema → cross-section checks → Model.

Place in the flow: the entry of :mod:`healthscore.model`. The text is parsed keeping
line numbers (:mod:`healthscore.core.yamlio`), validated against
:class:`~healthscore.model.ModelSpec` (each pydantic error becomes a problem with its
line and key path; an unknown key is named with the keys allowed there), then checked
across sections (:mod:`healthscore.model.checks`). Every problem is collected and raised
once as a :class:`~healthscore.errors.ModelError`.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from pydantic import ValidationError

from healthscore.core import cache
from healthscore.core.limits import (
    MAX_COLUMNS,
    MAX_MAP_ENTRIES,
    MAX_METRICS,
    MAX_PILLARS,
    MAX_RULES,
    MAX_SCORECARDS,
    MAX_SEGMENTS,
)
from healthscore.core.yamlio import (
    key_path,
    line_of,
    load_yaml,
    plain,
    read_yaml_text,
    validation_problems,
)
from healthscore.errors import ModelError, Problem
from healthscore.model.model import Model
from healthscore.model.schema import ModelSpec


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
    return load_model_text(read_yaml_text(p, str(p), ModelError), file=str(p))


def default_model_text() -> str:
    """The text of the default four-pillar model that ``init`` writes."""
    return resources.files("healthscore.model").joinpath("default_model.yaml").read_text("utf-8")


def load_model_text(text: str, file: str = "<string>") -> Model:
    """Validate the text of a model file; ``file`` names it in problems.

    Raises :class:`ModelError` listing every problem with its line and key path.
    """
    doc = load_yaml(text, file, ModelError)
    if not isinstance(doc, dict):
        raise ModelError(problems=[Problem("a model file must be a YAML mapping", file=file)])
    problems = size_problems(doc, file)
    if problems:  # before the schema: checking 100,000 metrics one by one takes minutes
        raise ModelError(problems=problems)
    try:
        # the schema's names are text: a key YAML read as a number or date is its str()
        spec = ModelSpec.model_validate(plain(doc, key=str))
    except ValidationError as e:
        raise ModelError(problems=validation_problems(e, doc, file, ModelSpec)) from None
    model = Model(spec, file=file, doc=doc)
    _check(model)
    return model


def _check(model: Model) -> None:
    """:func:`~healthscore.model.checks.check_model`, once per model content and
    healthscore code: the checks build every expression with Ibis (most of a model's
    load, and Ibis's import), and their verdict depends on nothing else, so a model
    found clean before is remembered in the user's cache (:mod:`healthscore.core.cache`).
    A model with problems is checked every time (its problems name its file and lines)."""
    key = cache.entry_key("model-checked", model.spec.model_dump_json(by_alias=True))
    if cache.read(key) is True:
        return
    from healthscore.model.checks import check_model

    problems = check_model(model)
    if problems:
        raise ModelError(problems=problems)
    cache.write(key, True)


def size_problems(doc: dict, file: str) -> list[Problem]:
    """A problem for each section of the model document with more entries than its limit.

    The limits (:mod:`healthscore.core.limits`) are far above any real model; a file past
    them fails at once with the count, instead of being checked for minutes.
    """
    sections: list[tuple[tuple, int, str]] = [
        (("metrics",), MAX_METRICS, "metrics"),
        (("scorecards",), MAX_SCORECARDS, "scorecards"),
        (("columns",), MAX_COLUMNS, "tables"),
    ]
    for table, _ in _entries(doc, ("columns",)):
        sections.append((("columns", table), MAX_COLUMNS, "columns"))
    cards = [()] + [("scorecards", name) for name, _ in _entries(doc, ("scorecards",))]
    for card in cards:
        sections += [
            ((*card, "pillars"), MAX_PILLARS, "pillars"),
            ((*card, "rules"), MAX_RULES, "rules"),
            ((*card, "segments", "weights"), MAX_SEGMENTS, "segments"),
            ((*card, "segments", "bands"), MAX_SEGMENTS, "segments"),
        ]
        for pillar, _ in _entries(doc, (*card, "pillars")):
            uses = (*card, "pillars", pillar, "metrics")
            sections.append((uses, MAX_METRICS, "metrics"))
            for metric, _ in _entries(doc, uses):
                for key in ("map", "points"):
                    sections.append(((*uses, metric, key), MAX_MAP_ENTRIES, "entries"))
    problems = []
    for path, limit, noun in sections:
        n = len(_node(doc, path) or ())
        if n > limit:
            problems.append(
                Problem(
                    f"{n:,} {noun}; a model may have at most {limit:,} here",
                    file=file,
                    line=line_of(doc, path),
                    key=key_path(path),
                    hint="see Limits in docs/model.md",
                )
            )
    return problems


def _node(doc: dict, path: tuple):
    """The mapping or list at ``path`` (None when something on the way is not one)."""
    node = doc
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, dict | list) else None


def _entries(doc: dict, path: tuple) -> list:
    node = _node(doc, path)
    return list(node.items()) if isinstance(node, dict) else []
