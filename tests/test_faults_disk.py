"""Disk full, a version folder deleted or replaced mid-run, a failing image encoder: clear errors, no hang."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from faultlib import check_prefix, check_readers, run, script

FILL = """
root, limit = sys.argv[1], int(sys.argv[2])
import resource
# A small queue: its ring file (reserved when the Experiment opens) leaves most of the tiny disk to fill.
exp = Experiment(name="d", save_dir=root, record_git=False, flush_interval=0.05, max_queue_rows=2000,
                 max_queue_bytes=2**18)
log_dir = exp.log_dir
if limit:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over the limit, writes fail with EFBIG
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
i = saved = 0
raised_by = error = None
started = time.monotonic()
try:
    while time.monotonic() - started < 60:
        r = row(i)
        r["pad"] = "p" * 300
        exp.log(r)
        i += 1
        if i % 500 == 0:
            raised_by = "save"
            exp.save()
            saved = i
        raised_by = "log"
except test_tube.WriterError as exc:
    error = exc
rows_at_error = test_tube.read(log_dir).num_rows
published = {"csv": open(os.path.join(log_dir, "metrics.csv"), "rb").read()}
# Free the space: the writer retries, and every row logged so far gets written.
if limit:
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
else:
    os.remove(os.path.join(root, "filler"))
for attempt in range(50):
    try:
        exp.save(timeout=10)
        break
    except test_tube.WriterError as exc:
        pass  # errors raised while the disk was still full
for j in range(i, i + 10):
    r = row(j)
    r["pad"] = "p" * 300
    exp.log(r)
exp.close()
say(json.dumps({"logged": i + 10, "saved": saved, "raised_by": raised_by, "error": str(error),
                "cause": repr(error.__cause__) if error else None, "rows_at_error": rows_at_error,
                "csv_torn_at_error": not published["csv"].endswith(b"\\n")}))
"""


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, half of it taken by a filler file; skips where mounting is not allowed."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], check=True,
                       capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    try:
        (mnt / "filler").write_bytes(b"\0" * (1 << 20))
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


def _check_full_disk(out: str, log_dir: Path, cause: str) -> None:
    stats = json.loads(out.strip().splitlines()[-1])
    print("full disk:", stats)
    assert stats["error"] is not None, f"the disk never filled: {stats}"
    assert cause in stats["cause"], stats
    assert "the writer of d/version_0 failed" in stats["error"], stats
    assert stats["rows_at_error"] >= stats["saved"], stats
    assert not stats["csv_torn_at_error"], "a failed append left a torn line in metrics.csv"
    # Every row was kept and retried once there was space again.
    pad = {"pad": "p" * 300}
    assert check_prefix(log_dir, extra=pad) == stats["logged"]
    check_readers(log_dir, stats["logged"], complete=True, extra=pad)


def test_disk_full_on_a_tiny_tmpfs(tiny_tmpfs: Path) -> None:
    """ENOSPC surfaces as WriterError with its cause, published rows stay readable, and freeing space recovers."""
    proc = run(script(tiny_tmpfs.parent, FILL, "fill.py"), tiny_tmpfs, 0, timeout=120)
    assert proc.returncode == 0, proc.stderr
    _check_full_disk(proc.stdout, tiny_tmpfs / "d" / "version_0", "No space left on device")


def test_file_size_limit(tmp_path: Path) -> None:
    """EFBIG from RLIMIT_FSIZE surfaces as WriterError, and raising the limit lets the writer catch up."""
    proc = run(script(tmp_path, FILL, "fill.py"), tmp_path, 600_000, timeout=120)
    assert proc.returncode == 0, proc.stderr
    _check_full_disk(proc.stdout, tmp_path / "d" / "version_0", "File too large")


GONE = """
root, how = sys.argv[1], sys.argv[2]
import shutil
exp = Experiment(name="g", save_dir=root, record_git=False, flush_interval=0.05)
for i in range(100):
    exp.log(row(i))
exp.save()
shutil.rmtree(exp.log_dir)
if how == "file":
    open(exp.log_dir, "w").write("not a folder")
out = {}
for i in range(100, 200):
    exp.log(row(i))
try:
    exp.save(timeout=10)
except Exception as exc:
    out["save"] = [type(exc).__name__, repr(exc.__cause__)]
try:
    exp.log(row(200))
    out["log"] = "ok"
except Exception as exc:
    out["log"] = [type(exc).__name__, repr(exc.__cause__)]
started = time.monotonic()
try:
    exp.close()
    out["close"] = "ok"
except Exception as exc:
    out["close"] = [type(exc).__name__, repr(exc.__cause__)]
out["close_s"] = time.monotonic() - started
say(json.dumps(out))
"""


@pytest.mark.parametrize("how", ["deleted", "file"])
def test_version_folder_deleted_or_replaced_mid_run(tmp_path: Path, how: str) -> None:
    """A version folder deleted (or replaced by a file) mid-run raises WriterError on the next call; nothing hangs."""
    proc = run(script(tmp_path, GONE), tmp_path, how, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    print(out)
    assert out["save"][0] == "WriterError", out
    assert "Error" in out["save"][1], out
    assert out["close_s"] < 10, out
    assert "Traceback" not in proc.stderr, proc.stderr


MEDIA = """
root = sys.argv[1]
import shutil
exp = Experiment(name="m", save_dir=root, record_git=False)
for i in range(60):
    exp.log(row(i, images=True))
exp.save()
media = os.path.join(exp.log_dir, "media")
shutil.rmtree(media)
open(media, "w").write("not a folder")  # the encoder cannot write its file
for i in range(60, 80):
    exp.log(row(i, images=True))
out = {}
try:
    exp.save(timeout=10)
except test_tube.WriterError as exc:
    out["save"] = repr(exc.__cause__)
os.remove(media)
os.mkdir(media)
for i in range(80, 130):
    exp.log(row(i, images=True))
exp.close()
out["files"] = sorted(os.listdir(media))
say(json.dumps(out))
"""


def test_image_encoder_failure_surfaces_and_the_run_continues(tmp_path: Path) -> None:
    """An image that cannot be written raises WriterError (cause chained) on the next call; later images are written."""
    proc = run(script(tmp_path, MEDIA), tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    print(out)
    assert "NotADirectoryError" in out.get("save", ""), out
    assert "img_125.png" in out["files"], out
    log_dir = tmp_path / "m" / "version_0"
    assert check_prefix(log_dir, images=True) == 130


HALF = """
root = sys.argv[1]
import errno
real_write, real_writev = os.write, os.writev
broken = threading.Event()
def half_then_full(fd, data):
    if broken.is_set() and os.readlink("/proc/self/fd/%d" % fd).endswith("metrics.csv"):
        real_write(fd, bytes(data[: len(data) // 2]))  # half the append reaches the disk...
        raise OSError(errno.ENOSPC, "No space left on device")  # ...then the disk is full
def write(fd, data):
    half_then_full(fd, data)
    return real_write(fd, data)
def writev(fd, buffers):
    half_then_full(fd, b"".join(bytes(b) for b in buffers))
    return real_writev(fd, buffers)
os.write, os.writev = write, writev
exp = Experiment(name="h", save_dir=root, record_git=False)
for i in range(100):
    exp.log(row(i))
exp.save()
broken.set()
for i in range(100, 200):
    exp.log(row(i))
try:
    exp.save()
    say("no error")
except test_tube.WriterError as exc:
    say("error", repr(exc.__cause__))
say("torn" if not open(os.path.join(exp.log_dir, "metrics.csv"), "rb").read().endswith(b"\\n") else "whole")
broken.clear()
exp.close()
"""


def test_a_failed_csv_append_leaves_no_torn_line(tmp_path: Path) -> None:
    """An append to metrics.csv that fails half way is cut back, so readers never see a partial row."""
    proc = run(script(tmp_path, HALF), tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split("\n")
    assert lines[0].startswith("error") and "No space left" in lines[0], proc.stdout
    assert lines[1] == "whole", "a failed append left a torn last line in metrics.csv"
    log_dir = tmp_path / "h" / "version_0"
    assert check_prefix(log_dir) == 200
    check_readers(log_dir, 200, complete=True)


NEXT_CALL = """
root = sys.argv[1]
import errno
real_writev = os.writev
broken = threading.Event()
failed = threading.Event()
def writev(fd, buffers):
    if broken.is_set():
        failed.set()
        raise OSError(errno.EIO, "Input/output error")
    return real_writev(fd, buffers)
os.writev = writev
exp = Experiment(name="n", save_dir=root, record_git=False, flush_interval=0.01)
for i in range(1000):
    exp.log(row(i))  # the same keys and types every row: the fast path
exp.save()
broken.set()
exp.log(row(1000))  # the writer's next journal write fails
i = 1001
failed.wait(10)
deadline = time.monotonic() + 10
while (exp._writer.error is None or exp._fast.open) and time.monotonic() < deadline:
    time.sleep(0.001)  # until the writer has recorded the failure (the fault fired, the handoff is next)
try:
    for i in range(1001, 300_000):
        exp.log({"i": i, "x": i * 0.25})
    say("never raised")
except test_tube.WriterError as exc:
    say("raised after", i - 1001, repr(exc.__cause__))
broken.clear()
for attempt in range(50):
    try:
        exp.save(timeout=10)
        break
    except test_tube.WriterError:
        pass  # errors of cycles that ran before the disk came back
exp.close()
say("rows", test_tube.read(exp.log_dir).num_rows, "logged", i)  # the row that raised was not queued
"""


def test_a_writer_error_surfaces_on_the_next_log_call(tmp_path: Path) -> None:
    """Once the writer fails, the next log() raises WriterError, even on the fast path."""
    proc = run(script(tmp_path, NEXT_CALL), tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.split("\n")[0]
    assert line.startswith("raised after"), line
    assert int(line.split()[2]) == 0, line
    assert "Input/output error" in line
    rows = proc.stdout.split("\n")[1].split()
    assert rows[1] == rows[3], "rows logged while the writer failed were lost: " + " ".join(rows)


FULL_AT_EXIT = """
root = sys.argv[1]
import resource
exp = Experiment(name="x", save_dir=root, record_git=False, autosave=False, flush_interval=60)
for i in range(100):
    exp.log(row(i))
exp.save()
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(os.path.join(exp.log_dir, "_journal.arrows")) + 100,
                                           resource.RLIM_INFINITY))
for i in range(100, 5000):
    exp.log(row(i))
say("exiting")
"""


def test_a_final_flush_that_fails_says_so(tmp_path: Path) -> None:
    """A disk that fills before the final flush at exit: the exit warns how many rows were not written and why.

    Those rows stay in the ring file: read() shows them, and the next open of the
    version (with room on the disk) puts them in the journal and the published files.
    """
    proc = run(script(tmp_path, FULL_AT_EXIT), tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "4900 rows" in proc.stderr and "File too large" in proc.stderr, proc.stderr
    assert "recovers them" in proc.stderr, proc.stderr
    log_dir = tmp_path / "x" / "version_0"
    assert check_prefix(log_dir) == 5000
    import test_tube

    test_tube.Experiment(name="x", save_dir=tmp_path, version=0, record_git=False).close()
    assert check_prefix(log_dir) == 5000
    check_readers(log_dir, 5000, complete=True)


BLOCKED = """
root = sys.argv[1]
import errno
real_writev = os.writev
stuck, release = threading.Event(), threading.Event()
def writev(fd, buffers):
    if stuck.is_set():
        release.wait(30)  # a disk that hangs, then fails
        raise OSError(errno.EIO, "Input/output error")
    return real_writev(fd, buffers)
os.writev = writev
exp = Experiment(name="b", save_dir=root, record_git=False, flush_interval=0.01, max_queue_rows=1000)
exp.log(row(0))
exp.save()
stuck.set()
def fail_later():
    while exp._queued_rows() < 1000:  # the producer is about to block on the full queue
        time.sleep(0.001)
    time.sleep(0.3)
    say("failing the disk")
    release.set()
threading.Thread(target=fail_later, daemon=True).start()
started = time.monotonic()
try:
    for i in range(1, 10**7):
        exp.log(row(i))
    say("never blocked")
except test_tube.WriterError as exc:
    say("released", round(time.monotonic() - started, 2), repr(exc.__cause__))
"""


def test_a_producer_blocked_on_a_full_queue_is_released_by_a_writer_failure(tmp_path: Path) -> None:
    """log() blocked on a full queue returns with WriterError when the writer fails, instead of waiting forever."""
    proc = run(script(tmp_path, BLOCKED), tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split("\n")
    assert lines[0] == "failing the disk" and lines[1].startswith("released"), proc.stdout
    assert float(lines[1].split()[1]) < 10 and "Input/output error" in lines[1]
