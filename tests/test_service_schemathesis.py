"""The API against its own OpenAPI spec: Schemathesis (its command line, ``st run``)
sends generated requests, valid and invalid, to every operation of a running service
over loopback, and no answer may be a server error (5xx): once with an admin token for
the whole ``/v1`` API, once with a Segment write key (HTTP Basic) for the Segment routes.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path


def _st(schema: str, *options: str) -> tuple[int, str]:
    st = Path(sys.executable).parent / "st"
    found = str(st) if st.exists() else shutil.which("st")
    assert found, "schemathesis is a dev dependency: pip install -e '.[dev]'"
    common = ["--checks", "not_a_server_error", "--seed", "1", "--workers", "1"]
    common += ["--request-timeout", "60"]
    run = subprocess.run(
        [found, "run", schema, *common, *options],
        capture_output=True,
        text=True,
        timeout=900,
    )
    return run.returncode, run.stdout + run.stderr


def _tested(out: str) -> tuple[int, int, int]:
    """Operations tested, test cases generated and passed (the run's summary)."""
    tested = int(re.search(r"Tested: (\d+)", out)[1])
    generated, passed = map(int, re.search(r"(\d+) generated, (\d+) passed", out).groups())
    return tested, generated, passed


def test_no_generated_request_gets_a_server_error(service):
    code, out = _st(
        f"{service.url}/openapi.json",
        "--header",
        f"Authorization: Bearer {service.admin_token}",
        "--max-examples",
        "8",
        "--phases",
        "examples,coverage,fuzzing",
        # revoking a token by a generated id could end the run's own token; revocation
        # is covered by test_service_access
        "--exclude-path-regex",
        "^/v1/tokens/",
    )
    assert code == 0, out[-4000:]  # every check passed on every operation
    tested, generated, passed = _tested(out)
    assert tested >= 20 and generated == passed > 300, out[-2000:]


def test_the_segment_routes_take_any_generated_message_without_a_server_error(service, tmp_path):
    key = service.token("segment", name="segment write key")
    schema = tmp_path / "openapi.json"  # a write key may not read the spec: fetch it first
    with service.client() as admin:
        schema.write_text(admin.get("/openapi.json").text)
    code, out = _st(
        str(schema),
        "--url",
        service.url,
        "--auth",
        f"{key}:",
        "--max-examples",
        "15",
        "--phases",
        "examples,fuzzing",
        "--include-path-regex",
        "^/v1/(batch|track|identify|group)$",
    )
    assert code == 0, out[-4000:]
    tested, generated, passed = _tested(out)
    assert tested == 4 and generated == passed > 20, out[-2000:]
    assert "Authentication failed" not in out  # the key was taken: the routes were reached
