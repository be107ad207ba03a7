"""Real faults of the store a run uploads to: a server stopped (SIGSTOP) and started again, one killed for good."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

import test_tube
from s3lib import S3Server, start_or_skip
from test_tube import Experiment, UploadWarning, WriterError


@pytest.fixture(autouse=True)
def spool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "spool"
    monkeypatch.setenv("TEST_TUBE_SPOOL", str(path))
    return path


@pytest.fixture
def own_server() -> S3Server:
    """A server of this test's own, which it may kill for good."""
    server = start_or_skip()
    server.bucket_name = server.bucket("gone")
    yield server  # type: ignore[misc]
    server.kill()


def rows_on_store(s3: S3Server, path: str) -> list[int]:
    table = pq.read_table(f"{s3.bucket_name}/{path}/metrics.parquet", filesystem=s3.filesystem())
    return table.column("i").to_pylist()  # type: ignore[no-any-return]


def test_a_paused_server_loses_nothing_and_log_keeps_returning(s3: S3Server) -> None:
    """The store stops answering mid-run: log() goes on, and once it answers again every row is uploaded."""
    exp = Experiment(save_dir=s3.uri(s3.bucket_name, "p"), name="pause", record_git=False, flush_interval=0.05)
    for i in range(100):
        exp.log({"i": i})
    exp.save()
    s3.pause()
    try:
        # Every one of these returns while the server answers nothing (the loop reaching its end shows it),
        # across flushes that each wake the upload stage, and after saves that could not reach the store.
        for k in range(5):
            for i in range(100 + k * 6_000, 100 + (k + 1) * 6_000):
                exp.log({"i": i})
            with pytest.raises((WriterError, TimeoutError)):
                exp.save(timeout=0.3)  # rows journaled locally; the store has not taken them
    finally:
        s3.resume()
    exp.save()
    exp.close()
    assert rows_on_store(s3, "p/pause/version_0") == list(range(30_100))
    meta = json.loads(s3.filesystem().open_input_stream(f"{s3.bucket_name}/p/pause/version_0/meta.experiment").read())
    assert meta["status"] == "finished"


def test_a_killed_server_fails_save_bounds_close_and_keeps_the_spool(own_server: S3Server, spool: Path) -> None:
    """The store gone for good: save() raises WriterError with the cause, close() warns naming the spool, which
    holds every row."""
    s3 = own_server
    exp = Experiment(save_dir=s3.uri(s3.bucket_name, "k"), name="kill", record_git=False, exit_timeout=1.0)
    for i in range(100):
        exp.log({"i": i})
    exp.save()
    s3.kill()
    for i in range(100, 5_000):
        exp.log({"i": i})
    with pytest.raises(WriterError, match="upload") as raised:
        exp.save()  # no timeout given: the store's own (no answer for STORE_TIMEOUT seconds)
    assert isinstance(raised.value.__cause__, OSError)
    with pytest.warns(UploadWarning, match="not uploaded") as warned:
        exp.close()
    kept = warned[0].message.spool  # type: ignore[union-attr]
    assert kept and kept in str(warned[0].message) and kept.startswith(str(spool))
    assert test_tube.read(kept).column("i").to_pylist() == list(range(5_000))
    assert json.loads((Path(kept) / "meta.experiment").read_text())["status"] == "finished"


def test_the_spool_left_by_a_failed_upload_is_sent_by_the_next_open(s3: S3Server, spool: Path) -> None:
    """Rows that could not be uploaded stay in the spool; opening the version again on this host sends them."""
    uri = s3.uri(s3.bucket_name, "again")
    exp = Experiment(save_dir=uri, name="late", record_git=False, exit_timeout=0.5)
    for i in range(50):
        exp.log({"i": i})
    exp.save()
    s3.pause()
    try:
        for i in range(50, 2_000):
            exp.log({"i": i})
        with pytest.warns(UploadWarning):
            exp.close()
    finally:
        s3.resume()
    with Experiment(save_dir=uri, name="late", version=0, record_git=False) as again:
        again.log({"i": 2_000})
    assert rows_on_store(s3, "again/late/version_0") == list(range(2_001))
    assert not any(spool.rglob("*.arrows"))


EXIT_CHILD = """
import sys, test_tube
exp = test_tube.Experiment(save_dir=sys.argv[1], name="exit", record_git=False, exit_timeout=float(sys.argv[2]))
for i in range(3_000):
    exp.log({"i": i})
exp.save()
print("saved", flush=True)
sys.stdin.readline()
for i in range(3_000, 6_000):
    exp.log({"i": i})
# no close(): the final flush at exit uploads
"""


def test_the_exit_flush_uploads_a_run_never_closed(s3: S3Server, tmp_path: Path, spool: Path) -> None:
    """A script that ends without close(): the final flush at exit completes every object on the store."""
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(EXIT_CHILD))
    result = subprocess.run([sys.executable, str(script), s3.uri(s3.bucket_name, "e"), "10"], input="\n",
                            capture_output=True, text=True, env={**os.environ, **s3.env()}, timeout=120)
    assert result.returncode == 0, result.stderr
    assert rows_on_store(s3, "e/exit/version_0") == list(range(6_000))
    assert not any(spool.rglob("*.arrows"))


def test_the_exit_flush_with_the_store_gone_is_bounded_and_names_the_spool(own_server: S3Server, tmp_path: Path,
                                                                          spool: Path) -> None:
    """The store killed before the script ends: the process still exits, warning which spool keeps the rows."""
    s3 = own_server
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(EXIT_CHILD))
    child = subprocess.Popen([sys.executable, str(script), s3.uri(s3.bucket_name, "g"), "1"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, **s3.env()})
    assert child.stdout is not None and child.stdout.readline().strip() == "saved"
    s3.kill()
    _, err = child.communicate("\n", timeout=120)
    assert child.returncode == 0
    assert "UploadWarning" in err and str(spool) in err
    kept = next(p.parent for p in spool.rglob("_journal.arrows"))
    assert test_tube.read(kept).column("i").to_pylist() == list(range(6_000))
    listing = pafs.LocalFileSystem().get_file_info(pafs.FileSelector(str(kept)))
    assert {i.base_name for i in listing} >= {"_journal.arrows", "metrics.parquet", "meta.experiment"}


KILLED_CHILD = """
import sys, test_tube
exp = test_tube.Experiment(save_dir=sys.argv[1], name="k9", record_git=False)
for i in range(1_000):
    exp.log({"i": i})
exp.save()
for i in range(1_000, 4_000):
    exp.log({"i": i})
print("logged", flush=True)
sys.stdin.readline()
"""


def test_a_writer_killed_mid_run_is_recovered_from_its_spool_and_uploaded(s3: S3Server, tmp_path: Path,
                                                                        spool: Path) -> None:
    """kill -9 after log() returned: the next open of the version on this host takes the rows from the spool's
    ring and journal and uploads them."""
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(KILLED_CHILD))
    uri = s3.uri(s3.bucket_name, "k")
    child = subprocess.Popen([sys.executable, str(script), uri], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, env={**os.environ, **s3.env()})
    assert child.stdout is not None and child.stdout.readline().strip() == "logged"
    child.kill()
    child.wait(timeout=60)
    with Experiment(save_dir=uri, name="k9", version=0, record_git=False) as again:
        again.log({"i": 4_000})
    assert rows_on_store(s3, "k/k9/version_0") == list(range(4_001))
    assert not any(spool.rglob("*.arrows"))
