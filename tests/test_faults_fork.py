"""fork while logging, forked worker pools, raw fork children, spawn workers handed an Experiment."""

from __future__ import annotations

import json
import multiprocessing
import pickle
from pathlib import Path

import pytest

import test_tube
from faultlib import check_prefix, check_readers, count, run, script

FORKS = """
root, forks = sys.argv[1], int(sys.argv[2])
exp = Experiment(name="f", save_dir=root, record_git=False, flush_interval=0.01)
stop = threading.Event()
logged = []
def flood():
    i = 0
    while not stop.is_set():
        exp.log(row(i, images=True))  # new columns, sparse keys, images: slow paths and locks in use
        i += 1
    logged.append(i)
thread = threading.Thread(target=flood)
thread.start()
children = {}
results = {"ok": 0, "bad": {}, "hung": 0}
for k in range(forks):
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            exp.log({"child": k})
            code = 10  # the parent's Experiment must refuse rows in a child
        except test_tube.ExperimentClosedError:
            pass
        except BaseException:
            code = 11
        if k % 4 == 0 and code == 0:
            try:  # a child may open its own Experiment, whatever locks the parent held at the fork
                with Experiment(name="child", save_dir=root, record_git=False, flush_interval=0.01) as mine:
                    for j in range(50):
                        mine.log({"j": j, "s": "c%d" % j, "k%d" % (j % 3): j})
            except BaseException as exc:
                print(repr(exc), file=sys.stderr)
                code = 12
        if k % 2:
            os._exit(code)
        sys.exit(code)  # a raw fork child leaving normally runs the parent's atexit handlers
    children[pid] = k
    if k % 10 == 0:
        time.sleep(0.002)  # let the flood thread get going between forks
deadline = time.monotonic() + 60
while children and time.monotonic() < deadline:
    pid, status = os.waitpid(-1, os.WNOHANG)
    if pid == 0:
        time.sleep(0.005)
        continue
    k = children.pop(pid)
    code = os.waitstatus_to_exitcode(status)
    if code == 0:
        results["ok"] += 1
    else:
        results["bad"][k] = code
for pid in children:
    os.kill(pid, signal.SIGKILL)
    results["hung"] += 1
stop.set()
thread.join(30)
exp.close()
results["logged"] = logged[0]
say(json.dumps(results))
"""


def test_forks_while_another_thread_floods_log(tmp_path: Path) -> None:
    """Forks during a log() flood: no child blocks, children cannot write the parent's run, the parent keeps every row."""
    forks = count(40, 200)
    proc = run(script(tmp_path, FORKS), tmp_path, forks, timeout=150)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    print("forks:", out)
    assert out["hung"] == 0 and not out["bad"] and out["ok"] == forks, (out, proc.stderr[-3000:])
    log_dir = tmp_path / "f" / "version_0"
    n = check_prefix(log_dir, images=True)
    assert n == out["logged"], "the parent's rows were lost or written twice"
    check_readers(log_dir, n, complete=True, images=True)
    runs = sorted((tmp_path / "child").iterdir())
    assert len(runs) == (forks + 3) // 4
    for run_dir in runs:
        assert test_tube.read(run_dir).column("j").to_pylist() == list(range(50))


POOL = """
root = sys.argv[1]
import multiprocessing
exp = Experiment(name="p", save_dir=root, record_git=False, flush_interval=0.01)
stop = threading.Event()
logged = []
def flood():
    i = 0
    while not stop.is_set():
        exp.log(row(i))
        i += 1
    logged.append(i)
mine = None
def init():
    global mine  # a DataLoader-style worker_init_fn: one Experiment per worker, open across tasks
    mine = Experiment(name="worker", save_dir=root, record_git=False, flush_interval=0.01)
def work(k):
    try:
        exp.log({"w": k})
        return "the parent's Experiment accepted a row in a worker"
    except test_tube.ExperimentClosedError:
        pass
    for j in range(20):
        mine.log({"task": k, "j": j})
    mine.save()
    return mine.log_dir
thread = threading.Thread(target=flood)
thread.start()
with multiprocessing.get_context("fork").Pool(4, initializer=init) as pool:
    dirs = pool.map(work, range(int(sys.argv[2])), chunksize=1)
# leaving the with-block terminates the workers with SIGTERM
stop.set()
thread.join(30)
exp.close()
say(json.dumps({"dirs": dirs, "logged": logged[0]}))
"""


def test_dataloader_style_pool_of_forked_workers(tmp_path: Path) -> None:
    """Forked pool workers that log to their own runs: every task's rows saved, terminate() does not hang."""
    tasks = count(16, 64)
    proc = run(script(tmp_path, POOL), tmp_path, tasks, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert all(d.startswith(str(tmp_path)) for d in out["dirs"]), out["dirs"]
    assert check_prefix(tmp_path / "p" / "version_0") == out["logged"]
    rows = 0
    for d in set(out["dirs"]):
        t = test_tube.read(d)
        rows += t.num_rows
        tasks_seen = t.column("task").to_pylist()
        for k in set(tasks_seen):
            assert t.filter(t.column("task").to_numpy() == k).column("j").to_pylist() == list(range(20))
    assert rows == 20 * tasks, "a worker's saved rows were lost"


RAW = """
root = sys.argv[1]
exp = Experiment(name="r", save_dir=root, record_git=False, autosave=False, flush_interval=60)
for i in range(1000):
    exp.log(row(i))  # not yet written when the child is forked
pid = os.fork()
if pid == 0:
    pass  # the child leaves the script normally: atexit runs in it
else:
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    for i in range(1000, 2000):
        exp.log(row(i))
    say("parent done")
"""


def test_raw_fork_child_exiting_normally_never_writes_the_parents_rows(tmp_path: Path) -> None:
    """A raw os.fork() child that exits normally writes nothing; the parent's rows appear exactly once."""
    proc = run(script(tmp_path, RAW), tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "parent done" in proc.stdout
    log_dir = tmp_path / "r" / "version_0"
    assert check_prefix(log_dir) == 2000
    check_readers(log_dir, 2000, complete=True)
    assert json.loads((log_dir / "meta.experiment").read_text())["status"] == "finished"


def _use(exp: object) -> None:
    pass


def test_spawn_workers_handed_an_experiment_get_a_clear_error(tmp_path: Path) -> None:
    """Pickling an Experiment (as spawn does) fails with a TypeError that says what to do instead."""
    exp = test_tube.Experiment(name="s", save_dir=tmp_path, record_git=False)
    try:
        with pytest.raises(TypeError, match="cannot be pickled.*log_dir"):
            pickle.dumps(exp)
        proc = multiprocessing.get_context("spawn").Process(target=_use, args=(exp,))
        with pytest.raises(TypeError, match="cannot be pickled"):
            proc.start()
        exp.log({"after": 1})  # the failed hand-off leaves the Experiment usable
    finally:
        exp.close()
    assert test_tube.read(exp.log_dir).column("after").to_pylist() == [1]
