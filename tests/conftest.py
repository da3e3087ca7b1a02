from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

# the session's own cache of compiled plans and checked models (core/cache.py), shared by
# its tests and the commands they start, never the user's (set before healthscore loads).
# One for the whole session: pytest-xdist's workers inherit the environment of the main
# process, which imports this file before it starts them, so a plan one worker compiled
# is not compiled again by the other (entries are written whole, by rename)
_SESSION_CACHE = "HEALTHSCORE_TEST_SESSION_CACHE"
if not (os.environ.get("PYTEST_XDIST_WORKER") and os.environ.get(_SESSION_CACHE)):
    os.environ[_SESSION_CACHE] = tempfile.mkdtemp(prefix="healthscore-test-cache-")
os.environ["HEALTHSCORE_CACHE_DIR"] = os.environ[_SESSION_CACHE]

import fixtures  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def fixture_db(tmp_path_factory) -> Path:
    """The fixture store, written once per session; tests only read it."""
    path = tmp_path_factory.mktemp("fixture") / "fixture.duckdb"
    fixtures.write(path)
    return path


@pytest.fixture
def store(fixture_db):
    from healthscore.store import connect

    s = connect(fixture_db)
    yield s
    s.close()


@pytest.fixture
def fresh_store(fixture_db, tmp_path):
    """A writable copy of the fixture store for one test (the session's file copied:
    loading the fixture tables again cost about 0.4 s CPU a test)."""
    import shutil

    from healthscore.store import connect

    path = tmp_path / "fresh.duckdb"
    shutil.copyfile(fixture_db, path)
    s = connect(path)
    yield s
    s.close()


@pytest.fixture(scope="session")
def ravenstack_dir() -> Path:
    d = SHARED_DATA / "ravenstack-saas"
    if not d.exists():
        pytest.skip(f"real data not present at {d}")
    return d


@pytest.fixture(scope="session")
def telco_dir() -> Path:
    d = SHARED_DATA / "ibm-telco-churn-v11"
    if not d.exists():
        pytest.skip(f"real data not present at {d}")
    return d


# --- demo projects, built once per session and copied for each module that writes ---------


@pytest.fixture(scope="session")
def demo_projects(tmp_path_factory):
    """A cache of demo projects (no stored history, no report), one per size; a module
    gets its own copy through :func:`demo_project`, so writes never leak between modules."""
    from healthscore.api import run_demo

    built = {}

    def get(size: dict):
        key = tuple(sorted(size.items()))
        if key not in built:
            d = tmp_path_factory.mktemp("demo-" + "-".join(str(v) for _, v in key))
            built[key] = run_demo(d, **size, end=fixtures.DEMO_END, history_months=0, report=False)
        return built[key]

    return get


@pytest.fixture(scope="module")
def demo_project(demo_projects, tmp_path_factory, request):
    """A private copy of a shared demo project; the module names its size with
    ``DEMO = fixtures.CALIBRATION_DEMO`` (default: ``fixtures.SMALL_DEMO``)."""
    import dataclasses
    import shutil

    size = getattr(request.module, "DEMO", fixtures.SMALL_DEMO)
    template = demo_projects(size)
    d = tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2])
    for f in (template.db_path, template.model_path):
        shutil.copy2(f, d / f.name)
    return dataclasses.replace(
        template,
        directory=d,
        db_path=d / template.db_path.name,
        model_path=d / template.model_path.name,
    )


# --- a real browser ---------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium (Debian's, driven by Playwright) for the session: each test
    opens its own pages or contexts in it, so no state passes between tests; a launch
    costs the Playwright driver's and the browser's start-up, once per test worker."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
            ],
        )
        yield b
        b.close()


# --- the live service ------------------------------------------------------------------


@pytest.fixture(scope="module")
def service(demo_project):
    """A running service (real HTTP on 127.0.0.1) over the module's copy of the demo
    store; see :mod:`service_support`."""
    from service_support import running_service

    with running_service(demo_project.db_path, demo_project.model_path) as running:
        yield running


@pytest.fixture(scope="module")
def api(service):
    """An HTTP client of the module's service, sending the admin's token."""
    with service.client() as client:
        yield client
