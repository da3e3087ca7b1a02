"""The user's cache of work that depends only on what it is keyed by: compiled query plans
and models already checked.

Place in the flow: the bottom layer, used by :mod:`healthscore.store` (the compiled SQL
of a plan, see :meth:`healthscore.store.Store.cached_plan`) and :mod:`healthscore.model`
(a model text already checked clean). It saves a command its expensive start-up: the
engine builds its queries with Ibis, whose import, connection set-up and compiler cost
a command about a second; a repeat of the same command on the same model and store
schema runs the stored SQL instead.

An entry is one JSON file named by the sha256 of its key. Every key includes
:func:`code_fingerprint` (healthscore's own files, and the versions of the libraries
that compile the SQL), so an upgrade or an edited source file never reuses an entry.
The folder is ``$HEALTHSCORE_CACHE_DIR``, else ``$XDG_CACHE_HOME/healthscore``, else
``~/.cache/healthscore``; ``HEALTHSCORE_CACHE_DIR=off`` turns the cache off. The cache
is an accelerator only: an entry that cannot be read or written is ignored (the work is
done again), and an entry is written whole (a temporary file renamed) or not at all.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

ENV = "HEALTHSCORE_CACHE_DIR"
#: bump when the shape of an entry changes
FORMAT = 1


def cache_dir() -> Path | None:
    """The cache folder (None: the cache is off)."""
    value = os.environ.get(ENV, "").strip()
    if value.lower() in ("off", "none", "0"):
        return None
    if value:
        return Path(value)
    base = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(base) if base else Path.home() / ".cache") / "healthscore"


@functools.cache
def code_fingerprint() -> str:
    """What every key includes: healthscore's source files (name, size, modification
    time) and the versions of Ibis, sqlglot and DuckDB, which shape the compiled SQL."""
    h = hashlib.sha256(f"format {FORMAT}".encode())
    root = Path(__file__).resolve().parent.parent
    for path in sorted(root.rglob("*.py")):
        st = path.stat()
        h.update(f"{path.relative_to(root)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    for dist in ("healthscore", "ibis-framework", "sqlglot", "duckdb"):
        try:
            h.update(f"{dist}={metadata.version(dist)}\n".encode())
        except metadata.PackageNotFoundError:
            h.update(f"{dist}=-\n".encode())
    return h.hexdigest()


def entry_key(kind: str, *parts: str) -> str:
    """The name of an entry: sha256 of its kind, its parts and :func:`code_fingerprint`."""
    h = hashlib.sha256(code_fingerprint().encode())
    for part in (kind, *parts):
        h.update(b"\0" + part.encode())
    return f"{kind}-{h.hexdigest()}"


def read(key: str) -> Any | None:
    """The entry ``key`` (from :func:`entry_key`), or None when there is none (or the
    cache is off, or the entry cannot be read)."""
    folder = cache_dir()
    if folder is None:
        return None
    try:
        return json.loads((folder / f"{key}.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None


def write(key: str, value: Any) -> None:
    """Keep ``value`` (JSON) as the entry ``key``; silently nothing when the folder
    cannot be written."""
    folder = cache_dir()
    if folder is None:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(value, f)
            os.replace(tmp, folder / f"{key}.json")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError:
        return
