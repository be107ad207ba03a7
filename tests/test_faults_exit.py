"""Exit paths, signals and a stuck or slow disk: every row kept, exit codes preserved, no exit blocks."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

import test_tube
from faultlib import Victim, check_prefix, check_readers, count, rss_helper, run, script

OPEN = """
root = sys.argv[1]
exp = Experiment(name="e", save_dir=root, record_git=False, autosave=False, flush_interval=60)
"""


@pytest.mark.parametrize(
    ("ending", "rc"),
    [
        ("pass", 0),
        ("sys.exit(3)", 3),
        ("raise RuntimeError('boom')", 1),
    ],
    ids=["end-of-script", "sys-exit-3", "uncaught-exception"],
)
def test_exit_without_close_keeps_every_row(tmp_path: Path, ending: str, rc: int) -> None:
    """End of script, sys.exit(n) and an uncaught exception keep all rows and the exit code."""
    body = OPEN + "for i in range(5000):\n    exp.log(row(i))\n" + ending + "\n"
    proc = run(script(tmp_path, body), tmp_path, timeout=60)
    assert proc.returncode == rc, proc.stderr
    log_dir = tmp_path / "e" / "version_0"
    assert check_prefix(log_dir) == 5000
    check_readers(log_dir, 5000, complete=True)
    meta = json.loads((log_dir / "meta.experiment").read_text())
    assert meta["status"] == ("failed" if "raise" in ending else "finished")
    assert "final flush failed" not in proc.stderr


LOOP = """
kind = sys.argv[2]
i = 0
try:
    while True:
        exp.log(row(i))
        i += 1
        if i == 3000:
            say("ready")
except BaseException as exc:
    say("stopped", i, type(exc).__name__)
    raise
"""


@pytest.mark.parametrize(
    ("sig", "rc"), [(signal.SIGINT, -signal.SIGINT), (signal.SIGTERM, 128 + signal.SIGTERM)], ids=["ctrl-c", "sigterm"]
)
def test_signal_during_log_keeps_every_row(tmp_path: Path, sig: int, rc: int) -> None:
    """Ctrl-C or SIGTERM while the main thread is inside log() keeps every row logged and the signal's exit code."""
    path = script(tmp_path, OPEN + LOOP)
    for attempt in range(count(3, 20)):
        root = tmp_path / f"r{attempt}"
        v = Victim(path, root, "plain")
        v.expect("ready")
        v.signal(sig)
        started = time.monotonic()
        assert v.wait(30) == rc, v.stderr()
        assert time.monotonic() - started < 15
        stopped = v.find("stopped")
        n = int(stopped.split()[1])
        # The signal may land after the row was queued but before the loop counted it.
        got = check_prefix(root / "e" / "version_0", at_least=n, at_most=n + 1)
        check_readers(root / "e" / "version_0", got, complete=True)


def test_slow_path_log_interrupted_by_sigterm(tmp_path: Path) -> None:
    """SIGTERM landing inside log()'s slow path (new keys, strings, images) keeps every row, with no deadlock."""
    body = OPEN + """
i = 0
try:
    while True:
        r = row(i, images=True)
        r["k%d" % (i % 40)] = "v" * (i % 300)  # a new signature each row: the slow path every time
        exp.log(r)
        i += 1
        if i == 300:
            say("ready")
except BaseException as exc:
    say("stopped", i, type(exc).__name__)
    raise
"""
    path = script(tmp_path, body)
    for attempt in range(count(3, 20)):
        root = tmp_path / f"r{attempt}"
        v = Victim(path, root)
        v.expect("ready")
        time.sleep(attempt * 0.007)
        v.signal(signal.SIGTERM)
        assert v.wait(30) == 143, v.stderr()
        n = int(v.find("stopped").split()[1])
        got = test_tube.read(root / "e" / "version_0").num_rows
        assert n <= got <= n + 1
        assert test_tube.read(root / "e" / "version_0").column("i").to_pylist() == list(range(got))


def test_second_ctrl_c_during_the_final_flush_is_held(tmp_path: Path) -> None:
    """A second Ctrl-C while the final flush runs neither aborts it nor hangs the exit."""
    body = OPEN + """
import atexit
atexit.register(lambda: say("flushing"))  # runs just before test_tube's handler (LIFO)
i = 0
try:
    while True:
        exp.log(row(i))
        i += 1
        if i == 100_000:
            say("ready")
except BaseException as exc:
    say("stopped", i, type(exc).__name__)
    raise
"""
    path = script(tmp_path, body)
    v = Victim(path, tmp_path)
    v.expect("ready", 60)
    v.signal(signal.SIGINT)
    v.expect("flushing")
    for _ in range(3):
        v.signal(signal.SIGINT)
        time.sleep(0.01)
    assert v.wait(60) == -signal.SIGINT, v.stderr()
    n = int(v.find("stopped").split()[1])
    got = check_prefix(tmp_path / "e" / "version_0", at_least=n, at_most=n + 1)
    check_readers(tmp_path / "e" / "version_0", got, complete=True)


@pytest.mark.parametrize("when", ["before", "after"])
def test_sigterm_with_an_application_handler(tmp_path: Path, when: str) -> None:
    """An application's SIGTERM handler (installed before or after the Experiment) runs, and every row is kept."""
    handler = """
stop = []
def on_term(signum, frame):
    stop.append(signum)
signal.signal(signal.SIGTERM, on_term)
"""
    body = "root = sys.argv[1]\n"
    body += handler if when == "before" else ""
    body += 'exp = Experiment(name="e", save_dir=root, record_git=False, autosave=False, flush_interval=60)\n'
    body += handler if when == "after" else ""
    body += """
i = 0
while not stop:
    exp.log(row(i))
    i += 1
    if i == 3000:
        say("ready")
say("stopped", i)
sys.exit(7)
"""
    v = Victim(script(tmp_path, body), tmp_path)
    v.expect("ready")
    v.signal(signal.SIGTERM)
    assert v.wait(30) == 7, v.stderr()
    n = int(v.find("stopped").split()[1])
    check_prefix(tmp_path / "e" / "version_0", at_least=n, at_most=n)


STUCK = """
root = sys.argv[1]
mode = sys.argv[2]
real_writev = os.writev
stuck = threading.Event()
def writev(fd, buffers):
    if stuck.is_set() and threading.current_thread().name.startswith("test_tube-writer"):
        threading.Event().wait()  # a write that never returns
    return real_writev(fd, buffers)
os.writev = writev
exp = Experiment(name="e", save_dir=root, record_git=False, exit_timeout=2.0)
for i in range(100):
    exp.log(row(i))
exp.save()
stuck.set()
for i in range(100, 150):
    exp.log(row(i))
try:
    exp.save(timeout=0.5)
except TimeoutError:
    say("save timed out")
say("ready")
if mode == "term":
    threading.Event().wait()
"""


@pytest.mark.parametrize("mode", ["exit", "term"])
def test_stuck_disk_exit_is_bounded_and_warns(tmp_path: Path, mode: str) -> None:
    """A writer whose write never returns: save(timeout) raises, and the exit takes exit_timeout and warns of 50 rows."""
    v = Victim(script(tmp_path, STUCK), tmp_path, mode)
    v.expect("save timed out")
    v.expect("ready")
    started = time.monotonic()
    if mode == "term":
        v.signal(signal.SIGTERM)
    rc = v.wait(20)
    took = time.monotonic() - started
    assert rc == (143 if mode == "term" else 0), v.stderr()
    assert took < 2.0 + 3.0, f"the exit took {took:.1f} s with exit_timeout=2"
    assert "FinalFlushWarning" in v.stderr() and "50 rows were not written" in v.stderr(), v.stderr()
    # The 50 rows the stuck disk never took are in the ring file, which read() recovers.
    assert check_prefix(tmp_path / "e" / "version_0") == 150


SLOW = """
root = sys.argv[1]
real_writev = os.writev
real_write = os.write
def writev(fd, buffers):
    time.sleep(0.05)  # a slow disk
    return real_writev(fd, buffers)
def write(fd, data):
    time.sleep(0.02)
    return real_write(fd, data)
os.writev = writev
os.write = write
from faultlib_rss import rss_kib
exp = Experiment(name="e", save_dir=root, record_git=False, max_queue_rows=5000, max_queue_bytes=2**20,
                 flush_interval=0.05)
peak_queue = 0
peak_bytes = 0
peak_rss = 0
done = threading.Event()
def watch():
    global peak_queue, peak_bytes, peak_rss
    while not done.is_set():
        peak_queue = max(peak_queue, exp._queued_rows())
        peak_bytes = max(peak_bytes, exp._queued_bytes)
        peak_rss = max(peak_rss, rss_kib())
        time.sleep(0.001)
threading.Thread(target=watch, daemon=True).start()
base = rss_kib()
started = time.monotonic()
n = int(sys.argv[2])
for i in range(n):
    r = row(i)
    if i >= n - 500:  # the last rows are big: the byte bound binds instead of the row bound
        r["text"] = "t" * 50_000
    exp.log(r)
logged = time.monotonic() - started
exp.close()
done.set()
say(json.dumps({"peak_queue": peak_queue, "peak_bytes": peak_bytes, "base_rss": base, "peak_rss": peak_rss,
                "logged_s": logged}))
"""


def test_slow_disk_bounds_memory_and_blocks_instead_of_dropping(tmp_path: Path) -> None:
    """With a slow disk and a producer at full speed, the queue stays under its bounds and no row is dropped."""
    rss_helper(tmp_path)
    n = count(30_000, 300_000)
    proc = run(script(tmp_path, SLOW), tmp_path, n, timeout=120)
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    print("slow disk:", stats)
    assert 2500 <= stats["peak_queue"] <= 5000 + 1, stats  # full: log() waited for room
    assert 2**19 <= stats["peak_bytes"] <= 2**20 + 50_000, stats
    assert stats["peak_rss"] - stats["base_rss"] < 150 * 1024, stats
    table = test_tube.read(tmp_path / "e" / "version_0")
    assert table.num_rows == n
    assert table.column("i").to_pylist() == list(range(n))
