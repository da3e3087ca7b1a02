"""What `healthscore serve` checks before it serves (issue 15: bad input, files written).

- The dashboard's session secret is whole or refused. It signs session cookies; it was
  written straight into its file, so a write cut short (a full disk) left a short or
  empty file that the next start read back and signed cookies with: anyone could forge
  a session.
- The address: a port out of range was a traceback, port 0 announced a server at
  ``:0``, a host name that does not resolve was reported as "another program uses that
  port", and an IPv6 address could not be served at all.

Real files, a real file-size limit (the way a full disk fails a write), the real
``healthscore serve`` (in a process where it must serve, in Typer's runner where it must
refuse).
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
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


def test_serve_refuses_a_session_secret_that_is_a_folder_naming_it(fixture_db, tmp_path):
    """A folder where the secret's file goes gave a traceback (IsADirectoryError), found
    by the output probe of the tenth session."""
    db = tmp_path / "healthscore.duckdb"
    shutil.copy2(fixture_db, db)
    state = tmp_path / "healthscore.duckdb.service"
    (state / "session_secret").mkdir(parents=True)
    try:
        r = _serve(db, str(_free_port()))
    except subprocess.TimeoutExpired:
        pytest.fail("serve started without a session secret")
    text = r.stderr.replace("\n", "")
    assert r.returncode == 1 and str(state / "session_secret") in text, r.stdout + r.stderr
    assert "folder" in text and "Traceback" not in r.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(db: Path, port: str) -> subprocess.CompletedProcess:
    """``healthscore serve --db DB --port PORT`` in a process of its own, which should stop
    before serving (a test fails on :class:`subprocess.TimeoutExpired` otherwise)."""
    return subprocess.run(
        [sys.executable, "-m", "healthscore.cli", "serve", "--db", str(db), "--port", port],
        env={**os.environ, "PYTHONPATH": str(SRC), "HEALTHSCORE_DB": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_serve_refuses_to_start_on_an_empty_secret_naming_the_file(fixture_db, tmp_path):
    db = tmp_path / "healthscore.duckdb"
    shutil.copy2(fixture_db, db)
    state = tmp_path / "healthscore.duckdb.service"
    state.mkdir(mode=0o700)
    (state / "session_secret").write_text("")
    try:
        r = _serve(db, str(_free_port()))
    except subprocess.TimeoutExpired:
        pytest.fail("serve started on an empty session secret (cookies signed with '')")
    assert r.returncode == 1, r.stdout + r.stderr
    assert str(state / "session_secret") in r.stderr.replace("\n", "")
    assert "Traceback" not in r.stderr
    assert "serving" not in r.stdout, r.stdout  # it never served: it must not say so


def _serve_in_process(*args: str):
    from typer.testing import CliRunner

    from healthscore.cli import app

    r = CliRunner().invoke(app, ["serve", *args], env={"HEALTHSCORE_DB": None})
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception  # a traceback for the user
    return r


@pytest.fixture
def db_copy(fixture_db, tmp_path) -> Path:
    db = tmp_path / "healthscore.duckdb"
    shutil.copy2(fixture_db, db)
    return db


@pytest.mark.parametrize("port", ["0", "-1", "70000"])
def test_a_port_out_of_range_is_an_error_naming_the_range(db_copy, port):
    # a process: port 0 used to serve (on a port nobody was told), never returning
    try:
        r = _serve(db_copy, port)
    except subprocess.TimeoutExpired:
        pytest.fail(f"serve --port {port} started serving")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "1 to 65535" in r.stderr and "--port" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("host", ["no such host", "999.1.1.1"])
def test_a_host_that_is_not_an_address_says_so_not_that_the_port_is_taken(db_copy, host):
    r = _serve_in_process("--db", str(db_copy), "--host", host, "--port", str(_free_port()))
    text = r.stderr.replace("\n", " ")
    assert r.exit_code == 1, r.output
    assert "not an address of this machine" in text and "--host" in text
    assert "another program uses that port" not in text


def test_a_port_in_use_says_so(db_copy):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = _serve_in_process("--db", str(db_copy), "--port", str(port))
    assert r.exit_code == 1, r.output
    assert "another program uses that port" in r.stderr.replace("\n", " ")


def test_serve_on_ipv6_loopback_announces_a_bracketed_address_that_answers(db_copy):
    import httpx

    try:
        with socket.create_server(("::1", 0), family=socket.AF_INET6) as s:
            port = s.getsockname()[1]
    except OSError as e:
        pytest.skip(f"no IPv6 loopback on this machine ({e})")
    env = {**os.environ, "PYTHONPATH": str(SRC), "HEALTHSCORE_DB": ""}
    cmd = [sys.executable, "-m", "healthscore.cli", "serve", "--db", str(db_copy)]
    proc = subprocess.Popen(
        cmd + ["--host", "::1", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = proc.stdout.readline()
        assert f"at http://[::1]:{port}" in first, first + proc.stderr.read()
        deadline = time.monotonic() + 120
        while True:
            try:
                r = httpx.get(f"http://[::1]:{port}/health", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read()
                assert time.monotonic() < deadline, "no answer on [::1] in 120 s"
                time.sleep(0.2)
        assert r.status_code == 200 and r.json() == {"status": "ok"}
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_serve_on_a_full_disk_is_one_line_naming_the_store_not_a_traceback(fixture_db, tmp_path):
    # the store opens, but making the service's tables (or its owner file) cannot write:
    # Uvicorn printed the start-up failure as a 20-frame traceback and exited 3
    from test_outputs import _mount, fill

    disk = tmp_path / "disk"
    disk.mkdir()
    size = fixture_db.stat().st_size + (2 << 20)
    why = _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk))
    if why:
        pytest.skip(f"cannot mount a small tmpfs here ({why}); needs root or CAP_SYS_ADMIN")
    try:
        db = disk / "healthscore.duckdb"
        shutil.copy2(fixture_db, db)
        state = disk / "healthscore.duckdb.service"
        state.mkdir(mode=0o700)
        (state / "session_secret").write_text("s" * 64)
        fill(disk)
        r = _serve(db, str(_free_port()))
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("Error: cannot write"), r.stderr
    assert "serving" not in r.stdout, r.stdout
    assert "the disk is full" in errors[0]
