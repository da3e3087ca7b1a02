"""YAML with line numbers: load keeping node positions, locate key paths and schema errors.

Place in the flow: the bottom layer, used by every YAML file healthscore reads: the model
file (:mod:`healthscore.model`) and load spec files (:mod:`healthscore.sources`). A file
is loaded with ruamel's round-trip loader, which keeps each key's line; a syntax error
becomes one located problem showing the numbered lines around it; a key path such as
``pillars.usage.metrics.x.weight`` leads back to its line; and a pydantic
``ValidationError`` over the document becomes one located problem per error, naming
an unknown key together with the keys allowed at that spot.

Files arrive from anywhere, so reading is bounded (:mod:`healthscore.core.limits`): a file
over a few MB is refused before it is read, and while the document is composed, aliases,
the nodes they expand to and the nesting depth are counted and refused past their bound,
so a 300-byte "billion laughs" file fails in milliseconds instead of filling the memory.

Examples
--------
>>> from healthscore.errors import ModelError
>>> doc = load_yaml("a:\\n  b: [1, 2]\\n  c: {d: 3}\\n", "f.yaml", ModelError)
>>> line_of(doc, ("a", "c", "d")), key_path(("a", "b", 1))
(3, 'a.b[1]')
>>> try:
...     load_yaml("a: [1, 2\\nb: 3\\n", "f.yaml", ModelError)
... except ModelError as e:
...     print(e)
f.yaml:2: YAML syntax error: expected ',' or ']', but got ':'
    1 | a: [1, 2
    2 | b: 3
"""

from __future__ import annotations

import stat
import types
import typing
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import BaseModel, Strict, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.composer import Composer
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.events import AliasEvent
from ruamel.yaml.nodes import MappingNode, ScalarNode, SequenceNode

from healthscore.core.limits import (
    MAX_YAML_ALIASES,
    MAX_YAML_BYTES,
    MAX_YAML_DEPTH,
    MAX_YAML_NODES,
    NUL,
    quoted,
)
from healthscore.errors import HealthscoreError, Problem

#: lines shown on each side of a syntax error
CONTEXT_LINES = 2

#: a number in a YAML file, as YAML typed it: ``true``/``false`` and quoted text such as
#: ``"80"`` are not numbers (pydantic's lax mode read ``weight: true`` as 1 and
#: ``min: false`` as 0, silently)
Number = Annotated[float, Strict()]
#: a whole number in a YAML file (``true`` is not 1)
Count = Annotated[int, Strict()]


def read_yaml_text(path: str | Path, file: str, error: type[HealthscoreError]) -> str:
    """The text of the YAML file at ``path`` (UTF-8), refused when it is too large.

    ``file`` names it in the error, raised as ``error`` (the caller's stage). At most
    :data:`~healthscore.core.limits.MAX_YAML_BYTES` and one byte are read, whatever the
    file claims to hold: a device or a pipe (``/dev/zero``, ``/dev/urandom``) reports
    no size and would never end. A folder, a file that cannot be read (permission
    denied) or text that is not UTF-8 is one problem naming the file.
    """
    p = Path(path)
    size = _size_of(p)
    if size is not None and size > MAX_YAML_BYTES:
        raise error(problems=[_too_large(file, size)])
    if p.is_dir():
        raise error(problems=[Problem("a folder, not a file", file=file)])
    try:
        with open(p, "rb") as f:
            data = f.read(MAX_YAML_BYTES + 1)
    except OSError as e:
        reason = f"cannot read the file: {(e.strerror or str(e)).lower()}"
        raise error(problems=[Problem(reason, file=file)]) from None
    if len(data) > MAX_YAML_BYTES:
        raise error(problems=[_too_large(file, size)])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(
            problems=[
                Problem(
                    f"not UTF-8 text (byte {e.start}: {e.object[e.start : e.start + 1]!r})",
                    file=file,
                    hint="save it as UTF-8",
                )
            ]
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")  # as text mode reads lines


def _size_of(p: Path) -> int | None:
    """The size a regular file has; None for a device or a pipe, which has none."""
    try:
        st = p.stat()
    except OSError:
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


def load_yaml(text: str, file: str, error: type[HealthscoreError]) -> Any:
    """The YAML document of ``text``, keeping node positions (ruamel round-trip).

    Duplicate keys are refused. A syntax error raises ``error`` (the caller's stage:
    :class:`~healthscore.errors.ModelError`, :class:`~healthscore.errors.SourceError`)
    with one problem at the error's line that shows the numbered lines around it. So do a
    text over :data:`~healthscore.core.limits.MAX_YAML_BYTES` and a document past the
    alias, node or depth bounds of :mod:`healthscore.core.limits`.

    >>> bomb = "a: &a [x, x]\\nb: &b [*a, *a]\\nc: &c [*b, *b]\\n"
    >>> load_yaml(bomb, "f.yaml", HealthscoreError)["c"][1][0]
    ['x', 'x']
    """
    if len(text) > MAX_YAML_BYTES or len(text.encode("utf-8")) > MAX_YAML_BYTES:
        raise error(problems=[_too_large(file, len(text.encode("utf-8")))])
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    yaml.Composer = _BoundedComposer
    try:
        return yaml.load(text)
    except _Refused as e:
        raise error(problems=[Problem(e.reason, file=file, line=e.line, hint=e.hint)]) from None
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        context = ""
        if line:
            lines = text.splitlines()
            lo, hi = max(1, line - CONTEXT_LINES), min(len(lines), line + CONTEXT_LINES)
            context = "\n" + "\n".join(f"{i:>5} | {lines[i - 1]}" for i in range(lo, hi + 1))
        reason = f"YAML syntax error: {e.problem or e}{context}"
        raise error(problems=[Problem(reason, file=file, line=line)]) from None
    except Exception as e:  # ruamel raises a few errors without a position
        raise error(problems=[Problem(f"YAML error: {e}", file=file)]) from None


_BIG_HINT = "a model or load spec this large is not hand-written; see Limits in docs/model.md"


def _too_large(file: str, size: int | None) -> Problem:
    shown = f" ({size / 1024 / 1024:.1f} MB)" if size is not None else ""
    return Problem(
        f"file is too large to read{shown}",
        file=file,
        expected=f"at most {MAX_YAML_BYTES // 1024 // 1024} MB",
        hint=_BIG_HINT,
    )


class _Refused(Exception):
    """A document past one of the bounds; caught by :func:`load_yaml`."""

    def __init__(self, reason: str, mark: Any, hint: str | None = None):
        super().__init__(reason)
        self.reason, self.line, self.hint = reason, (mark.line + 1 if mark else None), hint


class _BoundedComposer(Composer):
    """ruamel's composer, counting aliases, expanded nodes and depth as it goes.

    An alias is cheap to parse and costly to use (whoever walks the document walks the
    aliased node again each time), so each one adds the full size of the node it names;
    a size is memoised per node, which keeps the count linear in the text.
    """

    def __init__(self, loader: Any = None) -> None:
        super().__init__(loader)
        self._aliases = 0
        self._nodes = 0
        self._sizes: dict[int, int] = {}

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.parser.check_event(AliasEvent):
            event = self.parser.peek_event()
            self._aliases += 1
            if self._aliases > MAX_YAML_ALIASES:
                raise _Refused(
                    f"more than {MAX_YAML_ALIASES} aliases (*{event.anchor} is one too many)",
                    event.start_mark,
                    hint="write the values out instead of repeating them through anchors",
                )
            node = super().compose_node(parent, index)
            if isinstance(node, SequenceNode | MappingNode) and node.end_mark is None:
                raise _Refused(
                    f"alias *{event.anchor} refers to a node that contains it", event.start_mark
                )
            self._add(self._sizes[id(node)], event)
            return node
        event = self.parser.peek_event()
        tag = getattr(event, "tag", None)
        if tag is not None and str(getattr(tag, "value", tag) or ""):
            # `!!binary aGVsbG8=` turns into text the file does not show; `!!str 1`,
            # `!env X`: the value is read as something other than it looks
            shown = str(getattr(tag, "value", tag)).replace("tag:yaml.org,2002:", "!!")
            raise _Refused(
                f"a YAML tag ({shown}) is not read here",
                event.start_mark,
                hint="write the value itself, quoted if it is text",
            )
        if self.depth >= MAX_YAML_DEPTH:
            raise _Refused(f"nested more than {MAX_YAML_DEPTH} levels deep", event.start_mark)
        node = super().compose_node(parent, index)
        if isinstance(node, ScalarNode) and NUL in node.value:
            # a `"\0"` escape: no store keeps it in text, and DuckDB's SQL text ends at it
            raise _Refused(
                f"{quoted(node.value)} holds a NUL character (\\0)",
                node.start_mark,
                hint="remove the \\0 escape",
            )
        if isinstance(node, MappingNode):
            for k, _ in node.value:
                if isinstance(k, ScalarNode) and str(getattr(k.tag, "value", k.tag)).endswith(
                    ":null"
                ):  # `null:`, `~:` or an empty key: it became the name 'None'
                    raise _Refused(
                        "a key is null (empty)",
                        k.start_mark,
                        hint='write the name; quote it ("null") if it is the word null',
                    )
        if isinstance(node, SequenceNode):
            size = 1 + sum(self._sizes[id(v)] for v in node.value)
        elif isinstance(node, MappingNode):
            size = 1 + sum(self._sizes[id(k)] + self._sizes[id(v)] for k, v in node.value)
        else:
            size = 1
        self._sizes[id(node)] = size
        self._add(1, event)
        return node

    def _add(self, n: int, event: Any) -> None:
        self._nodes += n
        if self._nodes > MAX_YAML_NODES:
            alias = isinstance(event, AliasEvent)
            raise _Refused(
                f"the document holds more than {MAX_YAML_NODES:,} values"
                + (f" once alias *{event.anchor} is expanded" if alias else ""),
                event.start_mark,
                hint="each alias repeats the whole node it names" if alias else _BIG_HINT,
            )


def scalar_text(v: Any) -> str:
    """The text a YAML scalar was most likely written as: ``true``, ``1.5``, ``2022-09-30``.

    YAML reads unquoted ``true``, ``1.5`` or ``2022-09-30`` as other types; this takes them
    back to text (None is ``''``).

    >>> scalar_text(True), scalar_text(1.5), scalar_text(date(2022, 9, 30)), scalar_text(None)
    ('true', '1.5', '2022-09-30', '')
    """
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, date):  # datetime too
        return v.isoformat()
    if isinstance(v, int):
        return str(int(v))
    if isinstance(v, float):
        return repr(float(v))
    return str(v)


def plain(node: Any, key: Callable[[Any], Any] | None = None) -> Any:
    """ruamel's mappings and lists as plain ones, for pydantic to validate.

    ``key`` turns each mapping key into what the schema expects (the model's keys are
    ``str(k)``); by default keys are left as YAML typed them, for validators to read.
    """
    if isinstance(node, dict):
        return {(key(k) if key else k): plain(v, key) for k, v in node.items()}
    if isinstance(node, list):
        return [plain(v, key) for v in node]
    return node


def node_at(doc: Any, path: tuple) -> tuple[Any, int | None]:
    """The node at ``path`` (None when it does not exist) and the line of the deepest key found.

    A path key matches a mapping key equal to it or written as it (``str(k)`` or
    :func:`scalar_text`), so ``true`` or ``1.5`` keys are found by their text. Keys
    without a recorded position (merged in by ``<<:``) end the walk at the last line found.
    """
    line, node = None, doc
    for key in path:
        lc = getattr(node, "lc", None)
        try:
            if isinstance(node, dict):
                found = [k for k in node if k == key or str(k) == key or scalar_text(k) == key]
                if not found:
                    return None, line
                if lc is not None:
                    line = lc.key(found[0])[0] + 1
                node = node[found[0]]
            elif isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node):
                if lc is not None:
                    line = lc.item(key)[0] + 1
                node = node[key]
            else:
                return None, line
        except (KeyError, TypeError, AttributeError):
            return None, line
    return node, line


def line_of(doc: Any, path: tuple) -> int | None:
    """1-based line of the deepest key along ``path`` found in the document."""
    return node_at(doc, path)[1]


def key_path(loc: tuple) -> str:
    """``("pillars", "usage", "metrics", 0)`` as ``pillars.usage.metrics[0]``."""
    out = ""
    for k in loc:
        out += f"[{k}]" if isinstance(k, int) else (f".{k}" if out else str(k))
    return out


def validation_problems(
    e: ValidationError, doc: Any, file: str, schema: type[BaseModel]
) -> list[Problem]:
    """pydantic's errors over ``doc`` (validated as ``schema``) as located problems.

    Each names the file, the line and key path of the error; an unknown key names the
    keys allowed at that spot.
    """
    problems = []
    for err in e.errors():
        # pydantic puts the model-validator name or a union branch into loc; drop those
        loc = tuple(k for k in err["loc"] if not (isinstance(k, str) and k.startswith("function-")))
        reason = err["msg"].removeprefix("Value error, ")
        hint = None
        if err["type"] == "extra_forbidden":
            allowed = allowed_keys(schema, loc)
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
                reason, file=file, line=line_of(doc, loc), key=key_path(loc), got=got, hint=hint
            )
        )
    return problems


def allowed_keys(schema: type[BaseModel], loc: tuple) -> list[str] | None:
    """Keys allowed at the mapping that holds ``loc[-1]``, walking ``schema``'s fields."""
    cls: Any = schema
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
    origin = typing.get_origin(t)
    if origin is Annotated:
        return _unwrap(typing.get_args(t)[0])
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(t) if a is not type(None)]
        return _unwrap(args[0]) if len(args) == 1 else t
    return t
