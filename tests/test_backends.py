"""The same data and model on every backend give the same scores (to 1e-9).

DuckDB always runs; PostgreSQL runs when ``HEALTHSCORE_TEST_PG`` names a server (``.ci/run``
starts one) and is skipped with the reason otherwise. Each test session gets a database of
its own on that server.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

import healthscore as hs
from fixtures import AS_OF, memory_store, postgres_store, tables

MODELS = [None, Path(__file__).parent / "models" / "valid" / "definitions.yaml"]


@pytest.fixture(scope="module", params=["duckdb", "postgres"])
def con(request):
    """A store on each backend, loaded with the fixture tables."""
    if request.param == "duckdb":
        store = hs.connect("duckdb://")
        yield store
        return
    with postgres_store() as store:
        yield store


@pytest.fixture(scope="module")
def loaded(con):
    results = {name: con.load(name, t) for name, t in tables().items()}
    return con, results


@pytest.fixture(scope="module")
def reference():
    return memory_store()


# DuckDB's reference results, the same for every backend: computed once per module, not
# again for each backend (the reference store is module-scoped, so they stay valid)
_REFERENCE: dict[tuple, object] = {}


def _reference(reference, kind: str, *args):
    """``hs.score(reference, model, date)`` ("score", model path, date) or
    ``hs.explain(reference, default model, account, AS_OF)`` ("explain", account)."""
    key = (id(reference), kind, *args)
    if key not in _REFERENCE:
        if kind == "score":
            model_path, d = args
            value = hs.score(reference, hs.load_model(model_path), d).to_pylist()
        else:
            value = hs.explain(reference, hs.load_model(), args[0], AS_OF)
        _REFERENCE[key] = (reference, value)  # the store held: its id stays unique
    return _REFERENCE[key][1]


def test_loads_report_the_same_counts_and_reload_is_harmless(loaded):
    store, results = loaded
    assert results["usage_events"].inserted == 12
    again = store.load("usage_events", tables()["usage_events"])
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 12)


@pytest.mark.parametrize("model_path", MODELS, ids=["default", "definitions"])
def test_scores_agree_with_duckdb_to_1e9(loaded, reference, model_path):
    store, _ = loaded
    model = hs.load_model(model_path)
    got = hs.score(store, model, AS_OF).to_pylist()
    want = _reference(reference, "score", model_path, AS_OF)
    assert [r["account_id"] for r in got] == [r["account_id"] for r in want]
    for g, w in zip(got, want, strict=True):
        assert set(g) == set(w)
        for col, expected in w.items():
            value = g[col]
            if isinstance(expected, float) and value is not None:
                assert math.isclose(value, expected, abs_tol=1e-9), (g["account_id"], col)
            else:
                assert value == expected, (g["account_id"], col, value, expected)


def test_explanations_add_up_on_every_backend(loaded):
    store, _ = loaded
    e = hs.explain(store, hs.load_model(), "A1", AS_OF)
    assert math.isclose(sum(m.contribution for m in e.metrics), e.score, abs_tol=1e-9)


@pytest.mark.parametrize("model_path", MODELS, ids=["default", "definitions"])
def test_many_dates_in_one_pass_agree_with_duckdb_one_date_at_a_time(loaded, reference, model_path):
    """The shared multi-date expression (history backfills) runs on every backend.

    DuckDB's one date at a time is ``hs.score``'s expression with its dates as parameters
    (``ScorePlan``, as ``healthscore score`` and the rescorer run it), compiled once and
    run at each date (a compile per date cost ~1 s each); at AS_OF it is checked against
    ``hs.score`` itself, row for row."""
    from datetime import timedelta

    from healthscore.engine import timeline
    from healthscore.engine.plan import ScorePlan

    store, _ = loaded
    model = hs.load_model(model_path)
    dates = [AS_OF - timedelta(days=7 * k) for k in range(8)] + [AS_OF + timedelta(days=3)]
    got = timeline.score_dates(store, model, dates).to_pylist()
    ref = ("one date at a time", model_path)
    if (id(reference), *ref) not in _REFERENCE:
        plan = ScorePlan(model)
        runs = {d: plan.run(reference, d).to_pylist() for d in sorted(dates)}
        assert runs[AS_OF] == _reference(reference, "score", model_path, AS_OF)
        _REFERENCE[(id(reference), *ref)] = (reference, [r for d in runs for r in runs[d]])
    want = _REFERENCE[(id(reference), *ref)][1]
    key = lambda r: (r["account_id"], r["as_of"])  # noqa: E731
    got, want = sorted(got, key=key), sorted(want, key=key)
    assert [key(r) for r in got] == [key(r) for r in want]
    for g, w in zip(got, want, strict=True):
        for col in ("score", "band", "coverage"):
            if isinstance(w[col], float):
                assert math.isclose(g[col], w[col], abs_tol=1e-9), (key(g), col)
            else:
                assert g[col] == w[col], (key(g), col)


def test_history_is_written_once_and_read_back_on_every_backend(loaded, reference):
    """The history tables' writes (deletes by date, inserts) and keyed reads run anywhere."""
    from datetime import timedelta

    from healthscore.engine import asof, history

    store, _ = loaded
    model = hs.load_model()
    dates = [AS_OF - timedelta(days=7), AS_OF]
    assert asof.backfill_dates(store, model, dates).computed == dates
    assert asof.backfill_dates(store, model, dates).skipped == dates
    assert history.stored_dates(store, model) == set(dates)
    rebuilt = asof.backfill_dates(store, model, dates, rebuild=True)
    assert rebuilt.computed == dates  # replaced, not added to
    seen = history.stored_explanations(store, model, ["A1", "A2"], dates)
    want = {r["account_id"]: r["score"] for r in _reference(reference, "score", None, AS_OF)}
    for acc in ("A1", "A2"):
        e, live = seen[(acc, AS_OF)], _reference(reference, "explain", acc)
        assert math.isclose(e.score, want[acc], abs_tol=1e-9), acc
        for m, m_live in zip(e.metrics, live.metrics, strict=True):
            assert math.isclose(m.contribution, m_live.contribution, abs_tol=1e-9), (acc, m)
    n = store.stored(history.SCORES).count().to_pyarrow().as_py()
    assert n == 2 * len(want)  # each account at each date, once


def test_a_failure_inside_a_transaction_writes_nothing_on_every_backend(loaded):
    """A load inside a transaction joins it: the failure after it takes it back too."""
    import pyarrow as pa

    store, _ = loaded
    before = store.count("accounts"), store.watermarks()["accounts"]
    row = tables()["accounts"].slice(0, 1).to_pylist()
    row[0].update(account_id="A-late", name="Late")
    batch = pa.Table.from_pylist(row, schema=tables()["accounts"].schema)
    with pytest.raises(RuntimeError, match="half-way"):
        with store.transaction():
            assert store.load("accounts", batch).inserted == 1
            store.set_meta("owner", "cs-ops")
            raise RuntimeError("half-way")
    assert (store.count("accounts"), store.watermarks()["accounts"]) == before
    assert "owner" not in store.meta()
