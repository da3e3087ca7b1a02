"""`POST /v1/ingest/{table}`: canonical rows as JSON, validated as `healthscore load`
validates a file, appended without re-reading the whole table.

Place in the flow: a router of ``service/``, through ``sources`` (checks) and ``store``
(the append); it marks the accounts it touches for the rescorer.
"""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
