"""The Segment-compatible routes: `/v1/batch`, `/v1/track`, `/v1/identify`, `/v1/group`.

Place in the flow: a router of ``service/``; Segment messages become rows of the
canonical tables, or are parked (rejected, or pending until `group` links their user).
"""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
