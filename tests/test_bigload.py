"""Loads of any size: rows stream into the store, checks run there as SQL, all or nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import healthscore as hs
from healthscore.sources.load import load_file

EVENTS = pa.schema(
    [
        ("event_id", pa.string()),
        ("account_id", pa.string()),
        ("user_id", pa.string()),
        ("event", pa.string()),
        ("ts", pa.timestamp("us")),
        ("quantity", pa.float64()),
    ]
)


def _events(ids: list[str], day: datetime = datetime(2025, 3, 1)) -> pa.RecordBatch:
    n = len(ids)
    return pa.RecordBatch.from_pydict(
        {
            "event_id": ids,
            "account_id": ["A1"] * n,
            "user_id": ["u1"] * n,
            "event": ["login"] * n,
            "ts": [day + timedelta(minutes=i) for i in range(n)],
            "quantity": [1.0] * n,
        },
        schema=EVENTS,
    )


def _state(store) -> tuple:
    """What a failed load must leave as it was: rows, watermark, and no staged tables."""
    rows = store.table("usage_events").to_pyarrow().sort_by("event_id")
    stages = [t for t in store.list_tables() if t.startswith("_stage")]
    return rows, store.watermarks()["usage_events"], stages


def test_duplicate_keys_across_batches_are_named_with_examples_and_nothing_is_written(
    fresh_store,
):
    before = _state(fresh_store)
    first = _events([f"e{i:03}" for i in range(100)])
    later = _events([f"e{i:03}" for i in range(30)], datetime(2025, 4, 1))  # 30 repeats
    stream = pa.RecordBatchReader.from_batches(EVENTS, [first, _events(["x"]), later])
    with pytest.raises(hs.StoreError) as e:
        fresh_store.load("usage_events", stream)
    assert str(e.value).startswith(
        "usage_events: 30 event_id values occur more than once in one load: 'e000', 'e001', 'e002'"
    )
    assert "'e019' ...; hint: each row needs its own key; nothing was loaded" in str(e.value)
    assert "'e020'" not in str(e.value)  # 20 examples, then "..."
    assert _state(fresh_store) == before


def test_a_stream_that_breaks_off_midway_loads_nothing(fresh_store):
    before = _state(fresh_store)

    def batches():
        yield _events(["n1", "n2"], datetime(2025, 6, 1))
        yield _events(["n3"], datetime(2025, 6, 2))
        raise OSError("connection to the source reset")

    stream = pa.RecordBatchReader.from_batches(EVENTS, batches())
    with pytest.raises(hs.StoreError, match="usage_events: the load failed, nothing was loaded"):
        fresh_store.load("usage_events", stream)
    assert _state(fresh_store) == before


def test_a_bad_row_at_the_end_of_a_big_file_loads_nothing(fresh_store, tmp_path):
    rows = _events([f"b{i}" for i in range(5000)]).to_pydict()
    rows["ts"][-1] = None  # the last row has no timestamp
    pq.write_table(pa.table(rows, schema=EVENTS), tmp_path / "events.parquet")
    before = _state(fresh_store)
    with pytest.raises(hs.SourceError, match=r"events.parquet: 1 invalid row, nothing loaded"):
        load_file(fresh_store, "usage_events", tmp_path / "events.parquet")
    assert _state(fresh_store) == before


def test_a_file_without_ids_reloads_idempotently_and_reports_its_steps(fresh_store, tmp_path):
    # 3,000 events, every one twice (exact duplicates are distinct events), no event_id
    one = _events([f"x{i}" for i in range(1500)]).to_pydict()
    del one["event_id"]
    one["account_id"] = [["A1", "A2", "NEW"][i % 3] for i in range(1500)]
    rows = {k: v + v for k, v in one.items()}
    pq.write_table(pa.table(rows), tmp_path / "events.parquet")
    steps = []
    first = load_file(
        fresh_store,
        "usage_events",
        tmp_path / "events.parquet",
        progress=lambda step, done: steps.append((step, done)),
    )
    assert (first.inserted, first.updated, first.unchanged) == (3000, 0, 0)
    assert first.unknown_accounts == 1000  # account NEW is not in the accounts table
    second = load_file(fresh_store, "usage_events", tmp_path / "events.parquet")
    assert str(second) == "usage_events: 0 inserted, 0 updated, 3000 unchanged, 0 rejected"
    assert fresh_store.count("usage_events") == 12 + 3000
    names = [s for s, _ in steps]
    assert names[0] == "reading events.parquet"
    assert "checking 3,000 rows" in names and "staging rows (3,000)" in names
    assert "writing 3,000 rows" in names and steps[-1] == ("loaded", 1.0)


CHILD = """
import json, resource, sys
import pyarrow as pa
import healthscore as hs
from healthscore.sources.load import load_file

store = hs.connect(sys.argv[1])
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
result = load_file(store, "usage_events", sys.argv[2])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"inserted": result.inserted, "grew_mb": (peak - base) / 1024}))
"""


def test_a_big_file_loads_within_the_memory_limit(tmp_path):
    """The valid rows never sit in memory whole: with a load limited to 256 MB, a file
    of 200 MB of text loads with the process growing by about 360 MB (the rows read
    into one Arrow table, as before, grew it by 940 MB)."""
    import duckdb

    events = tmp_path / "events.parquet"
    duckdb.execute(  # 200,000 events with a 1,000-character note each (compresses well)
        "COPY (SELECT 'E' || i AS event_id, 'A' || (i % 50) AS account_id, 'u' AS user_id, "
        "'login' AS event, TIMESTAMP '2025-01-01' + to_seconds(i) AS ts, "
        "repeat(chr(65 + (i % 26)::INT), 1000) AS note FROM range(200000) t(i)) "
        f"TO '{events}' (FORMAT parquet)"
    )
    env = dict(os.environ, HEALTHSCORE_LOAD_MEMORY="256MB")
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path / "s.duckdb"), str(events)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["inserted"] == 200_000
    assert found["grew_mb"] < 600, found


def _key_indexes(store, table: str) -> list[str]:
    sql = "SELECT index_name FROM duckdb_indexes() WHERE table_name = $1"
    return [r[0] for r in store.con.con.execute(sql, [table]).fetchall()]


def test_a_load_bigger_than_its_table_drops_the_append_index_which_the_next_append_remakes(
    fresh_store,
):
    """Keeping DuckDB's key index up to date row by row cost a 10 M-row load 10x its
    time; a load writing more rows than the table holds drops it, and the next append
    makes it again and still tells new, changed and unchanged rows apart."""
    fresh_store.append("usage_events", pa.Table.from_batches([_events(["first"])]))
    assert _key_indexes(fresh_store, "usage_events")
    stored = fresh_store.count("usage_events")
    small = pa.Table.from_batches([_events([f"s{i}" for i in range(stored // 2)])])
    fresh_store.load("usage_events", small)
    assert _key_indexes(fresh_store, "usage_events"), "a small load keeps the index"
    ids = [f"big{i:05}" for i in range(2 * (stored + len(small)))]
    big = fresh_store.load("usage_events", pa.Table.from_batches([_events(ids)]))
    assert big.inserted == len(ids)
    assert not _key_indexes(fresh_store, "usage_events")
    again = _events([ids[0], ids[1], "after"]).to_pydict()
    again["quantity"][1] = 9.0
    r = fresh_store.append("usage_events", pa.table(again, schema=EVENTS))
    assert (r.inserted, r.updated, r.unchanged) == (1, 1, 1)
    assert _key_indexes(fresh_store, "usage_events")
    assert fresh_store.count("usage_events") == stored + len(small) + len(ids) + 1


@pytest.fixture
def empty_store(tmp_path):
    """A new store: its tables exist and hold no row (a first load goes the direct way)."""
    s = hs.connect(tmp_path / "first.duckdb")
    yield s
    s.close()


def test_a_first_load_with_duplicate_keys_in_different_chunks_writes_nothing(
    empty_store, monkeypatch
):
    """Into an empty table the rows are written chunk by chunk and checked after: a key
    repeated in a later chunk is still found, and the chunks written are rolled back."""
    import healthscore.store as store_module

    monkeypatch.setattr(store_module, "LOAD_CHUNK_ROWS", 50)
    first = _events([f"e{i:03}" for i in range(100)])
    later = _events(["e007", "e042", "z"], datetime(2025, 4, 1))
    stream = pa.RecordBatchReader.from_batches(EVENTS, [first, later])
    with pytest.raises(hs.StoreError) as e:
        empty_store.load("usage_events", stream)
    assert str(e.value).startswith(
        "usage_events: 2 event_id values occur more than once in one load: 'e007', 'e042'"
    )
    assert empty_store.count("usage_events") == 0
    assert "usage_events" not in empty_store.watermarks()
    # the same rows without the repeats load, and a second load of them changes nothing
    ok = pa.Table.from_batches([first, _events(["z"], datetime(2025, 4, 1))])
    assert empty_store.load("usage_events", ok).inserted == 101
    again = empty_store.load("usage_events", ok)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 101)


def test_a_first_load_whose_stream_breaks_off_after_a_chunk_was_written_loads_nothing(
    empty_store, monkeypatch
):
    import healthscore.store as store_module

    monkeypatch.setattr(store_module, "LOAD_CHUNK_ROWS", 2)

    def batches():
        yield _events(["n1", "n2"], datetime(2025, 6, 1))
        yield _events(["n3", "n4"], datetime(2025, 6, 2))
        raise OSError("connection to the source reset")

    stream = pa.RecordBatchReader.from_batches(EVENTS, batches())
    with pytest.raises(hs.StoreError, match="usage_events: the load failed, nothing was loaded"):
        empty_store.load("usage_events", stream)
    assert empty_store.count("usage_events") == 0
    assert "usage_events" not in empty_store.watermarks()


def test_a_first_load_writes_each_chunk_by_account(empty_store, monkeypatch, tmp_path):
    """The rescorer reads one account's row groups: a first load (no event ids in the
    file) writes each chunk clustered by account, and reports what it did."""
    import healthscore.store as store_module
    import healthscore.store.scratch as scratch

    monkeypatch.setattr(store_module, "LOAD_CHUNK_ROWS", 600)
    monkeypatch.setattr(scratch, "BATCH_ROWS", 100)  # the file's rows come in 12 batches
    n = 1200
    rows = {
        "account_id": [f"A{(i * 7) % 5}" for i in range(n)],
        "user_id": ["u1"] * n,
        "event": ["login"] * n,
        "ts": [datetime(2025, 3, 1) + timedelta(minutes=(i * 13) % n) for i in range(n)],
        "quantity": [1.0] * n,
    }
    pq.write_table(pa.table(rows), tmp_path / "events.parquet")
    steps = []
    first = load_file(
        empty_store,
        "usage_events",
        tmp_path / "events.parquet",
        progress=lambda step, done: steps.append(step),
    )
    assert (first.inserted, first.unknown_accounts) == (n, n)  # no accounts loaded
    assert "writing rows (1,200)" in steps and "checking keys" in steps
    assert empty_store.watermarks()["usage_events"] == max(rows["ts"])
    stored = empty_store.con.con.execute(
        "SELECT account_id FROM usage_events ORDER BY rowid"
    ).fetchall()
    chunks = [stored[i : i + 600] for i in range(0, n, 600)]
    assert all(chunk == sorted(chunk) for chunk in chunks)
    assert stored != sorted(stored)  # two chunks, each sorted on its own
    again = load_file(empty_store, "usage_events", tmp_path / "events.parquet")
    assert str(again) == f"usage_events: 0 inserted, 0 updated, {n} unchanged, 0 rejected"


def test_ids_a_file_supplies_for_some_rows_and_lacks_for_others_are_checked_by_the_store(
    empty_store, tmp_path
):
    """A file that mixes supplied and derived event ids: only the store can see a supplied
    id that equals one derived for another row, so it still counts distinct keys."""
    rows = _events(["x", "y"]).to_pydict()
    rows["event_id"] = [None, None]
    pq.write_table(pa.table(rows, schema=EVENTS), tmp_path / "derived.parquet")
    load_file(empty_store, "usage_events", tmp_path / "derived.parquet")
    derived = sorted(empty_store.table("usage_events").to_pyarrow()["event_id"].to_pylist())
    # a second store: the first row's id is taken by a supplied id on another row
    other = hs.connect(tmp_path / "other.duckdb")
    mixed = _events(["x", "y", derived[0]]).to_pydict()
    mixed["event_id"] = [None, None, derived[0]]
    mixed["event"][2] = "logout"
    pq.write_table(pa.table(mixed, schema=EVENTS), tmp_path / "mixed.parquet")
    with pytest.raises(hs.StoreError, match="1 event_id values occur more than once"):
        load_file(other, "usage_events", tmp_path / "mixed.parquet")
    assert other.count("usage_events") == 0
    other.close()


KILLED = """
import sys, time, datetime as dt
import pyarrow as pa
import healthscore as hs
import healthscore.store as store_module

store_module.LOAD_CHUNK_ROWS = 2
store = hs.connect(sys.argv[1])
schema = pa.schema([("event_id", pa.string()), ("account_id", pa.string()),
                    ("ts", pa.timestamp("us"))])

def batches():
    for i in range(3):
        yield pa.RecordBatch.from_pydict(
            {"event_id": [f"k{i}a", f"k{i}b"], "account_id": ["A1", "A1"],
             "ts": [dt.datetime(2025, 1, 1, i), dt.datetime(2025, 1, 1, i, 30)]}, schema=schema)
    print("WRITTEN", flush=True)
    time.sleep(120)

store.load("usage_events", pa.RecordBatchReader.from_batches(schema, batches()))
"""


def test_a_first_load_killed_midway_leaves_the_table_empty_and_the_next_load_cleans_up(tmp_path):
    """kill -9 after chunks were committed: the table is still empty, and the next first
    load of it drops the table the killed one was writing into."""
    db = tmp_path / "killed.duckdb"
    hs.connect(db).close()
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED, str(db)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "WRITTEN"
    finally:
        child.kill()
        child.wait()
    store = hs.connect(db)
    assert store.count("usage_events") == 0
    leftovers = [t for t in store.list_tables() if t.startswith("_load_")]
    assert leftovers, "the killed load's own table is still there"
    assert store.load("usage_events", pa.Table.from_batches([_events(["e1"])])).inserted == 1
    assert not [t for t in store.list_tables() if t.startswith("_load_")]
    store.close()


def test_the_next_chunk_is_read_while_one_is_written_and_stops_when_the_writer_does():
    """A first load reads its next chunk on a thread of its own while the store writes
    the one before. The chunks come whole and in order, an error of the reader reaches
    the writer, and a writer that stops early stops the reader at its next batch
    (nothing reads a file whose reading the load has left)."""
    import threading

    from healthscore.store.backend import _read_ahead

    read_on = []

    def batches(n, fail_at=None, pause=0.0):
        for i in range(n):
            if i == fail_at:
                raise OSError("connection to the source reset")
            read_on.append(threading.current_thread().name)
            time.sleep(pause)
            yield _events([f"e{i}-{j}" for j in range(10)])

    stream = pa.RecordBatchReader.from_batches(EVENTS, batches(7))
    chunks = list(_read_ahead(stream, 20))
    assert [c.num_rows for c in chunks] == [20, 20, 20, 10]
    assert pa.concat_tables(chunks).column("event_id").to_pylist() == [
        f"e{i}-{j}" for i in range(7) for j in range(10)
    ]
    assert read_on and all(name.startswith("read-ahead") for name in read_on)

    with pytest.raises(OSError, match="connection to the source reset"):
        list(_read_ahead(pa.RecordBatchReader.from_batches(EVENTS, batches(7, 3)), 20))

    read_on.clear()  # chunks of 50 batches, each batch read in 5 ms
    stream = pa.RecordBatchReader.from_batches(EVENTS, batches(1000, pause=0.005))
    ahead = _read_ahead(stream, 500)
    assert next(ahead).num_rows == 500
    ahead.close()  # the writer failed: the thread is waited for, the next chunk left unread
    assert 50 <= len(read_on) < 90
    assert not [t for t in threading.enumerate() if t.name.startswith("read-ahead")]


def test_a_second_ctrl_c_while_the_reader_stops_still_waits_for_it():
    """Ctrl-C pressed again (or SIGTERM after it) while a stopped load waits for its
    reading thread to finish its batch: the thread is still waited for, and the Ctrl-C
    is raised after. (The wait was a thread join, which a Ctrl-C broke off and which
    Python then took for done: the load's caller closed the scratch database under the
    thread, and the process died at exit, "Fatal Python error: PyGILState_Release".)"""
    import signal
    import threading

    from healthscore.store.backend import _read_ahead

    reads: list[float] = []

    def batches():
        for i in range(100):
            time.sleep(0.2)  # a slow batch: a heavy query, a slow disk
            reads.append(time.monotonic())
            yield _events([f"e{i}-{j}" for j in range(10)])

    ahead = _read_ahead(pa.RecordBatchReader.from_batches(EVENTS, batches()), 20)
    assert next(ahead).num_rows == 20  # the thread goes on to the next chunk

    def again(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, again)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)  # while the stop waits for the thread
        with pytest.raises(KeyboardInterrupt):
            ahead.close()  # the first Ctrl-C stopped the writer
        left = time.monotonic()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    time.sleep(0.5)
    assert not [t for t in reads if t > left], "the stream was read after the load left it"
    assert not [t for t in threading.enumerate() if t.name.startswith("read-ahead")]
