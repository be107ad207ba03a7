"""kill -9 at random moments, and journals or CSV files torn at every byte offset of their last record."""

from __future__ import annotations

import random
import shutil
import signal
import time
from pathlib import Path


import test_tube
from faultlib import Victim, check_images, check_prefix, check_readers, count, row, script
from test_tube._store import _journal

KILL_VICTIM = """
root, seed, images = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
rng = random.Random(seed)
log_dir = os.path.join(root, "k", "version_0")
n0 = test_tube.read(log_dir).num_rows if os.path.isdir(log_dir) else 0
say("starting", n0)
exp = Experiment(name="k", save_dir=root, version=0, record_git=False, autosave=rng.random() < 0.8,
                 flush_interval=rng.choice([0.005, 0.02, 0.1, 0.5]))
say("open", n0)
i = n0
save_every = rng.choice([7, 50, 300])
while True:
    exp.log(row(i, images))
    i += 1
    if i % save_every == 0:
        exp.save()
        say("saved", i)
    elif i % 10 == 0:
        say("logged", i)
"""

FINISH = """
root, images = sys.argv[1], sys.argv[2] == "1"
log_dir = os.path.join(root, "k", "version_0")
n0 = test_tube.read(log_dir).num_rows if os.path.isdir(log_dir) else 0
with Experiment(name="k", save_dir=root, version=0, record_git=False) as exp:
    for i in range(n0, n0 + 25):
        exp.log(row(i, images))
say("done", n0 + 25)
"""


def test_kill_9_at_random_moments_keeps_a_prefix_and_resumes(tmp_path: Path) -> None:
    """kill -9 during logging, flushing, publishing, compaction and image encoding: Prefix, Bound, readers, resume."""
    kills = count(12, 200)
    chain = 4 if kills < 40 else 10
    victim = script(tmp_path, KILL_VICTIM)
    finish = script(tmp_path, FINISH, "finish.py")
    rng = random.Random(20261129)
    stats = {"kills": 0, "rows_checked": 0, "torn_csv": 0, "early": 0}
    root = tmp_path
    n = 0
    images = False
    covered: set[int] = set()  # rows that some completed save() covered
    for k in range(kills):
        if k % chain == 0:
            root = tmp_path / f"chain{k // chain}"
            images = (k // chain) % 2 == 1
            n = 0
            covered = set()
        v = Victim(victim, root, rng.randrange(10**9), int(images))
        line = v.expect("starting", 60)
        assert int(line.split()[1]) == n, "a resumed run must see every row read before it"
        if rng.random() < 0.15:
            # Kill while the constructor resumes: truncating the journal, rewriting CSV and Parquet.
            time.sleep(rng.uniform(0, 0.4))
            stats["early"] += 1
        else:
            v.expect("open", 60)
            for _ in range(rng.randint(1, 150)):
                v.next_line(60)
            time.sleep(rng.uniform(0, 0.02))  # a random moment between two progress lines
        v.signal(signal.SIGKILL)
        assert v.wait(30) == -signal.SIGKILL, v.stderr()
        saved = max([int(x.split()[1]) for x in v.lines if x.startswith("saved")], default=n)
        logged = max([int(x.split()[1]) for x in v.lines if x.startswith(("saved", "logged"))], default=n)
        log_dir = root / "k" / "version_0"
        if log_dir.exists():
            new_n = check_prefix(log_dir, at_least=max(saved, n), at_most=logged + 10, images=images)
            seen = check_readers(log_dir, new_n, images=images)
            covered.update(range(n, saved))
            if images:  # a completed save() waited for its images
                check_images(log_dir, covered)
            stats["torn_csv"] += seen["csv_torn"]
        else:  # killed before the constructor made the folder
            assert saved == n == 0
            new_n = 0
        stats["kills"] += 1
        stats["rows_checked"] += new_n
        n = new_n
        if k % chain == chain - 1 or k == kills - 1:
            done = Victim(finish, root, int(images))
            assert done.wait(120) == 0, done.stderr()
            total = check_prefix(log_dir, images=images)
            assert total == n + 25, "resuming after the kills duplicated or lost rows"
            check_readers(log_dir, total, complete=True, images=images)
            if images:
                check_images(log_dir, covered | set(range(n, total)))
            leftovers = [p.name for p in [*log_dir.iterdir(), *(log_dir / "media").iterdir()] if p.suffix == ".tmp"]
            assert not leftovers, f"temp files of killed runs were left behind: {leftovers}"
            stats["rows_checked"] += total
    print("kill loop:", stats)


def _frames(path: Path) -> list[int]:
    """The end offsets of the complete frames of a journal."""
    return [end for _, end in _journal.iter_frames(path)]


def _make_run(tmp_path: Path, name: str = "t") -> Path:
    """A closed run of 40 rows written in 3 flushes (so the journal has several frames)."""
    with test_tube.Experiment(name=name, save_dir=tmp_path, record_git=False) as exp:
        for i in range(40):
            exp.log(row(i))
            if i in (9, 24):
                exp.save()
    return Path(exp.log_dir)


def test_journal_torn_at_every_offset_of_its_last_frame(tmp_path: Path, full: bool) -> None:
    """A journal cut, zero-filled or bit-flipped anywhere in its last frame reads as the complete frames only."""
    log_dir = _make_run(tmp_path)
    journal = log_dir / "_journal.arrows"
    data = journal.read_bytes()
    ends = _frames(journal)
    assert len(ends) >= 3 and ends[-1] == len(data)
    rows_before = test_tube.read(log_dir).num_rows - 15  # the last frame holds rows 25..39
    assert rows_before == 25
    work = tmp_path / "work"
    work.mkdir()
    (work / "_journal.arrows").write_bytes(b"")
    start = ends[-2]
    for cut in range(start, len(data)):
        for damaged in (
            data[:cut],  # torn by a crash
            data[:cut] + b"\0" * (len(data) - cut),  # a size update that outran the data (power loss)
            data[:cut] + bytes([data[cut] ^ 0x40]) + data[cut + 1:],  # a flipped bit
        ):
            if damaged == data:  # the frame ends in zero bytes: zero-filling them damages nothing
                continue
            (work / "_journal.arrows").write_bytes(damaged)
            assert check_prefix(work, table=test_tube.read(work)) == rows_before, f"cut at {cut}"
    # Resuming a torn run truncates the tear and continues without a gap or a duplicate.
    resumes = range(start, len(data), 1 if full else max(1, (len(data) - start) // 12))
    for cut in resumes:
        copy = tmp_path / f"resume_{cut}" / "t" / "version_0"
        shutil.copytree(log_dir, copy)
        with open(copy / "_journal.arrows", "r+b") as f:
            f.truncate(cut)
        # A crash never leaves a published file ahead of the journal; these, from a closed run, hold
        # the torn frame's rows, which a reopen recovers (tests/test_faults_damage.py): not this case.
        (copy / "metrics.parquet").unlink()
        (copy / "metrics.csv").unlink()
        with test_tube.Experiment(name="t", save_dir=copy.parent.parent, version=0, record_git=False) as exp:
            for i in range(25, 30):
                exp.log(row(i))
        assert check_prefix(copy) == 30
        check_readers(copy, 30, complete=True)


def test_csv_torn_at_every_offset_of_its_last_line(tmp_path: Path) -> None:
    """A torn metrics.csv never changes read(), and resuming the run publishes it whole again."""
    log_dir = _make_run(tmp_path)
    csv = log_dir / "metrics.csv"
    data = csv.read_bytes()
    start = data.rstrip(b"\n").rfind(b"\n") + 1
    for cut in range(start, len(data)):
        csv.write_bytes(data[:cut])
        assert check_prefix(log_dir) == 40
    csv.write_bytes(data[: start + (len(data) - start) // 2])
    with test_tube.Experiment(name="t", save_dir=tmp_path, version=0, record_git=False) as exp:
        exp.log(row(40))
    check_readers(log_dir, 41, complete=True)


def test_legacy_csv_torn_at_every_offset_is_read_as_its_complete_lines(tmp_path: Path) -> None:
    """A folder with only metrics.csv (the original test-tube's) never reads a torn last line as a value."""
    lines = ["step,created_at,i,x,s"] + [f"{i},2026-11-29 10:00:0{i % 10}.000000,{i * 11},{i * 0.25},s{i}" for i in range(12)]
    data = ("\n".join(lines) + "\n").encode()
    folder = tmp_path / "version_0"
    folder.mkdir()
    start = data.rstrip(b"\n").rfind(b"\n") + 1
    for cut in range(start, len(data) + 1):
        (folder / "metrics.csv").write_bytes(data[:cut])
        table = test_tube.read(folder)
        n = 12 if cut == len(data) else 11
        assert table.num_rows == n, f"cut at {cut}: {table.num_rows} rows"
        assert table.column("i").to_pylist() == [i * 11 for i in range(n)]
        assert table.column("x").to_pylist() == [i * 0.25 for i in range(n)]
