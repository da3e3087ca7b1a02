"""Model files rewritten in place: load keeping comments, edit, validate, write.

Place in the flow: the bottom layer, beside :mod:`healthscore.core.time`. Every command
that learns numbers and writes them back into a model file (``model fit-percentiles``,
``model fit-probability``, ``calibrate``) goes through here, so a rewritten file keeps
the author's comments, key order and flow style, and is checked before it lands:

- :func:`edit_model_text` loads the text with ruamel's round-trip loader, applies an
  edit to the document, sets an optional header comment and dumps it;
- :func:`save_model_text` loads the new text as a model (the caller passes the loader:
  the model layer sits above this one) and, only when it validates, writes it through
  :func:`healthscore.core.files.write_text_atomic` (a temporary file in the same folder,
  renamed into place), so a failed write never leaves half a model behind;
- :func:`number`, :func:`block_map`, :func:`flow_map`, :func:`flow_list` and
  :func:`date_text` are how the writers spell learned values in YAML.

Examples
--------
>>> def heavier(doc):
...     doc["pillars"]["usage"]["weight"] = number(60.0)
>>> print(edit_model_text("pillars:\\n  usage: {weight: 40}  # half\\n", heavier), end="")
pillars:
  usage: {weight: 60}  # half
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from healthscore.core.files import write_text_atomic
from healthscore.errors import ModelError

M = TypeVar("M")


def round_trip_yaml() -> YAML:
    """ruamel's round-trip YAML as the writers use it: comments and order kept, and
    lines never wrapped (a long flow list of fitted points stays on one line)."""
    yaml = YAML(typ="rt")
    yaml.width = 4096
    return yaml


def dump_document(doc: Any) -> str:
    """A round-trip document (e.g. a loaded model's) back to YAML text."""
    buf = io.StringIO()
    round_trip_yaml().dump(doc, buf)
    return buf.getvalue()


def edit_model_text(
    text: str, edit: Callable[[CommentedMap], None], *, header: str | None = None
) -> str:
    """``text`` with ``edit`` applied to its round-trip document; comments kept.

    ``header`` (lines separated by ``\\n``) becomes the comment at the top of the file.
    """
    yaml = round_trip_yaml()
    doc = yaml.load(text)
    edit(doc)
    if header is not None:
        doc.yaml_set_start_comment(header)
    buf = io.StringIO()
    yaml.dump(doc, buf)
    return buf.getvalue()


def save_model_text(
    text: str, out: str | Path | None, load: Callable[[str, str], M], *, name: str = "<model>"
) -> M:
    """Validate ``text`` by loading it as a model, then write it to ``out`` (when given).

    ``load`` is called as ``load(text, file)`` (e.g. :func:`healthscore.model.load_model_text`)
    with the file name the model will have (``name`` when nothing is written). A text
    that does not load is never written.
    """
    file = str(Path(out)) if out is not None else name
    try:
        model = load(text, file)
    except ModelError as e:  # a writer bug: say so, and leave the file as it was
        raise ModelError(f"the fitted model does not validate: {e}") from None
    if out is not None:
        write_text_atomic(Path(out), text, param="out")
    return model


def number(x: float) -> float | int:
    """A learned number as YAML should show it: ``60`` rather than ``60.0``.

    >>> number(60.0), number(12.5)
    (60, 12.5)
    """
    x = float(x)
    return int(x) if x.is_integer() else x


def block_map(items: Iterable[tuple[str, Any]] = ()) -> CommentedMap:
    """A mapping written a key a line, in the order given."""
    return CommentedMap(items)


def flow_map(items: Iterable[tuple[str, Any]] = ()) -> CommentedMap:
    """A mapping written on one line: ``{green: 70, yellow: 40}``."""
    m = CommentedMap(items)
    m.fa.set_flow_style()
    return m


def flow_list(points: Iterable[Iterable[float]]) -> CommentedSeq:
    """Pairs written on one line: ``[[0.0, 0.5], [100.0, 0.1]]``."""
    seq = CommentedSeq()
    for pair in points:
        inner = CommentedSeq(list(pair))
        inner.fa.set_flow_style()
        seq.append(inner)
    seq.fa.set_flow_style()
    return seq


def date_text(d: datetime) -> str:
    """A fit date as a model file records it: the day alone at midnight, else ISO.

    >>> date_text(datetime(2025, 4, 1)), date_text(datetime(2025, 4, 1, 12))
    ('2025-04-01', '2025-04-01T12:00:00')
    """
    return f"{d:%Y-%m-%d}" if d.time() == datetime.min.time() else d.isoformat()
