"""Evaluation speed: backtest (and calibrate) on a store with stored monthly history.

    python bench/evaluate_speed.py [--accounts 5000] [--months 24] [--reps 200]
                                   [--db /tmp/hs-evaluate/healthscore.duckdb] [--calibrate]
                                   [--suggest]

The workload of issue 12: a demo book of ``--accounts`` accounts over ``--months``
months, with the monthly history of the default model stored at 23 dates (about 60,000
scores at 5,000 accounts). The store is built once and reused (``--db``); building it is
not timed. Then, each in a fresh process, median of ``--runs``:

- ``backtest`` with ``--reps`` bootstrap replicates, everything stored (the API call
  ``run_backtest``, as ``healthscore backtest`` makes it);
- with ``--calibrate``, ``calibrate --train-until`` the middle date;
- with ``--suggest``, ``model suggest --until`` the demo's end (``suggest_model``: every
  candidate metric at 13 dates, their AUCs and correlations, the file written).

Prints every figure and one ``RESULT {json}`` line. Targets (2 cores): backtest
<= 10 s, calibrate <= 60 s, suggest <= 60 s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

PY = sys.executable
FROM, TO = "2023-08-01", "2025-06-01"  # 23 monthly dates before the demo's end
END = datetime(2025, 7, 1)


def build(db: Path, accounts: int, months: int) -> None:
    import healthscore as hs

    t0 = time.perf_counter()
    run = hs.api.run_demo(
        db.parent, accounts=accounts, months=months, end=END, history_months=0, report=False
    )
    store = hs.connect(run.db_path)
    hs.api.history(store, run.model, FROM, TO, "1mo")
    n = store.count("scores")
    store.close()
    print(f"built {db} in {time.perf_counter() - t0:.0f} s: {n:,} stored scores")


def child(db: str, what: str, reps: int) -> None:
    import healthscore as hs

    t0 = time.perf_counter()
    project = hs.api.open_project(db, Path(db).parent / "healthscore.yaml")
    if what == "backtest":
        run = hs.api.run_backtest(project.store, project.model, FROM, TO, reps=reps)
        m = run.result.evaluations["churned"].overall
        figure = f"ROC AUC {m.roc_auc}, {m.observations:,} observations, {m.events} events"
    elif what == "suggest":
        out = Path(db).parent / "suggested.yaml"
        s = hs.api.suggest_model(project.store, out, until=END)
        figure = (
            f"{len(s.scored)} metrics scored of {len(s.metrics)}, {s.observations:,} "
            f"observations, {s.positives} events"
        )
    else:
        cal = hs.api.calibrate_model(
            project.store, project.model, train_until="2024-07-01", reps=reps
        )
        d = cal.to_dict()
        figure = (
            f"held-out ROC AUC {d['roc_auc']['old']} -> {d['roc_auc']['new']}, "
            f"{d['observations']:,} observations, {d['positives']} events"
        )
    print(json.dumps({"seconds": time.perf_counter() - t0, "figure": figure}))


def timed(db: Path, what: str, reps: int, runs: int) -> tuple[float, str]:
    times, figure = [], ""
    for _ in range(runs):
        out = subprocess.run(
            [PY, __file__, "--child", what, "--db", str(db), "--reps", str(reps)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        r = json.loads(out.strip().splitlines()[-1])
        times.append(r["seconds"])
        figure = r["figure"]
    return statistics.median(times), figure


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--accounts", type=int, default=5000)
    ap.add_argument("--months", type=int, default=24)
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--db", type=Path, default=Path("/tmp/hs-evaluate/healthscore.duckdb"))
    ap.add_argument("--calibrate", action="store_true")
    ap.add_argument("--suggest", action="store_true")
    ap.add_argument("--child")
    a = ap.parse_args()
    if a.child:
        child(str(a.db), a.child, a.reps)
        return
    if not a.db.exists():
        a.db.parent.mkdir(parents=True, exist_ok=True)
        build(a.db, a.accounts, a.months)
    result = {"accounts": a.accounts, "reps": a.reps}
    if a.suggest:
        secs, figure = timed(a.db, "suggest", a.reps, a.runs)
        print(f"model suggest: {secs:.1f} s (median of {a.runs}); {figure}")
        result["suggest_s"] = round(secs, 2)
        print("RESULT " + json.dumps(result))
        return
    secs, figure = timed(a.db, "backtest", a.reps, a.runs)
    print(f"backtest, {a.reps} replicates: {secs:.1f} s (median of {a.runs}); {figure}")
    result["backtest_s"] = round(secs, 2)
    if a.calibrate:
        secs, figure = timed(a.db, "calibrate", a.reps, 1)
        print(f"calibrate: {secs:.1f} s; {figure}")
        result["calibrate_s"] = round(secs, 2)
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
