"""Snapshot scoring benchmark against ../shared/bench-reference (workload S or L).

    python bench/score_snapshot.py [S|L] [--runs 5] [--rescore 200] [--db loaded.duckdb]
                                   [--baseline ../main/src]

1. Generates the reference data if missing (``gen.py``, Parquet under /tmp/perfdata).
2. Loads it through healthscore's own loading (``healthscore load`` with ``--map``)
   into a fresh DuckDB store (timed, reported for information); ``--db`` copies a store
   loaded so before instead (the rescore figure appends events to the copy only).
3. Scores it with ``bench/reference_model.yaml`` (spec.py's ten metrics as a model)
   and checks that the checksum equals the reference's.
4. Times, each in fresh processes, median of ``--runs``:
   (a) the reference ``eng_duckdb.py snapshot``;
   (b) healthscore scoring from reading the stored data to the materialised result
       (imports and the one-time expression build + compile reported apart);
   (c) ``healthscore score`` end to end, as a user runs it (parquet output); the first
       run of a fresh store also compiles and keeps the plan (reported apart), the
       median is of the runs after it;
   (h) ``healthscore --help``.
   With ``--baseline SRC`` (another checkout's ``src``, e.g. main's), (c) and (h) are
   also timed with healthscore imported from there, interleaved in the same runs.
5. Rescoring one account after appending one event: p50/p99 in ms.

Prints every figure and one ``RESULT {json}`` line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
REF = REPO.parent / "shared" / "bench-reference"
MODEL = HERE / "reference_model.yaml"
AS_OF = "2025-01-01"
PY = sys.executable
HS = str(Path(PY).with_name("healthscore"))

# generated file -> (table, column mapping)
LOADS = [
    ("accounts", "accounts", []),
    ("events", "usage_events", ["event_name=event"]),
    ("tickets", "tickets", []),
    ("invoices", "invoices", ["due_date=due_at", "paid_date=paid_at"]),
    ("surveys", "surveys", ["responded_at=ts"]),
]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_result(cmd: list[str], cwd=None) -> dict:
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=True)
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def child_score(db: str) -> None:
    """(b) in a fresh process: connect, build + compile (apart), execute (timed)."""
    t0 = time.perf_counter()
    import healthscore as hs

    sys.path.insert(0, str(REF))
    import spec

    t_import = time.perf_counter() - t0
    store = hs.connect(db, create=False)
    model = hs.load_model(MODEL)
    t0 = time.perf_counter()
    sql = store.compile(hs.score_expr(store, model, AS_OF))
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = store.execute_sql(sql)
    wall = time.perf_counter() - t0
    df = result.to_pandas()
    rec = {
        "wall_s": round(wall, 4),
        "import_s": round(t_import, 3),
        "build_compile_s": round(t_build, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "check": spec.checksum(df),
    }
    print("RESULT " + json.dumps(rec), flush=True)


def load_store(size: str, db: Path) -> float:
    data = Path("/tmp/perfdata") / size
    t0 = time.perf_counter()
    for file, table, maps in LOADS:
        cmd = [HS, "load", table, str(data / f"{file}.parquet"), "--db", str(db)]
        for m in maps:
            cmd += ["--map", m]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            sys.exit(f"load {table} failed:\n{out.stdout}{out.stderr}")
        print("  " + out.stdout.strip())
    return time.perf_counter() - t0


def rescore_latency(db: Path, n: int) -> dict:
    """Append one event to one account, rescore that account; p50/p99 of both steps."""
    import pyarrow as pa

    import healthscore as hs

    store = hs.connect(db)
    model = hs.load_model(MODEL)
    accounts = store.table("accounts").account_id.to_pyarrow().to_pylist()
    rng = random.Random(1)
    append_ms, rescore_ms = [], []
    base = datetime(2024, 12, 31)
    for i in range(n):
        acc = rng.choice(accounts)
        row = pa.table(
            {
                "event_id": [f"bench-{i}"],
                "account_id": [acc],
                "user_id": ["bench-user"],
                "event": ["login"],
                "ts": pa.array([base + timedelta(seconds=i)], pa.timestamp("us")),
                "quantity": [1.0],
            }
        )
        t0 = time.perf_counter()
        store.load("usage_events", row)
        t1 = time.perf_counter()
        res = hs.score(store, model, AS_OF, account_ids=[acc])
        t2 = time.perf_counter()
        assert res.num_rows == 1
        append_ms.append((t1 - t0) * 1000)
        rescore_ms.append((t2 - t1) * 1000)

    def pct(xs, q):
        xs = sorted(xs)
        return round(xs[min(len(xs) - 1, int(q * len(xs)))], 1)

    return {
        "rescore_p50_ms": pct(rescore_ms, 0.5),
        "rescore_p99_ms": pct(rescore_ms, 0.99),
        "append_p50_ms": pct(append_ms, 0.5),
        "append_p99_ms": pct(append_ms, 0.99),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("size", nargs="?", default="S", choices=["S", "L"])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--rescore", type=int, default=200)
    ap.add_argument("--db", help="copy this store, loaded with the reference data, instead")
    ap.add_argument("--baseline", help="also time (c) and (h) importing healthscore from this src")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child_score(a.child)
        return
    if not (Path("/tmp/perfdata") / a.size / "events.parquet").exists():
        print(f"generating reference data {a.size} ...")
        subprocess.run([PY, "gen.py", a.size], cwd=REF, check=True)
    work = Path(tempfile.mkdtemp(prefix="hs-bench-"))
    db = work / "bench.duckdb"
    env = {**os.environ, "HEALTHSCORE_CACHE_DIR": str(work / "cache")}
    if a.baseline:
        base_env = {
            **env,
            "HEALTHSCORE_CACHE_DIR": str(work / "cache-baseline"),
            "PYTHONPATH": str(Path(a.baseline).resolve()),
        }
    if a.db:
        print(f"copying the loaded store {a.db} to {db}")
        shutil.copyfile(a.db, db)
        t_load = None
    else:
        print(f"loading through `healthscore load` into {db}")
        t_load = load_store(a.size, db)
        print(f"  load total {t_load:.1f}s")

    def cli_score(env=env) -> float:
        t0 = time.perf_counter()
        subprocess.run(
            [
                HS,
                "score",
                "--as-of",
                AS_OF,
                "--model",
                str(MODEL),
                "--db",
                str(db),
                "--format",
                "parquet",
                "--out",
                str(work / "scores.parquet"),
            ],
            check=True,
            capture_output=True,
            env=env,
        )
        return time.perf_counter() - t0

    def cli_help(env=env) -> float:
        t0 = time.perf_counter()
        subprocess.run([HS, "--help"], check=True, capture_output=True, env=env)
        return time.perf_counter() - t0

    first = cli_score()  # a fresh cache: builds, compiles and keeps the plan
    if a.baseline:
        cli_score(base_env)
    ref, ours, e2e, helps, base_e2e, base_helps = [], [], [], [], [], []
    for _ in range(a.runs):
        ref.append(run_result([PY, "eng_duckdb.py", "snapshot", a.size], cwd=REF))
        ours.append(run_result([PY, __file__, a.size, "--child", str(db)]))
        if a.baseline:
            base_e2e.append(cli_score(base_env))
        e2e.append(cli_score())
        if a.baseline:
            base_helps.append(cli_help(base_env))
        helps.append(cli_help())
    same = ref[0]["check"] == ours[0]["check"]
    if not same:
        print(
            "CHECKSUM MISMATCH\n reference  ", ref[0]["check"], "\n healthscore", ours[0]["check"]
        )
    med = statistics.median
    a_s = med(r["wall_s"] for r in ref)
    b_s = med(r["wall_s"] for r in ours)
    c_s = med(e2e)
    lat = rescore_latency(db, a.rescore) if a.rescore else {}
    rec = {
        "size": a.size,
        "cores": os.cpu_count(),
        "runs": a.runs,
        "checksum_match": same,
        "a_reference_s": round(a_s, 3),
        "b_healthscore_s": round(b_s, 3),
        "c_cli_end_to_end_s": round(c_s, 3),
        "ratio_b_a": round(b_s / a_s, 2),
        "ratio_c_a": round(c_s / a_s, 2),
        "c_first_run_s": round(first, 3),
        "help_s": round(med(helps), 3),
        "load_avg_1min": os.getloadavg()[0],
        **(
            {
                "c_baseline_s": round(med(base_e2e), 3),
                "ratio_c_a_baseline": round(med(base_e2e) / a_s, 2),
                "help_baseline_s": round(med(base_helps), 3),
            }
            if a.baseline
            else {}
        ),
        "build_compile_s": med(r["build_compile_s"] for r in ours),
        "import_s": med(r["import_s"] for r in ours),
        "peak_rss_mb_b": max(r["peak_rss_mb"] for r in ours),
        "peak_rss_mb_reference": max(r["peak_rss_mb"] for r in ref),
        "load_s": None if t_load is None else round(t_load, 1),
        **lat,
    }
    print(f"checksum {'matches' if same else 'DIFFERS'}: {ours[0]['check']}")
    print(f"(a) reference eng_duckdb.py snapshot {a.size}: {a_s:.3f}s (median of {a.runs})")
    print(
        f"(b) healthscore scoring:                {b_s:.3f}s  ratio b/a {b_s / a_s:.2f}  "
        f"(+ build/compile {rec['build_compile_s']:.3f}s, imports {rec['import_s']:.2f}s)"
    )
    print(
        f"(c) healthscore score (CLI, end to end): {c_s:.3f}s  ratio c/a {c_s / a_s:.2f}  "
        f"(first run, compiling the plan: {first:.3f}s)"
    )
    if a.baseline:
        print(
            f"    baseline {a.baseline}: (c) {rec['c_baseline_s']:.3f}s  "
            f"ratio c/a {rec['ratio_c_a_baseline']:.2f}; (h) {rec['help_baseline_s']:.3f}s"
        )
    print(f"(h) healthscore --help: {rec['help_s']:.3f}s; load average {os.getloadavg()}")
    print(
        f"peak RSS: healthscore {rec['peak_rss_mb_b']:.0f} MB, "
        f"reference {rec['peak_rss_mb_reference']:.0f} MB"
    )
    if lat:
        print(
            f"rescore one account after appending one event: p50 {lat['rescore_p50_ms']} ms, "
            f"p99 {lat['rescore_p99_ms']} ms (append p50 {lat['append_p50_ms']} ms)"
        )
    print("RESULT " + json.dumps(rec))
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
