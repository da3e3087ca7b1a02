"""A backtest keeps its figures in the store, and the dashboard's model page shows the
last one of the version it serves (issue 11: "the current version's backtest figures
... from the last `backtest`"); before, the page could only say none was stored. Real
DuckDB (a copy of the small demo), a real service on loopback."""

from __future__ import annotations

from datetime import datetime

import httpx
import pytest

import healthscore as hs
from healthscore.evaluate.backtest import last_run, record_run
from service_support import login_cookies, running_service

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def kept(demo_project):
    model = hs.load_model(demo_project.model_path)
    store = hs.connect(demo_project.db_path)
    try:
        assert last_run(store, model.version) is None  # nothing kept before a run
        run = hs.api.run_backtest(store, model, snapshot=True, reps=20)
        found = last_run(store, model.version)
    finally:
        store.close()
    return model, run.result, found


def test_a_backtest_keeps_its_figures_for_its_model_version(kept):
    model, result, found = kept
    assert found is not None
    run_at = found.pop("run_at")
    assert datetime.fromisoformat(run_at) <= datetime.now()
    assert found == result.to_dict()
    assert found["model_version"] == model.version


def test_the_last_run_wins_and_other_versions_see_none(kept, tmp_path):
    import shutil

    model, result, _ = kept
    db = tmp_path / "copy.duckdb"
    store = hs.connect(db)
    try:
        record_run(store, result, at=datetime(2026, 1, 1))
        later = type(result)(**{**result.__dict__, "verdict": "the later run"})
        record_run(store, later, at=datetime(2026, 2, 1))
        assert last_run(store, model.version)["verdict"] == "the later run"
        assert last_run(store, "another version") is None
    finally:
        store.close()
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_the_model_page_shows_the_last_backtest_of_its_version(kept, demo_project):
    from healthscore.service.auth import add_user

    model, result, _ = kept
    overall = (
        result.evaluations["churned"].overall
        if "churned" in result.evaluations
        else (next(iter(result.evaluations.values())).overall)
    )
    with running_service(demo_project.db_path, demo_project.model_path) as r:
        with r.state.store_access() as store:
            add_user(store, "vic", PASSWORD, "viewer")
        cookies = login_cookies(r.url, "vic", PASSWORD)
        html = httpx.get(r.url + "/model", cookies=cookies, timeout=120).text
    section = html[html.index('id="backtest"') :]
    section = section[: section.index("</section>")]
    assert "no backtest stored" not in section
    assert "The last <code>healthscore backtest</code> of this version" in section
    assert f"{overall.observations}" in section or f"{overall.observations:,}" in section
    if overall.roc_auc.value is not None:
        assert f"{overall.roc_auc.value:.3f}" in section
