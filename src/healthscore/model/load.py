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

from healthscore.core.yamlio import load_yaml, plain, validation_problems
from healthscore.errors import ModelError, Problem
from healthscore.model.checks import check_model
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
    return load_model_text(p.read_text(encoding="utf-8"), file=str(p))


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
    try:
        # the schema's names are text: a key YAML read as a number or date is its str()
        spec = ModelSpec.model_validate(plain(doc, key=str))
    except ValidationError as e:
        raise ModelError(problems=validation_problems(e, doc, file, ModelSpec)) from None
    model = Model(spec, file=file, doc=doc)
    problems = check_model(model)
    if problems:
        raise ModelError(problems=problems)
    return model
