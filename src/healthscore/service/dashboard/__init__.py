"""The dashboard: server-rendered pages for CSMs (Jinja2 templates, HTMX, Plotly), with
their static files shipped in the package (nothing from a CDN).

Place in the flow: a router of ``service/``; cookie sessions only (see ``auth``).
"""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
