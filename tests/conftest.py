from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

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
def fresh_store(tmp_path):
    """A writable copy of the fixture store for one test."""
    from healthscore.store import connect

    path = tmp_path / "fresh.duckdb"
    fixtures.write(path)
    s = connect(path)
    yield s
    s.close()


@pytest.fixture
def ravenstack_dir() -> Path:
    d = SHARED_DATA / "ravenstack-saas"
    if not d.exists():
        pytest.skip(f"real data not present at {d}")
    return d


@pytest.fixture
def telco_dir() -> Path:
    d = SHARED_DATA / "ibm-telco-churn-v11"
    if not d.exists():
        pytest.skip(f"real data not present at {d}")
    return d
