"""The running server's owner file: how a CLI command finds the server that owns a store.

Place in the flow: under ``service/``; the app writes the file on start-up and removes it
on shut-down (:func:`healthscore.service.app.create_app`), the CLI reads it through
:mod:`healthscore.service.local`.

A DuckDB file has one writer process. While ``healthscore serve`` runs it is that
process, so it leaves ``owner.json`` in its state folder (beside the store:
``healthscore.duckdb.service/owner.json``, owner-only): its pid, its address, and an
admin token made at start-up for local CLI commands (revoked at shut-down). A command
finds the file from the store path: when the pid still runs, the store is the server's;
when the pid is gone (the server was killed), the file is stale and ignored. PostgreSQL
stores take many writers: no file is written or read for them.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

OWNER_FILE = "owner.json"


@dataclass(frozen=True)
class Owner:
    """The server that owns a store: its pid, its address, its local admin token."""

    pid: int
    url: str
    token: str
    store: str

    def describe(self) -> str:
        return f"the healthscore server at {self.url} (pid {self.pid})"


def default_state_dir(db: str | os.PathLike | None) -> Path | None:
    """Where a server over ``db`` keeps its private files by default (the folder
    ``Settings.resolved_state_dir`` makes); None when ``db`` is not a DuckDB file."""
    from healthscore.store import store_file

    path = store_file(db)
    return path.with_name(path.name + ".service") if path is not None else None


def write(state_dir: Path, owner: Owner) -> Path:
    """Write the owner file (owner-only, replaced atomically): a write cut short (a full
    disk) is an :class:`~healthscore.errors.OutputError` naming it, and leaves the old
    file or none, and no temporary file."""
    from healthscore.core.files import write_text_atomic

    path = Path(state_dir) / OWNER_FILE
    write_text_atomic(path, json.dumps(asdict(owner)), perms=0o600)
    return path


def remove(state_dir: Path, pid: int | None = None) -> None:
    """Remove the owner file (only the one ``pid`` wrote, when given)."""
    path = Path(state_dir) / OWNER_FILE
    found = _read(path)
    if pid is not None and found is not None and found.pid != pid:
        return
    path.unlink(missing_ok=True)


def find(db: str | os.PathLike | None) -> Owner | None:
    """The running server that owns the store ``db``, from its owner file; None when
    there is none, the store is not a DuckDB file, or the file is stale (its pid is
    gone: it is then removed)."""
    state_dir = default_state_dir(db)
    if state_dir is None:
        return None
    path = state_dir / OWNER_FILE
    owner = _read(path)
    if owner is None:
        return None
    if not pid_alive(owner.pid):
        try:
            if _read(path) == owner:  # not a new server's file written meanwhile
                path.unlink(missing_ok=True)
        except OSError:  # not ours to remove: ignoring it is enough
            pass
        return None
    return owner


def find_by_pid(db: str | os.PathLike | None, pid: int | None) -> Owner | None:
    """The server owning ``db`` when it is process ``pid`` (the one DuckDB says holds the
    file); None otherwise."""
    owner = find(db)
    return owner if owner is not None and (pid is None or owner.pid == pid) else None


def _read(path: Path) -> Owner | None:
    try:
        data = json.loads(path.read_text())
        return Owner(int(data["pid"]), str(data["url"]), str(data["token"]), str(data["store"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        # unreadable (another user's server), half-written or foreign: not an owner we
        # can use; DuckDB's lock still names the process that holds the store
        return None


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (a zombie counts as gone)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    try:  # a killed server not yet reaped by its parent is a zombie: gone
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return True
