"""The read side over object storage: read(), runs(), the command line and serve on a real S3 server.

Runs are written on the local disk with ``Experiment`` and copied into the
bucket in the layout a writer on object storage leaves (``storelib``): the
journal as ``_journal/<offset>.arrows`` segments cut at frame boundaries.
Every read over S3 is compared with the same read of the local folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import test_tube
from test_tube._store import _layout, _runs
from test_tube._store._reader import StoredRun

from s3lib import S3Server
from storelib import segments, upload_run, upload_save_dir
from test_runs import build_per_rank
from test_serve import Running, get, get_json, q

CLI = [sys.executable, "-m", "test_tube._app._cli"]
TIMEOUT = 120


def write_run(save_dir: Path, name: str = "mnist", rows: int = 60, **tags: Any) -> Path:
    """A finished run with every kind of column: ints, floats (NaN too), text, bools, a late column, images."""
    with test_tube.Experiment(name=name, save_dir=save_dir, record_git=False, flush_interval=60) as exp:
        exp.tag({"lr": 0.01, "optimizer": "adam", "layers": [64, 64], **tags})
        for step in range(rows):
            row: dict[str, Any] = {"loss": 1.0 / (step + 1), "epoch": step // 10, "phase": f"p{step % 3}",
                                   "best": step % 7 == 0}
            if step >= rows // 2:
                row["val_acc"] = step / rows  # a column that appears mid-run
            if step == 5:
                row["loss"] = float("nan")
            if step % 20 == 0:
                row["sample_png"] = np.full((8, 8), step, np.uint8)
            exp.log(row)
            if step % 10 == 9:
                exp.save()  # one journal frame each: several segments
        return Path(exp.log_dir)


@pytest.fixture
def uploaded(s3: S3Server, tmp_path: Path) -> tuple[Path, str]:
    """A local run and its copy in the bucket: (local log_dir, bucket/logs/mnist/version_0)."""
    log_dir = write_run(tmp_path / "logs")
    dest = f"{s3.bucket_name}/logs/mnist/version_0"
    assert len(upload_run(log_dir, s3.filesystem(), dest)) == 6
    return log_dir, dest


def test_read_of_a_run_in_a_bucket_equals_the_local_read(s3: S3Server, uploaded: tuple[Path, str]) -> None:
    """Row for row, types kept, through a URI with its query options and through filesystem=."""
    log_dir, dest = uploaded
    local = test_tube.read(log_dir)
    assert local.num_rows == 60
    by_uri = test_tube.read(s3.uri(s3.bucket_name, "logs/mnist/version_0"))
    by_fs = test_tube.read(dest, filesystem=s3.filesystem())
    for table in (by_uri, by_fs):
        assert table.schema == local.schema
        assert rows(table) == rows(local)
    assert by_uri.column("val_acc").null_count == 30 and by_uri.column("best").type == pa.bool_()


def test_a_missing_segment_ends_the_journal(s3: S3Server, tmp_path: Path) -> None:
    """Segments after a gap are not trusted: read() gives the rows before it, never rows out of order."""
    log_dir = write_run(tmp_path / "logs")
    dest = f"{s3.bucket_name}/logs/mnist/version_0"
    upload_run(log_dir, s3.filesystem(), dest, skip_segments=(2,))
    s3.filesystem().delete_file(f"{dest}/{_layout.PARQUET}")  # else the complete file would answer
    table = test_tube.read(dest, filesystem=s3.filesystem())
    assert "val_acc" not in table.column_names  # it first appears after the gap
    assert rows(table) == rows(test_tube.read(log_dir).slice(0, 20).select(table.column_names))


def test_pandas_polars_and_duckdb_read_metrics_parquet_from_the_bucket(s3: S3Server,
                                                                       uploaded: tuple[Path, str]) -> None:
    """The published metrics.parquet is an ordinary Parquet file for other tools, read through pyarrow.fs."""
    import duckdb
    import pandas as pd
    import polars as pl

    log_dir, dest = uploaded
    fs = s3.filesystem()
    expected = pq.read_table(log_dir / _layout.PARQUET)
    path = f"{dest}/{_layout.PARQUET}"
    frame = pd.read_parquet(path, filesystem=fs)
    assert frame["loss"].tolist()[6:] == expected.column("loss").to_pylist()[6:] and len(frame) == 60
    with fs.open_input_file(path) as f:
        polars_frame = pl.read_parquet(f)
    assert polars_frame["epoch"].to_list() == expected.column("epoch").to_pylist()
    with fs.open_input_file(path) as f:
        arrow = pq.read_table(f)
    con = duckdb.connect()
    con.register("metrics", arrow)
    assert con.sql("select count(*), max(epoch), sum(best::int) from metrics").fetchall() == [(60, 5, 9)]


def test_runs_over_a_bucket_reads_footers_not_rows(s3: S3Server, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """runs(URI) equals runs(local) but for log_dir; finished runs are never read row by row."""
    save_dir = tmp_path / "logs"
    write_run(save_dir, "mnist", optimizer="adam")
    write_run(save_dir, "mnist", rows=30, optimizer="sgd")
    write_run(save_dir, "cifar", rows=40, lr=0.5)
    upload_save_dir(save_dir, s3.filesystem(), f"{s3.bucket_name}/logs")
    expected = runs_without_log_dir(test_tube.runs(save_dir))

    def no_rows(*args: Any, **kwargs: Any) -> pa.Table:
        raise AssertionError("a finished run was read row by row")

    monkeypatch.setattr(_runs, "read_run", no_rows)
    table = test_tube.runs(s3.uri(s3.bucket_name, "logs"))
    assert runs_without_log_dir(table) == expected
    assert table.column("log_dir").to_pylist()[0] == (
        f"s3://{s3.bucket_name}/logs/cifar/version_0?{s3.query()}")  # the URI, without the credentials
    assert table.column("optimizer").to_pylist() == ["adam", "adam", "sgd"]
    one = test_tube.runs(f"{s3.bucket_name}/logs", "mnist", filesystem=s3.filesystem())
    assert one.column("version").to_pylist() == [0, 1]
    # an experiment's folder as save_dir
    assert test_tube.runs(s3.uri(s3.bucket_name, "logs/mnist")).column("version").to_pylist() == [0, 1]


def rows(table: pa.Table) -> list[dict[str, Any]]:
    """The rows as dicts, NaN as the text "nan" (NaN != NaN would fail any comparison)."""
    out = table.to_pylist()
    for row in out:
        for key, value in row.items():
            if isinstance(value, float) and value != value:
                row[key] = "nan"
    return out


def runs_without_log_dir(table: pa.Table) -> list[dict[str, Any]]:
    return rows(table.drop_columns(["log_dir"]))


def fetches(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the objects the read layer fetches from now on, in order (a spy on StoredRun.read_bytes)."""
    fetched: list[str] = []
    original = StoredRun.read_bytes

    def spy(run: StoredRun, name: str) -> bytes | None:
        fetched.append(name)
        return original(run, name)

    monkeypatch.setattr(StoredRun, "read_bytes", spy)
    return fetched


def test_runs_of_a_closed_run_in_a_bucket_reads_its_summary_not_its_files(s3: S3Server, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The summary close() recorded answers: no footer, segment or column fetched; a file uploaded later is read."""
    save_dir = tmp_path / "logs"
    write_run(save_dir, "mnist")
    write_run(save_dir, "mnist", rows=30)
    fs = s3.filesystem()
    upload_save_dir(save_dir, fs, f"{s3.bucket_name}/logs")
    expected = runs_without_log_dir(test_tube.runs(save_dir))
    def no_file(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a file of a run with a summary was read")

    with monkeypatch.context() as m:
        fetched = fetches(m)
        for name in ("parquet_metadata", "read_parquet", "last_frames", "frames"):
            m.setattr(StoredRun, name, no_file)
        m.setattr(_runs, "read_run", no_file)
        _runs._SUMMARIES.items.clear()
        assert runs_without_log_dir(test_tube.runs(s3.uri(s3.bucket_name, "logs"))) == expected
    assert sorted(fetched) == [_layout.META, _layout.META, _layout.TAGS, _layout.TAGS]
    # metrics.parquet of version_1 uploaded again after meta.experiment (same bytes: only its time is newer)
    parquet = save_dir / "mnist" / "version_1" / _layout.PARQUET
    meta_time = fs.get_file_info(f"{s3.bucket_name}/logs/mnist/version_1/{_layout.META}").mtime_ns
    for _ in range(1000):  # bounded: a store's times may be whole seconds
        with fs.open_output_stream(f"{s3.bucket_name}/logs/mnist/version_1/{_layout.PARQUET}") as out:
            out.write(parquet.read_bytes())
        if fs.get_file_info(f"{s3.bucket_name}/logs/mnist/version_1/{_layout.PARQUET}").mtime_ns > meta_time:
            break
    else:
        pytest.fail("the store never gave the new upload a time after meta.experiment's")
    footers: list[str] = []
    metadata = StoredRun.parquet_metadata

    def footer(run: StoredRun) -> Any:
        footers.append(run.shown)
        return metadata(run)

    monkeypatch.setattr(StoredRun, "parquet_metadata", footer)
    _runs._SUMMARIES.items.clear()
    assert runs_without_log_dir(test_tube.runs(s3.uri(s3.bucket_name, "logs"))) == expected
    assert [f.split("?")[0].rsplit("/", 1)[1] for f in footers] == ["version_1"]


def test_runs_calls_a_run_without_heartbeat_crashed(s3: S3Server, tmp_path: Path) -> None:
    """A run on another host whose meta.experiment says running is crashed once updated_at is old."""
    fs = s3.filesystem()
    log_dir = write_run(tmp_path / "logs", rows=10)
    meta = json.loads((log_dir / _layout.META).read_text())
    for version, age in ((1, timedelta(seconds=5)), (2, timedelta(hours=1))):
        beat = (datetime.now(timezone.utc) - age).strftime("%Y-%m-%d %H:%M:%S.%f")
        stale = {**meta, "status": "running", "host": "another-host", "pid": 4242, "updated_at": beat,
                 "version": version}
        (log_dir / _layout.META).write_text(json.dumps(stale))
        (log_dir / _layout.PARQUET).unlink(missing_ok=True)  # a running run has no complete file yet
        upload_run(log_dir, fs, f"{s3.bucket_name}/logs/mnist/version_{version}")
    table = test_tube.runs(s3.uri(s3.bucket_name, "logs"))
    assert table.column("status").to_pylist() == ["running", "crashed"]
    assert table.column("rows").to_pylist() == [10, 10]


def test_a_bad_uri_is_a_clear_error_naming_it(s3: S3Server, tmp_path: Path) -> None:
    """A scheme pyarrow does not know, or a bucket prefix with nothing in it: errors that name the URI."""
    with pytest.raises(ValueError, match="nosuch://bucket/logs.*not a URI pyarrow can open"):
        test_tube.read("nosuch://bucket/logs")
    with pytest.raises(ValueError, match="nosuch://bucket/logs"):
        test_tube.runs("nosuch://bucket/logs")
    uri = s3.uri(s3.bucket_name, "empty")
    with pytest.raises(FileNotFoundError, match=f"s3://{s3.bucket_name}/empty"):
        test_tube.runs(uri)
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        test_tube.read(uri)
    proc = subprocess.run([*CLI, "ls", "nosuch://bucket/logs"], capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 2 and "nosuch://bucket/logs" in proc.stderr and "Traceback" not in proc.stderr
    # the secret of a URI never shows in a message
    proc = subprocess.run([*CLI, "show", uri], capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 2 and "is not a folder" in proc.stderr and "testing@" not in proc.stderr


def cli(s3: S3Server, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **s3.env()}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=TIMEOUT, env=env)


def test_cli_ls_show_and_tail_over_a_uri(s3: S3Server, tmp_path: Path) -> None:
    """ls lists the bucket's runs, show prints one run, tail prints its last rows, as they do for a folder."""
    save_dir = tmp_path / "logs"
    write_run(save_dir, "mnist")
    write_run(save_dir, "mnist", rows=20)
    upload_save_dir(save_dir, s3.filesystem(), f"{s3.bucket_name}/logs")
    ls = cli(s3, "ls", s3.uri(s3.bucket_name, "logs"), "--csv")
    assert ls.returncode == 0, ls.stderr
    local = cli(s3, "ls", str(save_dir), "--csv")
    drop = lambda text: [line.split(",", 3)[:2] + line.split(",", 3)[3:] for line in text.splitlines()]  # noqa: E731
    assert drop(ls.stdout) == drop(local.stdout)  # every column but log_dir (the third)

    run = s3.uri(s3.bucket_name, "logs/mnist/version_1")
    show = cli(s3, "show", run, "--rows", "3")
    assert show.returncode == 0, show.stderr
    assert "run         mnist/version_1" in show.stdout and "status      finished" in show.stdout
    assert "rows        20 (steps 0..19)" in show.stdout and "1 file in media/" in show.stdout
    assert "testing@" not in show.stdout  # credentials stay out of log_dir
    local_show = cli(s3, "show", str(save_dir / "mnist" / "version_1"), "--rows", "3").stdout
    assert show.stdout.split("last 3 rows")[1] == local_show.split("last 3 rows")[1]

    tail = cli(s3, "tail", run, "--rows", "4")
    assert tail.returncode == 0, tail.stderr
    local_tail = cli(s3, "tail", str(save_dir / "mnist" / "version_1"), "--rows", "4")
    assert tail.stdout == local_tail.stdout and len(tail.stdout.splitlines()) == 5
    assert "the run finished" in tail.stderr

    ranks = cli(s3, "show", s3.uri(s3.bucket_name, "logs/mnist"))
    assert ranks.returncode == 2 and "is not a run folder" in ranks.stderr


def test_cli_plot_over_a_uri(s3: S3Server, tmp_path: Path) -> None:
    """plot takes a bucket's save_dir like a local one: one line per run."""
    pytest.importorskip("matplotlib")
    save_dir = tmp_path / "logs"
    write_run(save_dir, "mnist")
    write_run(save_dir, "mnist", rows=20)
    upload_save_dir(save_dir, s3.filesystem(), f"{s3.bucket_name}/logs")
    out = tmp_path / "loss.svg"
    proc = cli(s3, "plot", s3.uri(s3.bucket_name, "logs/mnist"), "--metric", "loss", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout and "(2 runs)" in proc.stdout and out.read_bytes().startswith(b"<?xml")


def test_serve_over_a_uri_lists_charts_and_shows_images(s3: S3Server, tmp_path: Path) -> None:
    """The web page's API over a bucket answers as over the local folder it was copied from."""
    save_dir = tmp_path / "logs"
    write_run(save_dir, "mnist")
    write_run(save_dir, "cifar", rows=20)
    upload_save_dir(save_dir, s3.filesystem(), f"{s3.bucket_name}/logs")
    remote, local = Running(s3.uri(s3.bucket_name, "logs")), Running(save_dir)  # type: ignore[arg-type]
    try:
        runs = get_json(remote.url + "api/runs")
        assert runs["save_dir"] == f"s3://{s3.bucket_name}/logs?{s3.query()}"
        expected = get_json(local.url + "api/runs")
        assert [{k: v for k, v in r.items()} for r in runs["runs"]] == expected["runs"]
        one = get_json(remote.url + "api/run?" + q(name="mnist", version=0))
        assert one == get_json(local.url + "api/run?" + q(name="mnist", version=0))
        assert one["media"]["sample_png"] == [[0, "sample_0.png"], [20, "sample_20.png"], [40, "sample_40.png"]]
        query = "api/series_many?" + q(run="mnist/version_0", metric="loss") + "&" + q(run="cifar/version_0")
        many = json.loads(get(remote.url + query)[2])
        assert many == json.loads(get(local.url + query)[2]) and len(many["series"]) == 2
        status, kind, body = get(remote.url + "media?" + q(name="mnist", version=0, file="sample_20.png"))
        assert (status, kind) == (200, "image/png")
        assert body == (save_dir / "mnist" / "version_0" / "media" / "sample_20.png").read_bytes()
        assert get(remote.url + "media?" + q(name="mnist", version=0, file="../meta.experiment"))[0] == 404
        assert get(remote.url + "api/run?" + q(name="mnist", version=7))[0] == 404
    finally:
        remote.stop()
        local.stop()


def test_a_folder_copied_whole_reads_from_its_journal_file(s3: S3Server, tmp_path: Path) -> None:
    """A run synced to the bucket as it is on disk (_journal.arrows, no segments) reads and lists as the local one."""
    save_dir = tmp_path / "logs"
    log_dir = write_run(save_dir)
    fs = s3.filesystem()
    dest = f"{s3.bucket_name}/logs/mnist/version_0"
    for file in sorted(p for p in log_dir.rglob("*") if p.is_file() and not p.name.startswith(".")):
        if file.name == _layout.PARQUET:
            continue  # copied last, after the journal, as a sync in name order might not do
        with fs.open_output_stream(f"{dest}/{file.relative_to(log_dir).as_posix()}") as out:
            out.write(file.read_bytes())
    with fs.open_output_stream(f"{dest}/{_layout.PARQUET}") as out:
        out.write((log_dir / _layout.PARQUET).read_bytes())
    assert rows(test_tube.read(dest, filesystem=fs)) == rows(test_tube.read(log_dir))
    assert runs_without_log_dir(test_tube.runs(s3.uri(s3.bucket_name, "logs"))) == \
        runs_without_log_dir(test_tube.runs(save_dir))


def test_per_rank_runs_in_a_bucket_are_one_row_per_rank(s3: S3Server, tmp_path: Path) -> None:
    """version_<N>/rank_<r> folders on object storage: one row per rank, as on disk; each rank reads back."""
    save_dir = build_per_rank(tmp_path / "logs")
    upload_save_dir(save_dir, s3.filesystem(), f"{s3.bucket_name}/logs")
    table = test_tube.runs(s3.uri(s3.bucket_name, "logs"))
    assert [(r["name"], r["version"], r["rank"]) for r in table.to_pylist()] == [("ddp", 3, 0), ("ddp", 3, 1),
                                                                                ("plain", 0, None)]
    assert runs_without_log_dir(table) == runs_without_log_dir(test_tube.runs(save_dir))
    rank = test_tube.read(s3.uri(s3.bucket_name, "logs/ddp/version_3/rank_1"))
    assert rows(rank) == rows(test_tube.read(save_dir / "ddp" / "version_3" / "rank_1"))
    proc = cli(s3, "show", s3.uri(s3.bucket_name, "logs/ddp/version_3"))
    assert proc.returncode == 2 and "holds one run per rank" in proc.stderr
    assert f"s3://{s3.bucket_name}/logs/ddp/version_3/rank_0?" in proc.stderr


def test_tail_over_a_uri_follows_new_segments_until_the_run_ends(s3: S3Server, tmp_path: Path) -> None:
    """tail prints the segments there are, then each one uploaded later, and stops when meta says finished."""
    log_dir = write_run(tmp_path / "logs", rows=60)
    fs = s3.filesystem()
    dest = f"{s3.bucket_name}/logs/mnist/version_0"
    meta = json.loads((log_dir / _layout.META).read_text())
    pieces = segments(log_dir / _layout.JOURNAL)
    assert len(pieces) == 6

    def put(name: str, data: bytes) -> None:
        with fs.open_output_stream(f"{dest}/{name}") as out:
            out.write(data)

    def put_meta(**changes: Any) -> None:
        put(_layout.META, json.dumps({**meta, **changes}).encode())

    beat = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
    put_meta(status="running", host="another-host", updated_at=beat, ended_at=None)
    for offset, data in pieces[:2]:
        put(f"{_layout.JOURNAL_SEGMENTS}/{_layout.segment_name(offset)}", data)
    env = {**os.environ, **s3.env()}
    with subprocess.Popen([*CLI, "tail", s3.uri(s3.bucket_name, "logs/mnist/version_0"), "--rows", "100",
                           "--interval", "0.1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=env) as proc:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(21)]  # the header and the 20 rows uploaded so far
        assert lines[0].split()[:3] == ["step", "created_at", "loss"]
        assert [int(line.split()[0]) for line in lines[1:]] == list(range(20))
        for offset, data in pieces[2:]:
            put(f"{_layout.JOURNAL_SEGMENTS}/{_layout.segment_name(offset)}", data)
        put_meta()  # finished
        out, err = proc.communicate(timeout=TIMEOUT)
    steps = [int(line.split()[0]) for line in out.splitlines() if line.split()[0].isdigit()]
    assert steps == list(range(20, 60)) and proc.returncode == 0 and "the run finished" in err


def test_read_of_a_closed_run_takes_metrics_parquet_and_of_a_running_one_every_segment(
        s3: S3Server, uploaded: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A finished run of many segments is one file to read; a running one is read from its segments, in order."""
    log_dir, dest = uploaded
    fs = s3.filesystem()
    expected = rows(test_tube.read(log_dir))
    fetched = fetches(monkeypatch)
    assert rows(test_tube.read(dest, filesystem=fs)) == expected
    assert not [name for name in fetched if name.startswith(_layout.JOURNAL_SEGMENTS)]

    meta = json.loads((log_dir / _layout.META).read_text())
    beat = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
    with fs.open_output_stream(f"{dest}/{_layout.META}") as out:
        out.write(json.dumps({**meta, "status": "running", "host": "another-host", "updated_at": beat}).encode())
    fetched.clear()
    table = test_tube.read(dest, filesystem=fs)
    assert rows(table) == expected and table.schema == test_tube.read(log_dir).schema
    assert sorted(name for name in fetched if name.startswith(_layout.JOURNAL_SEGMENTS)) == [
        f"{_layout.JOURNAL_SEGMENTS}/{_layout.segment_name(offset)}" for offset, _ in segments(log_dir / _layout.JOURNAL)]
