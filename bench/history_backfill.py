"""History backfill benchmark against ../shared/bench-reference (workload S or L).

    python bench/history_backfill.py [S|L] [--runs 3] [--db existing.duckdb]

1. Generates the reference data if missing (``gen.py``, Parquet under /tmp/perfdata) and
   loads it through ``healthscore load`` into a fresh DuckDB store, as
   ``score_snapshot.py`` does (``--db`` reuses a store loaded before).
2. Times, each in fresh processes, median of ``--runs``:
   (a) the reference ``eng_duckdb.py backfill`` (52 weekly dates, one hand-written
       DuckDB query on Parquet);
   (b) healthscore computing the same 52 dates with ``bench/reference_model.yaml``, as
       ``healthscore history`` does (``timeline``: one shared pass over the dates),
       from the stored data to the materialised scores; the expression build + compile
       is included and also reported apart;
   (w) writing them into the store's ``scores`` and ``score_lines`` tables
       (``history.backfill``: one transaction per date);
   and checks that (b)'s checksum equals the reference's.

Prints every figure and one ``RESULT {json}`` line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from score_snapshot import MODEL, PY, REF, load_store, peak_rss_mb, run_result  # noqa: E402


def child(db: str) -> None:
    """(b) and (w) in a fresh process on a store without stored scores."""
    t0 = time.perf_counter()
    import healthscore as hs
    from healthscore.engine import history, timeline

    sys.path.insert(0, str(REF))
    import spec

    t_import = time.perf_counter() - t0
    store = hs.connect(db, create=False)
    for table in (history.SCORES, history.LINES, history.MODELS):
        store.con.raw_sql(f"DROP TABLE IF EXISTS {table}")
    model = hs.load_model(MODEL)
    dates = sorted(spec.DATES)
    t0 = time.perf_counter()
    expr = timeline.dates_expr(store, model, dates)
    sql = store.compile(expr)
    t_build = time.perf_counter() - t0
    wide = store.execute_sql(sql).cast(expr.schema().to_pyarrow())
    t_compute = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = history.backfill(
        store,
        model,
        dates,
        lambda d: None,
        score_dates=lambda ds: wide,
        chunk_rows=10**9,
    )
    t_write = time.perf_counter() - t0
    lines = store.con.table(history.LINES).count().to_pyarrow().as_py()
    rec = {
        "compute_s": round(t_compute, 3),
        "build_compile_s": round(t_build, 3),
        "write_s": round(t_write, 3),
        "total_s": round(t_compute + t_write, 3),
        "import_s": round(t_import, 3),
        "scores": result.rows,
        "score_lines": lines,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "check": spec.checksum(wide.to_pandas()),
    }
    print("RESULT " + json.dumps(rec), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("size", nargs="?", default="S", choices=["S", "L"])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--db", help="a store already loaded with the reference data")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child)
        return
    if not (Path("/tmp/perfdata") / a.size / "events.parquet").exists():
        print(f"generating reference data {a.size} ...")
        subprocess.run([PY, "gen.py", a.size], cwd=REF, check=True)
    if a.db:
        db = Path(a.db)
    else:
        db = Path(tempfile.mkdtemp(prefix="hs-bench-")) / "bench.duckdb"
        print(f"loading through `healthscore load` into {db}")
        print(f"  load total {load_store(a.size, db):.1f}s")

    ref, ours = [], []
    for _ in range(a.runs):
        ref.append(run_result([PY, "eng_duckdb.py", "backfill", a.size], cwd=REF))
        ours.append(run_result([PY, __file__, a.size, "--child", str(db)]))
    same = ref[0]["check"] == ours[0]["check"]
    if not same:
        print(
            "CHECKSUM MISMATCH\n reference  ", ref[0]["check"], "\n healthscore", ours[0]["check"]
        )
    med = statistics.median
    a_s = med(r["wall_s"] for r in ref)
    b_s = med(r["compute_s"] for r in ours)
    w_s = med(r["write_s"] for r in ours)
    t_s = med(r["total_s"] for r in ours)
    bc_s = med(r["build_compile_s"] for r in ours)
    rec = {
        "size": a.size,
        "dates": 52,
        "cores": os.cpu_count(),
        "runs": a.runs,
        "checksum_match": same,
        "a_reference_s": round(a_s, 3),
        "b_healthscore_compute_s": round(b_s, 3),
        "build_compile_s": round(bc_s, 3),
        "w_write_s": round(w_s, 3),
        "total_s": round(t_s, 3),
        "ratio_b_a": round(b_s / a_s, 2),
        "ratio_total_a": round(t_s / a_s, 2),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in ours),
        "peak_rss_mb_reference": max(r["peak_rss_mb"] for r in ref),
        "scores": ours[0]["scores"],
        "score_lines": ours[0]["score_lines"],
        "a_runs": [r["wall_s"] for r in ref],
        "b_runs": [r["compute_s"] for r in ours],
    }
    print(f"checksum {'matches' if same else 'DIFFERS'}: {ours[0]['check']}")
    print(f"(a) reference eng_duckdb.py backfill {a.size}: {a_s:.3f}s (median of {a.runs})")
    print(
        f"(b) healthscore, 52 dates to materialised scores: {b_s:.3f}s  ratio b/a "
        f"{b_s / a_s:.2f}  (of which build + compile {bc_s:.3f}s)"
    )
    print(
        f"(w) writing {rec['scores']:,} scores and {rec['score_lines']:,} score lines: {w_s:.3f}s"
    )
    print(f"total b + w: {t_s:.3f}s  ratio {t_s / a_s:.2f}")
    print(
        f"peak RSS: healthscore {rec['peak_rss_mb']:.0f} MB, "
        f"reference {rec['peak_rss_mb_reference']:.0f} MB"
    )
    print("RESULT " + json.dumps(rec))
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
