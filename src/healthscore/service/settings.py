"""What a running service is configured with: the store, the model, where it listens,
where it keeps its secrets, and the limits on what a client may send.

Place in the flow: the bottom of ``service/``; every other module of the service reads
its :class:`Settings` from the app's state.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

#: the largest request body accepted, after decompression (413 beyond it)
MAX_BODY_BYTES = 16 * 1024 * 1024
#: the largest body of any other request (a flag, token, user, login or dashboard form):
#: they hold a few fields (413 beyond it)
MAX_FORM_BYTES = 64 * 1024
#: the most rows one ingestion batch may hold (413 beyond it)
MAX_BATCH_ROWS = 10_000
#: the most rows one page of a list may hold
MAX_PAGE = 500
#: the most columns an input table may hold beyond its canonical ones, through ingestion:
#: each new one is a column added to the table (a batch naming 3,000 took minutes)
MAX_EXTRA_COLUMNS = 200


@dataclass
class Settings:
    """How to run the service.

    ``db`` and ``model`` are what the CLI takes (``--db``, ``--model``; the store's
    default is ./healthscore.duckdb or $HEALTHSCORE_DB, the model's ./healthscore.yaml
    or the built-in default). ``state_dir`` holds what the service must keep private:
    the session secret and the running server's address file; by default a folder
    beside a DuckDB store (``healthscore.duckdb.service/``), else ``./.healthscore/``.
    """

    db: str | None = None
    model: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    state_dir: Path | None = None
    max_body_bytes: int = MAX_BODY_BYTES
    max_form_bytes: int = MAX_FORM_BYTES
    max_batch_rows: int = MAX_BATCH_ROWS
    max_page: int = MAX_PAGE
    max_extra_columns: int = MAX_EXTRA_COLUMNS
    #: seconds the rescorer waits to gather touched accounts into one micro-batch
    rescore_every: float = 0.1
    #: run the daily rescore of everyone (off in tests that want a quiet store)
    daily_rescore: bool = True
    #: build the plans of larger micro-batches while the rescorer is idle (off in the
    #: tests' services, whose batches are small: there the builds only take CPU)
    idle_builds: bool = True
    #: build the plans of the smallest micro-batches at start (off in the tests' services
    #: that never time a micro-batch: there the builds only take CPU; a batch then builds
    #: the plan it needs on first use, and none is built while idle)
    warm_up: bool = True
    #: cookies with the Secure attribute (behind HTTPS); off for plain loopback HTTP
    secure_cookies: bool = False
    #: failed logins of one user name or one client address before logins from it are
    #: refused (429) until the oldest of them is ``login_window`` seconds old
    login_failures: int = 5
    login_window: float = 15 * 60
    #: a fixed "now" (UTC, naive) for a demo or test frozen in time; None: the clock
    now: datetime | None = None

    def resolved_state_dir(self) -> Path:
        """The folder for the service's private files, created owner-only."""
        from healthscore.store import resolve_url

        if self.state_dir is not None:
            path = Path(self.state_dir)
        else:
            url = resolve_url(self.db)
            if url.startswith("duckdb://") and url != "duckdb://":
                path = Path(url.removeprefix("duckdb://") + ".service")
            else:
                path = Path(".healthscore")
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path, 0o700)
        return path

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host  # IPv6, as URLs write it
        return f"http://{host}:{self.port}"
