"""JSON bodies as the service reads them: strictly, and saying in words what is wrong.

Place in the flow: under the routes of ``service/`` that take JSON. The ingestion and
Segment routes read their bodies themselves (:func:`healthscore.service.ingest.read_json`,
size-capped, gzip accepted) through :func:`loads`; the routers of small bodies (flags,
tokens, users) are made with :class:`JSONRoute`, which has FastAPI read them through
:func:`loads` too.

Stricter than Python's reader in one way: an object naming a key twice
(``{"kind": "a", "kind": "b"}``) is kept as a :class:`Twice`, which says so, where the
reader would silently keep the last value; ``healthscore load`` refuses such a JSON
lines row, and so do the routes (a row or a small body: an error naming the key; a
Segment message: parked with the reason). And the errors a body can meet are worded:
not UTF-8, not JSON (where), ``NaN``, a number of thousands of digits, or nested past
the reader's stack; never the framework's "There was an error parsing the body".

Examples
--------
>>> body = loads(b'{"rows": [{"a": 1, "a": 2}]}')
>>> twice(body), twice(body["rows"][0])
('rows[0].a', 'a')
>>> loads(b'{"a": NaN}')
Traceback (most recent call last):
...
healthscore.service.bodies.BodyError: the body is not JSON: NaN is not a JSON value
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

from fastapi import HTTPException, Request
from fastapi.routing import APIRoute

from healthscore.errors import HealthscoreError


class BodyError(HealthscoreError):
    """A body that is not JSON the service reads (400)."""

    status = 400


class Twice(dict):
    """A JSON object that named a key more than once (the last value is kept, as Python's
    reader keeps it); ``names``: those keys, in the order they came."""

    __slots__ = ("names",)


# its type reads as the object JSON sent (a check naming the type of a value it refuses,
# e.g. an object nested in an ingested row, says "dict" for any other object)
Twice.__name__ = "dict"


def _object(pairs: list) -> dict:
    found = dict(pairs)
    if len(found) == len(pairs):
        return found
    out, seen = Twice(found), set()
    out.names = tuple(dict.fromkeys(k for k, _ in pairs if k in seen or seen.add(k)))
    return out


def _constant(name: str):
    raise ValueError(f"{name} is not a JSON value")


def loads(body: bytes | str):
    """The JSON value of ``body`` (objects naming a key twice as :class:`Twice`), or
    :class:`BodyError` saying why not."""
    try:
        return json.loads(body, object_pairs_hook=_object, parse_constant=_constant)
    except UnicodeDecodeError as e:
        raise BodyError(
            f"the body is not UTF-8 text (byte 0x{e.object[e.start]:02x} at {e.start:,})",
            hint="send JSON as UTF-8",
        ) from None
    except json.JSONDecodeError as e:
        raise BodyError(f"the body is not JSON: {e}") from None
    except ValueError as e:
        if "integer string conversion" in str(e):  # Python's guard on int() of long text
            raise BodyError(
                f"the body holds a number of more than {sys.get_int_max_str_digits():,} "
                "digits, which no column holds",
                hint="send it as text if it is an id",
            ) from None
        raise BodyError(f"the body is not JSON: {e}") from None
    except RecursionError:  # [[[[... a few KB deep: the reader's stack, not ours
        raise BodyError(
            "the body nests arrays or objects too deeply to be read",
            hint="a field holds text, a number, true/false, null, or a short list",
        ) from None


def twice(value, where: str = "") -> str | None:
    """Where ``value`` (read by :func:`loads`) holds an object naming a key twice: the
    first such key as a path (``rows[3].account_id``); None when nowhere."""
    if isinstance(value, Twice):
        return f"{where}.{value.names[0]}" if where else str(value.names[0])
    if isinstance(value, dict):
        items = ((f"{where}.{k}" if where else str(k), v) for k, v in value.items())
    elif isinstance(value, list):
        items = ((f"{where}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for path, v in items:
        if isinstance(v, dict | list):
            found = twice(v, path)
            if found:
                return found
    return None


TWICE = "named twice in one object (a JSON object names each key once)"


class _Request(Request):
    async def json(self):
        if not hasattr(self, "_json"):
            try:
                body = loads(await self.body())
            except BodyError as e:  # (FastAPI words any other error as "error parsing"; the
                # app answers an HTTPException caused by a library error with that error)
                raise HTTPException(400, e.message) from e
            where = twice(body)
            if where:
                raise HTTPException(422, f"body.{where}: {TWICE}")
            self._json = body
        return self._json


class JSONRoute(APIRoute):
    """A route whose JSON body FastAPI reads through :func:`loads` (and :func:`twice`):
    the route class of the routers that take small JSON bodies."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def handle(request: Request):
            return await handler(_Request(request.scope, request.receive))

        return handle
