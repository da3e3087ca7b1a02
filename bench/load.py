"""Loading benchmark: ``healthscore load usage_events`` of one big Parquet file (S or L).

    python bench/load.py [S] [L] [--appends 50] [--keep] [--steps] [--no-reload]

For each size, with the reference data of ../shared/bench-reference (``gen.py``, Parquet
under /tmp/perfdata, generated if missing), in a fresh DuckDB store:

1. ``healthscore load accounts`` (untimed: the accounts the events refer to);
2. (load) ``healthscore load usage_events events.parquet --map event_name=event`` in a
   fresh process: wall seconds, rows per second, peak RSS (the child's own, from
   ``wait4``); the file has no ``event_id``, so ids are derived from the rows;
3. (reload) the same command again: it must report ``0 inserted, 0 updated, N
   unchanged`` (idempotent);
4. (ref) the reference: plain DuckDB ``CREATE TABLE AS SELECT * FROM read_parquet(...)``
   into a fresh file, in a fresh process (no checks, no ids, no comparison);
5. (append, S only) ``Store.load`` of one event into the loaded store, ``--appends``
   times in one process: p50/p99 in ms.

With ``--steps`` the first load runs ``healthscore.api.load_table`` in the child instead
of the command (the same work) and prints the seconds and peak RSS of each step it
reports (reading and checks, writing, checking keys). ``--no-reload`` leaves out (reload).

Prints every figure and one ``RESULT {json}`` line. The stores are deleted after unless
``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REF = HERE.parent.parent / "shared" / "bench-reference"
PY = sys.executable
HS = str(Path(PY).with_name("healthscore"))
DATA = Path("/tmp/perfdata")

REFERENCE = """
import sys, time, duckdb
t0 = time.perf_counter()
con = duckdb.connect(sys.argv[2])
con.execute("CREATE TABLE events AS SELECT * FROM read_parquet(?)", [sys.argv[1]])
con.close()
print("SECONDS", time.perf_counter() - t0)
"""

STEPS = """
import re, resource, sys, time
import healthscore as hs
from healthscore.api import load_table
from healthscore.sources import LoadSpec

def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

def cpu():
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime

store = hs.connect(sys.argv[1])
t0 = last = time.perf_counter()
last_cpu = cpu()
now = None
def line(t, c):
    return f"STEP {t - last:8.1f} s {c - last_cpu:8.1f} cpu s  peak {peak():6.0f} MB  {now}"
def progress(step, fraction):
    global now, last, last_cpu
    name = re.sub(r"[0-9][0-9,]*", "N", step)
    if name != now:
        t, c = time.perf_counter(), cpu()
        if now is not None:
            print(line(t, c), flush=True)
        now, last, last_cpu = name, t, c
result = load_table(store, "usage_events", sys.argv[2],
                    LoadSpec(mapping={"event_name": "event"}), progress=progress)
print(line(time.perf_counter(), cpu()))
print(result)
"""

APPEND = """
import sys, time, datetime as dt, pyarrow as pa, healthscore as hs
store = hs.connect(sys.argv[1], create=False)
times = []
for i in range(int(sys.argv[2])):
    row = pa.table({"event_id": [f"bench-{i}"], "account_id": ["1"], "user_id": ["u"],
                    "event": ["login"], "quantity": [1.0],
                    "ts": pa.array([dt.datetime(2024, 12, 31) + dt.timedelta(seconds=i)],
                                   pa.timestamp("us"))})
    t0 = time.perf_counter()
    store.load("usage_events", row)
    times.append((time.perf_counter() - t0) * 1000)
times.sort()
print("APPEND", times[len(times) // 2], times[min(len(times) - 1, int(0.99 * len(times)))])
"""


def run(cmd: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """Wall seconds, the child's own peak RSS in MB, and its output."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - t0
        out.seek(0)
        text = out.read()
    if proc.returncode:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{text}")
    return seconds, usage.ru_maxrss / 1024, text


def ensure_data(size: str) -> Path:
    folder = DATA / size
    if not (folder / "events.parquet").exists():
        print(f"generating {size} ...", flush=True)
        subprocess.run([PY, str(REF / "gen.py"), size], check=True, cwd=REF)
    return folder


def bench(size: str, appends: int, keep: bool, steps: bool = False, reload: bool = True) -> dict:
    folder = ensure_data(size)
    events = folder / "events.parquet"
    work = Path(tempfile.mkdtemp(prefix=f"hs-load-{size}-", dir="/tmp"))
    db = work / "store.duckdb"
    try:
        run([HS, "load", "accounts", str(folder / "accounts.parquet"), "--db", str(db)])
        load = [HS, "load", "usage_events", str(events), "--map", "event_name=event"]
        load += ["--db", str(db)]
        first = [PY, "-c", STEPS, str(db), str(events)] if steps else load
        t_load, rss_load, out_load = run(first)
        rows = int(re.search(r"(\d+) inserted", out_load).group(1))
        for line in out_load.splitlines():
            if line.startswith("STEP "):
                print(f"  {size} step {line[5:]}", flush=True)
        summary = next(line for line in out_load.splitlines() if "inserted" in line)
        print(f"  {size} load:   {summary}", flush=True)
        rec = {
            "size": size,
            "rows": rows,
            "load_s": round(t_load, 1),
            "load_rows_per_s": round(rows / t_load),
            "load_peak_rss_mb": round(rss_load),
            "store_mb": round(db.stat().st_size / 2**20),
        }
        if reload:
            t_reload, rss_reload, out_reload = run(load)
            print(f"  {size} reload: {out_reload.strip().splitlines()[0]}", flush=True)
            if f"0 inserted, 0 updated, {rows} unchanged" not in out_reload:
                sys.exit(f"reload was not idempotent: {out_reload}")
            rec |= {
                "reload_s": round(t_reload, 1),
                "reload_rows_per_s": round(rows / t_reload),
                "reload_peak_rss_mb": round(rss_reload),
            }
        t_ref, rss_ref, out_ref = run([PY, "-c", REFERENCE, str(events), str(work / "ref.db")])
        rec |= {
            "ref_s": round(t_ref, 1),
            "ref_peak_rss_mb": round(rss_ref),
            "load_vs_ref": round(t_load / t_ref, 2),
        }
        if appends and size == "S":
            _, _, out = run([PY, "-c", APPEND, str(db), str(appends)])
            p50, p99 = map(float, out.split("APPEND")[1].split())
            rec |= {"append_p50_ms": round(p50, 1), "append_p99_ms": round(p99, 1)}
        return rec
    finally:
        if keep:
            print(f"  kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("sizes", nargs="*", default=["S"], choices=["S", "L"])
    ap.add_argument("--appends", type=int, default=50)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--steps", action="store_true", help="time each step of the first load")
    ap.add_argument("--no-reload", action="store_true", help="leave out the reload")
    a = ap.parse_args()
    results = []
    for size in a.sizes:
        load = os.getloadavg()[0]
        rec = bench(size, a.appends, a.keep, a.steps, not a.no_reload)
        rec["loadavg_before"] = round(load, 1)
        rec["loadavg_after"] = round(os.getloadavg()[0], 1)
        for key, value in rec.items():
            print(f"  {key:22} {value}")
        results.append(rec)
    print("RESULT " + json.dumps(results))


if __name__ == "__main__":
    main()
