"""The dashboard's session secret is whole or refused (issue 15: files the tool writes).

The secret signs session cookies. Before this test it was written straight into its
file: a write cut short (a full disk) left a short or empty file that the next start
read back and signed cookies with, so anyone could forge a session. Real files, a real
file-size limit (the way a full disk fails a write), the real ``healthscore serve``.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def make_secret(state_dir: Path, limit: int | None = None) -> subprocess.CompletedProcess:
    """``session_secret(state_dir)`` in a subprocess whose files may not grow past
    ``limit`` bytes (a write past it fails with EFBIG, as on a full disk)."""

    def limit_files():
        if limit is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    code = (
        "import sys\n"
        "from healthscore.errors import HealthscoreError\n"
        "from healthscore.service.auth import session_secret\n"
        "try:\n"
        "    print(session_secret(sys.argv[1]))\n"
        "except HealthscoreError as e:\n"
        "    print(e, file=sys.stderr); sys.exit(1)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.run(
        [sys.executable, "-c", code, str(state_dir)],
        env=env,
        capture_output=True,
        text=True,
        preexec_fn=limit_files,
        timeout=60,
    )


def test_a_secret_cut_short_by_a_full_disk_leaves_no_file_and_the_next_start_makes_a_whole_one(
    tmp_path,
):
    cut = make_secret(tmp_path, limit=10)
    assert cut.returncode == 1, cut.stdout + cut.stderr
    assert "session_secret" in cut.stderr and "Traceback" not in cut.stderr
    assert not (tmp_path / "session_secret").exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no temporary file left either

    whole = make_secret(tmp_path)
    assert whole.returncode == 0, whole.stderr
    secret = whole.stdout.strip()
    assert len(secret) >= 64
    assert (tmp_path / "session_secret").read_text().strip() == secret
    assert (tmp_path / "session_secret").stat().st_mode & 0o777 == 0o600
    assert make_secret(tmp_path).stdout.strip() == secret  # read back, not made again


@pytest.mark.parametrize("content", ["", "\n", "short-secret"])
def test_a_short_secret_file_is_refused_with_what_to_do(tmp_path, content):
    from healthscore.errors import HealthscoreError
    from healthscore.service.auth import session_secret

    (tmp_path / "session_secret").write_text(content)
    with pytest.raises(HealthscoreError) as e:
        session_secret(tmp_path)
    assert str(tmp_path / "session_secret") in str(e.value)
    assert "delete the file" in str(e.value)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_refuses_to_start_on_an_empty_secret_naming_the_file(fixture_db, tmp_path):
    db = tmp_path / "healthscore.duckdb"
    shutil.copy2(fixture_db, db)
    state = tmp_path / "healthscore.duckdb.service"
    state.mkdir(mode=0o700)
    (state / "session_secret").write_text("")
    env = {**os.environ, "PYTHONPATH": str(SRC), "HEALTHSCORE_DB": ""}
    try:
        r = subprocess.run(
            [sys.executable, "-m", "healthscore.cli", "serve", "--db", str(db)]
            + ["--port", str(_free_port())],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("serve started on an empty session secret (cookies signed with '')")
    assert r.returncode == 1, r.stdout + r.stderr
    assert str(state / "session_secret") in r.stderr.replace("\n", "")
    assert "Traceback" not in r.stderr
