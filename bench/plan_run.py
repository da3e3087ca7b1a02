"""A compiled score plan's run alone (``ScorePlan.run``), p50/p99, kept statement
against the values written into the text, interleaved, on one store:

    python bench/plan_run.py --db STORE [--runs 40] [--accounts 1 200]

``STORE`` is a DuckDB store loaded as ``ingest_realtime.py`` loads it (e.g. the S
store); it is opened as the service opens it (its clock at 2025-01-01) and only read.
Each round runs, for random accounts, the plan on the service's reading connection
with its statement kept (DuckDB plans it once) and then the same plan with the values
written into its text (DuckDB plans it at every run), and checks the rows are equal.
Prints the figures, the load average, and one ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest_realtime import settings  # noqa: E402


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", required=True, type=Path)
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--accounts", type=int, nargs="+", default=[1, 200])
    args = ap.parse_args()
    from healthscore.engine.plan import ScorePlan
    from healthscore.service.state import ServiceState

    state = ServiceState.open(settings(args.db))
    result: dict = {"load_before": os.getloadavg()[0]}
    try:
        kept, text = ScorePlan(state.model), ScorePlan(state.model)
        with state.reading() as st:
            accounts = st._backend.run_sql("SELECT account_id FROM accounts")
            ids = accounts["account_id"].to_pylist()
            rng = random.Random(7)
            for n in args.accounts:
                times: dict[str, list[float]] = {"kept": [], "text": []}
                for r in range(args.runs + 2):
                    batch = rng.sample(ids, n)
                    rows = {}
                    for mode, plan in (("kept", kept), ("text", text)):
                        if mode == "text":  # this plan's statements are not kept
                            plan._prepared(st, next(s for s in (1, 4, 16, 64, 256) if s >= n))
                            for prepared, _ in plan._plans.values():
                                prepared.kept = False
                        t0 = time.perf_counter()
                        rows[mode] = plan.run(st, state.now(), batch)
                        if r >= 2:  # the first two: plans built, statements prepared
                            times[mode].append(time.perf_counter() - t0)
                    if not rows["kept"].equals(rows["text"]):
                        raise SystemExit(f"rows differ for {batch}")
                for mode, xs in times.items():
                    key = f"{mode}_{n}"
                    result[key] = {
                        "p50_ms": round(pct(xs, 0.5), 1),
                        "p99_ms": round(pct(xs, 0.99), 1),
                        "mean_ms": round(statistics.mean(xs) * 1e3, 1),
                    }
                    print(f"{key:10s} {result[key]}  load {os.getloadavg()[0]:.2f}", flush=True)
    finally:
        state.close()
    result["load_after"] = os.getloadavg()[0]
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
