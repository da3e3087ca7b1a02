"""The read API: accounts, one account, its history, why it moved, the portfolio,
flags, and what ingestion rejected or parked.

Place in the flow: a router of ``service/`` over :mod:`healthscore.api`; JSON shapes
match the CLI's ``--format json``.
"""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
