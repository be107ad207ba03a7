"""Zero loss: every row log() returned survives kill -9, os._exit and a segfault, and a kill during resume.

The victims log from two threads a mix of packed rows, strings, ``None``, nested
dicts and explicit steps, and report each row on stdout right after its
``log()`` returned.  After each death ``read()`` must hold, for each thread,
exactly that thread's rows ``0 .. m-1`` with every reported row among them
(nothing torn, nothing invented, nothing lost), and once the version is opened
again the published files hold the same rows for pandas, pyarrow, Polars and DuckDB.
"""

from __future__ import annotations

import random
import signal
import struct
import time
from pathlib import Path
from typing import Any

import numpy as np

import test_tube
from faultlib import Victim, count, run, same, script
from test_tube._engine import _ring

ROWS = '''
def trow(t, j):
    """Row j of thread t, and its explicit step (None: automatic)."""
    k = j % 10
    if k == 3:
        return {"t": t, "j": j, "s": "%d,'%d'\\n" % (t, j), "x": j * 0.5}, None  # a string: the slow path
    if k == 5:
        return {"t": t, "j": j, "x": None}, None  # None: the slow path
    if k == 7:
        return {"t": t, "j": j, "m": {"a": j * 0.25, "b": j % 3 == 0}}, None  # nested
    if k in (2, 8):
        return {"t": t, "j": j, "x": j * 0.5}, 10**9 * (t + 1) + j  # an explicit step
    return {"t": t, "j": j, "x": j * 0.5}, None
'''

VICTIM = ROWS + """
root, seed, ending = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rng = random.Random(seed)
log_dir = os.path.join(root, "z", "version_0")
start = [0, 0]
if os.path.isdir(log_dir):
    table = test_tube.read(log_dir)
    for t, j in zip(table.column("t").to_pylist(), table.column("j").to_pylist()):
        start[t] = max(start[t], j + 1)
say("starting", *start)
exp = Experiment(name="z", save_dir=root, version=0, record_git=False, flush_interval=rng.choice([0.01, 0.2, 2.0]),
                 max_queue_rows=rng.choice([64, 4096, 65536]))
say("open")
stop_at = rng.randrange(200, 20000)
out = sys.stdout.fileno()

def work(t):
    j = start[t]
    while True:
        row, step = trow(t, j)
        exp.log(row, step=step)
        os.write(out, b"r %d %d\\n" % (t, j))  # reported only once log() returned
        j += 1
        if t == 0 and j - start[0] == stop_at and ending != "kill":
            if ending == "exit":
                os._exit(3)
            import ctypes
            ctypes.string_at(0)  # a segfault

threads = [threading.Thread(target=work, args=(t,), daemon=True) for t in (0, 1)]
for th in threads:
    th.start()
threading.Event().wait()
"""

FINISH = ROWS + """
root = sys.argv[1]
log_dir = os.path.join(root, "z", "version_0")
with Experiment(name="z", save_dir=root, version=0, record_git=False) as exp:
    pass
say("done", test_tube.read(log_dir).num_rows)
"""


def _expected(t: int, j: int) -> tuple[dict[str, Any], int | None]:
    env: dict[str, Any] = {}
    exec(ROWS, env)
    return env["trow"](t, j)  # type: ignore[no-any-return]


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, dict):
            flat.update({f"{key}/{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def check_threads(table: Any, reported: list[int]) -> list[int]:
    """Each thread's rows are exactly its rows 0..m-1 with every reported one; returns the m per thread."""
    data = table.to_pydict()
    names = table.column_names
    kept = [0, 0]
    for i, (t, j) in enumerate(zip(data["t"], data["j"])):
        assert j == kept[t], f"thread {t}: row {j} where row {kept[t]} was due (a row lost, doubled or reordered)"
        kept[t] += 1
        row, step = _expected(t, j)
        flat = _flat(row)
        for name in names[2:]:
            assert same(data[name][i], flat.get(name)), f"thread {t} row {j} column {name!r}: {data[name][i]!r}"
        if step is not None:
            assert data["step"][i] == step, f"thread {t} row {j}: step {data['step'][i]}, logged {step}"
    for t in (0, 1):
        assert kept[t] >= reported[t], f"thread {t}: {reported[t]} rows reported after log() returned, {kept[t]} kept"
        # At most the row whose log() had returned but whose report was not yet written.
        assert kept[t] <= reported[t] + 1, f"thread {t}: {kept[t]} rows kept, only {reported[t]} reported"
    return kept


def _reported(v: Victim, start: list[int]) -> list[int]:
    done = list(start)
    for line in v.lines:
        if line.startswith("r "):
            _, t, j = line.split()
            done[int(t)] = max(done[int(t)], int(j) + 1)
    return done


def check_published(log_dir: Path, n: int) -> None:
    """The completed files open in pandas, pyarrow, Polars and DuckDB with every row of read()."""
    import duckdb
    import pandas as pd
    import polars as pl
    import pyarrow.parquet as pq

    table = test_tube.read(log_dir)
    assert table.num_rows == n
    csv, parquet = log_dir / "metrics.csv", log_dir / "metrics.parquet"
    df = pd.read_csv(csv)
    assert len(df) == n and list(df["j"]) == table.column("j").to_pylist()
    assert pl.read_csv(csv, infer_schema_length=None).height == n
    assert duckdb.sql(f"SELECT count(*) FROM read_csv('{csv}')").fetchall() == [(n,)]
    written = pq.read_table(parquet)
    assert written.column("j").to_pylist() == table.column("j").to_pylist()
    assert written.column("step").to_pylist() == table.column("step").to_pylist()
    assert pl.read_parquet(parquet).height == n
    assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{parquet}')").fetchall() == [(n,)]


def test_every_row_log_returned_survives_kill_9_and_a_kill_during_resume(tmp_path: Path) -> None:
    """Random kill -9 (a dozen; 200 with --full), some while the version is being resumed: zero rows lost."""
    kills = count(12, 200)
    chain = 4 if kills < 40 else 10
    victim = script(tmp_path, VICTIM)
    finish = script(tmp_path, FINISH, "finish.py")
    rng = random.Random(20261206)
    stats = {"kills": 0, "during_resume": 0, "reported": 0, "kept": 0}
    root = tmp_path
    kept = [0, 0]
    for k in range(kills):
        if k % chain == 0:
            root = tmp_path / f"chain{k // chain}"
            kept = [0, 0]
        v = Victim(victim, root, rng.randrange(10**9), "kill")
        line = v.expect("starting", 60)
        assert [int(x) for x in line.split()[1:]] == kept, "a resumed run must see every row kept before"
        if rng.random() < 0.25:
            time.sleep(rng.uniform(0, 0.3))  # while the constructor recovers the ring and rebuilds the files
            stats["during_resume"] += 1
        else:
            v.expect("open", 60)
            for _ in range(rng.randint(1, 3000)):
                v.next_line(60)
            time.sleep(rng.uniform(0, 0.01))
        v.signal(signal.SIGKILL)
        assert v.wait(30) == -signal.SIGKILL, v.stderr()
        reported = _reported(v, kept)
        log_dir = root / "z" / "version_0"
        if log_dir.exists():
            kept = check_threads(test_tube.read(log_dir), reported)
        else:
            assert reported == [0, 0]
        stats["kills"] += 1
        stats["reported"] += sum(reported)
        stats["kept"] += sum(kept)
        if k % chain == chain - 1 or k == kills - 1:
            done = run(finish, root, timeout=120)
            assert done.returncode == 0, done.stderr
            assert check_threads(test_tube.read(log_dir), kept) == kept
            check_published(log_dir, sum(kept))
            assert not (log_dir / "_ring.tt").exists(), "a closed run keeps no ring file"
    print("ring kills:", stats)


def test_os_exit_and_a_segfault_lose_no_returned_row(tmp_path: Path) -> None:
    """os._exit() from a logging thread and a segfault in C code: every reported row is read back."""
    victim = script(tmp_path, VICTIM)
    finish = script(tmp_path, FINISH, "finish.py")
    for k, (ending, code) in enumerate([("exit", 3), ("segv", -signal.SIGSEGV), ("exit", 3), ("segv", -signal.SIGSEGV)]):
        root = tmp_path / f"{ending}{k}"
        v = Victim(victim, root, 1000 + k, ending)
        v.read_to_end(60)
        assert v.wait(60) == code, v.stderr()
        log_dir = root / "z" / "version_0"
        kept = check_threads(test_tube.read(log_dir), _reported(v, [0, 0]))
        assert kept[0] >= 200
        done = run(finish, root, timeout=120)
        assert done.returncode == 0, done.stderr
        check_published(log_dir, sum(kept))


def test_the_zeros_of_a_fresh_ring_are_not_the_first_row(tmp_path: Path) -> None:
    """Slot 0 of a new ring holds number 0 at both ends before anything is stored: it is not whole until a row is.

    The writer takes as soon as a row's number is drawn; taking that zeroed slot as
    whole dropped the session's first row while log() still went on to store it.
    """
    ring = _ring.Ring(str(tmp_path / _ring.FILE), 16, 1 << 20)
    assert ring.whole_run(0, 1) == 0
    ring.skip(0)  # a first call that raised: its slot is marked, so the writer goes past it
    assert ring.whole_run(0, 1) == 1
    fresh = _ring.Ring(str(tmp_path / _ring.FILE), 16, 1 << 20)
    fresh.mark(0, _ring.SLOW, 0, 1_000)
    assert fresh.whole_run(0, 2) == 1


def test_a_ring_with_a_torn_and_a_stale_record_is_recovered_up_to_its_whole_records(tmp_path: Path) -> None:
    """Slots of the previous lap, a record torn mid-store and a torn var record are never read as rows."""
    log_dir = tmp_path / "run"
    log_dir.mkdir()
    ring = _ring.Ring(str(log_dir / _ring.FILE), 16, 1 << 20)
    from test_tube._engine._fastpath import PackedShape

    shape = PackedShape(1, ("x", "n"), "dq")
    assert ring.put_shape(_ring.shape_payload(1, shape.names, shape.codes))

    def put(seq: int) -> None:
        shape.packer.pack_into(ring.slots, (seq & ring.mask) * _ring.SLOT, seq, 100 + seq, 1_000 * seq, 1,
                               seq * 0.5, seq, seq)

    for seq in range(21):  # two laps of a 16-slot ring: slots 0..4 hold 16..20, slots 5..15 the first lap
        put(seq)
    # The journal holds rows below 16 (a commit), so slots 5..15 are stale records of the previous lap.
    ring.write_state(_ring.State(0, 16, 0, 0))
    # Row 19 is a string row: its slot says so and its var record holds it.
    ring.mark(19, _ring.SLOW, 119, 19_000)
    ring.put_var(_ring.var_payload(19, 119, 19_000, ("s",), ("text",)))
    # Row 20: killed in the middle of its store (the new seq at the front, the old lap's at the end).
    struct.pack_into("<qqq", ring.slots, (20 & ring.mask) * _ring.SLOT, 20, 120, 20_000)
    struct.pack_into("<q", ring.slots, (20 & ring.mask) * _ring.SLOT + _ring.TRAILER_AT, 4)
    # Row 21: a string row killed while its var record was being written (a torn payload).
    ring.put_var(_ring.var_payload(21, 121, 21_000, ("s",), ("never whole",)))
    at = ring.var_at + ring.var_pos - 8
    ring.view[at] = ring.view[at] ^ 0xFF
    ring.close(remove=False)
    table = test_tube.read(log_dir)
    assert table.column("step").to_pylist() == [116, 117, 118, 119]
    assert table.column("x").to_pylist() == [8.0, 8.5, 9.0, None]
    assert table.column("n").to_pylist() == [16, 17, 18, None]
    assert table.column("s").to_pylist() == [None, None, None, "text"]
    created = table.column("created_at").cast("int64").to_numpy()
    assert (created == np.array([16, 17, 18, 19])).all()  # ns 16_000 is 16 µs


SELF_KILL = ROWS + """
root, n = sys.argv[1], int(sys.argv[2])
exp = Experiment(name="z", save_dir=root, record_git=False, flush_interval=3600)
for j in range(n):
    row, step = trow(0, j)
    row["t"] = 0
    exp.log(row, step=step)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_after_a_kill_runs_and_the_command_line_see_every_row(tmp_path: Path) -> None:
    """runs(), test-tube show and test-tube tail of a killed run count and print its ring's rows."""
    import subprocess
    import sys

    n = 3000
    proc = run(script(tmp_path, SELF_KILL), tmp_path, n, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    log_dir = tmp_path / "z" / "version_0"
    assert (log_dir / "_ring.tt").exists()
    assert check_threads(test_tube.read(log_dir), [n, 0]) == [n, 0]
    table = test_tube.runs(tmp_path)
    assert table.column("rows").to_pylist() == [n] and table.column("status").to_pylist() == ["crashed"]
    cli = [sys.executable, "-c", "import sys; from test_tube._app._cli import main; sys.exit(main())"]
    tail = subprocess.run([*cli, "tail", str(log_dir), "--rows", "2"], capture_output=True, text=True, timeout=60)
    last_j = f"{n - 1}"
    assert last_j in tail.stdout.splitlines()[-1], tail.stdout + tail.stderr
    show = subprocess.run([*cli, "show", str(log_dir)], capture_output=True, text=True, timeout=60)
    assert str(n) in show.stdout, show.stdout + show.stderr
