"""test_tube._store._runs: the runs table over real runs (finished, failed, crashed, resumed, legacy)."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import test_tube
from test_tube._store._reader import StoredRun
from test_tube._store import _journal, _layout, _runs
from test_tube._store._runs import run_status, runs

CRASH_SCRIPT = textwrap.dedent("""
    import os, sys
    import test_tube
    exp = test_tube.Experiment(name="demo", save_dir=sys.argv[1], record_git=False, description="killed")
    exp.tag({"lr": 0.1, "optimizer": "sgd"})
    for i in range(4):
        exp.log({"loss": 2.0 - i / 10, "acc": i})
    exp.save()
    os.kill(os.getpid(), 9)
""")


def make_crashed(save_dir: Path) -> None:
    """A run whose process was killed with SIGKILL after save()."""
    proc = subprocess.run([sys.executable, "-c", CRASH_SCRIPT, str(save_dir)], capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]


def make_legacy(save_dir: Path) -> Path:
    """A version folder as test-tube 0.7.5 left it: meta without status, metrics.csv only."""
    log_dir = save_dir / "legacy" / "version_0"
    (log_dir / "media").mkdir(parents=True)
    meta = {"name": "legacy", "version": 0, "tags_path": str(log_dir / "meta_tags.csv"),
            "metrics_path": str(log_dir / "metrics.csv"), "autosave": False, "description": "old run",
            "created_at": "2026-11-29 17:33:26.053140", "exp_hash": "legacy_v0"}
    (log_dir / "meta.experiment").write_text(json.dumps(meta))
    (log_dir / "meta_tags.csv").write_text("key,value\nlr,0.001\nrows,7\n")
    (log_dir / "metrics.csv").write_text(
        "train_loss,epoch,created_at,val_loss,val_acc\n"
        "0.9,0.0,2026-11-29 17:33:26.054121,,\n"
        ",,2026-11-29 17:33:26.054156,1.1,0.4\n"
        "0.7,1.0,2026-11-29 17:33:26.054176,,\n"
    )
    return log_dir


def build_save_dir(save_dir: Path) -> Path:
    """demo/version_0 finished with an image, _1 failed, _2 crashed, _3 resumed; legacy/version_0."""
    opts: dict[str, Any] = {"save_dir": save_dir, "record_git": False}
    with test_tube.Experiment(name="demo", description="baseline, with a long description to show", **opts) as exp:
        exp.tag({"lr": 0.01, "optimizer": "adam", "layers": [64, 64], "augment": True, "status": "tuned"})
        for i in range(20):
            row: dict[str, Any] = {"loss": 1.0 / (i + 1), "acc": i}
            if i % 5 == 4:
                row["val_loss"] = 2.0 / (i + 1)
            exp.log(row)
        exp.log({"png_sample": np.full((16, 16, 3), 200, np.uint8)})
    with pytest.raises(RuntimeError), test_tube.Experiment(name="demo", **opts) as exp:
        exp.tag({"lr": 0.1, "optimizer": "adam", "layers": [32]})
        exp.log({"loss": float("nan"), "acc": 3})
        raise RuntimeError("diverged")
    make_crashed(save_dir)
    with test_tube.Experiment(name="demo", description="resumed", **opts) as exp:
        exp.tag({"lr": 0.001})
        for i in range(5):
            exp.log({"loss": 0.5 - i / 100, "acc": 10 + i})
    with test_tube.Experiment(name="demo", version=3, **opts) as exp:
        for i in range(5):
            exp.log({"loss": 0.4 - i / 100, "acc": 2.5})  # acc widens to float
    make_legacy(save_dir)
    return save_dir


@pytest.fixture(scope="module")
def save_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One save_dir with every kind of run, built once for this module."""
    return build_save_dir(tmp_path_factory.mktemp("runs") / "logs")


@pytest.fixture(scope="module")
def table(save_dir: Path) -> pa.Table:
    """runs() over the shared save_dir."""
    return runs(save_dir)


def by_version(table: pa.Table, name: str = "demo") -> dict[int, dict[str, Any]]:
    return {r["version"]: r for r in table.to_pylist() if r["name"] == name}


def test_one_row_per_version_ordered_by_name_then_version(table: pa.Table) -> None:
    """Every version folder is one row, ordered by experiment then version."""
    assert list(zip(table.column("name").to_pylist(), table.column("version").to_pylist())) == [
        ("demo", 0), ("demo", 1), ("demo", 2), ("demo", 3), ("legacy", 0)]


def test_builtin_columns_come_first_with_their_types(table: pa.Table) -> None:
    """The built-in columns lead the table, typed."""
    assert tuple(table.column_names[:8]) == _runs.BUILTIN_COLUMNS
    types = dict(zip(table.column_names, table.schema.types))
    assert types["version"] == pa.int64() and types["rows"] == pa.int64() and types["last_step"] == pa.int64()
    assert types["created_at"] == pa.timestamp("us", tz="UTC")


def test_statuses(table: pa.Table) -> None:
    """finished, failed (raised in a with block), crashed (SIGKILL), unknown (0.7.5)."""
    statuses = dict(zip(zip(table.column("name").to_pylist(), table.column("version").to_pylist()),
                        table.column("status").to_pylist()))
    assert statuses == {("demo", 0): "finished", ("demo", 1): "failed", ("demo", 2): "crashed",
                        ("demo", 3): "finished", ("legacy", 0): "unknown"}


def test_rows_last_step_and_metric_summaries(table: pa.Table) -> None:
    """Row counts, last steps and last/min/max are those of the logged values."""
    rows = by_version(table)
    first = rows[0]
    assert first["rows"] == 21 and first["last_step"] == 20
    assert first["loss.last"] == pytest.approx(1 / 20) and first["loss.min"] == pytest.approx(1 / 20)
    assert first["loss.max"] == 1.0
    assert first["val_loss.last"] == pytest.approx(2 / 20)  # sparse: last logged, not the last row
    assert (first["val_loss.min"], first["val_loss.max"]) == (pytest.approx(2 / 20), pytest.approx(2 / 5))
    assert rows[2]["rows"] == 4 and rows[2]["loss.last"] == pytest.approx(1.7)
    assert rows[3]["rows"] == 10 and rows[3]["last_step"] == 9


def test_nan_is_a_last_value_but_not_a_bound(table: pa.Table) -> None:
    """A diverged loss reads NaN as its last value; min and max ignore NaN."""
    failed = by_version(table)[1]
    assert math.isnan(failed["loss.last"])
    assert math.isnan(failed["loss.min"]) and math.isnan(failed["loss.max"])  # only NaN was logged
    assert failed["val_loss.last"] is None


def test_metric_widened_to_float_across_a_resume(table: pa.Table) -> None:
    """acc was int, then 2.5 after the resume: the column is float and the values survive."""
    assert table.schema.field("acc.last").type == pa.float64()
    resumed = by_version(table)[3]
    assert (resumed["acc.last"], resumed["acc.min"], resumed["acc.max"]) == (2.5, 2.5, 14.0)


def test_int_metric_stays_int_when_every_run_agrees(tmp_path: Path) -> None:
    """A metric logged only as ints in every run gives int64 columns."""
    for _ in range(2):
        with test_tube.Experiment(name="ints", save_dir=tmp_path, record_git=False) as exp:
            exp.log({"epoch": 3})
    table = runs(tmp_path)
    assert table.schema.field("epoch.last").type == pa.int64()
    assert table.column("epoch.max").to_pylist() == [3, 3]


def test_a_zero_minimum_is_not_negative_zero(tmp_path: Path) -> None:
    """Parquet stores a zero minimum as -0.0; the table says 0.0."""
    with test_tube.Experiment(name="zero", save_dir=tmp_path, record_git=False) as exp:
        exp.log({"acc": 0.0})
        exp.log({"acc": 0.5})
    value = runs(tmp_path).column("acc.min")[0].as_py()
    assert value == 0.0 and math.copysign(1.0, value) == 1.0


def test_an_experiment_folder_is_accepted_as_save_dir(save_dir: Path) -> None:
    """runs() on <save_dir>/<name> lists that experiment's versions."""
    table = runs(save_dir / "demo")
    assert table.column("name").to_pylist() == ["demo"] * 4 and table.column("version").to_pylist() == [0, 1, 2, 3]


def test_tags_are_typed_columns_named_like_the_tag(table: pa.Table) -> None:
    """Tags become columns; numbers and bools are typed, lists keep their text."""
    types = dict(zip(table.column_names, table.schema.types))
    assert types["lr"] == pa.float64() and types["augment"] == pa.bool_()
    assert types["optimizer"] == pa.string() and types["layers"] == pa.string()
    rows = by_version(table)
    assert [rows[v]["lr"] for v in range(4)] == [0.01, 0.1, 0.1, 0.001]
    assert rows[0]["layers"] == "[64, 64]" and rows[3]["augment"] is None


def test_a_tag_named_like_a_builtin_column_is_prefixed(table: pa.Table) -> None:
    """Tags 'status' and 'rows' do not shadow the built-in columns."""
    assert by_version(table)[0]["tag:status"] == "tuned"
    assert by_version(table, "legacy")[0]["tag:rows"] == 7
    assert "status" in table.column_names and by_version(table)[0]["status"] == "finished"


def test_legacy_run_is_read_from_its_csv(table: pa.Table) -> None:
    """A 0.7.5 folder: rows from metrics.csv, no step, description and created_at from its meta."""
    legacy = by_version(table, "legacy")[0]
    assert legacy["rows"] == 3 and legacy["last_step"] is None
    assert legacy["train_loss.last"] == 0.7 and legacy["val_acc.max"] == 0.4
    assert legacy["description"] == "old run"
    assert legacy["created_at"] == datetime(2026, 11, 29, 17, 33, 26, 53140, tzinfo=timezone.utc)


def test_name_selects_one_experiment(save_dir: Path) -> None:
    """runs(save_dir, name) keeps that experiment only."""
    assert set(runs(save_dir, "legacy").column("name").to_pylist()) == {"legacy"}


def test_missing_folders_raise_file_not_found(tmp_path: Path, save_dir: Path) -> None:
    """A wrong save_dir or experiment name raises FileNotFoundError naming it."""
    with pytest.raises(FileNotFoundError, match="nowhere"):
        runs(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="nope"):
        runs(save_dir, "nope")


def test_empty_save_dir_gives_an_empty_table(tmp_path: Path) -> None:
    """No runs: zero rows, still the built-in columns."""
    table = runs(tmp_path)
    assert table.num_rows == 0 and tuple(table.column_names) == _runs.BUILTIN_COLUMNS


def test_finished_runs_are_not_read_row_by_row(save_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Finished runs are summarised from the Parquet footer and journal tail, as read() would."""
    _runs._SUMMARIES.items.clear()  # summaries of earlier calls in this process would answer instead
    with monkeypatch.context() as m:
        m.setattr(_runs, "_parquet_complete", lambda run: False)  # every run through read()
        m.setattr(_runs, "_from_record", lambda summary, run: False)  # (not from the summary close() recorded)
        expected = runs(save_dir, "demo").to_pylist()
    calls: list[str] = []

    def spy(run: StoredRun) -> pa.Table:
        calls.append(os.path.basename(run.path))
        return test_tube.read(run.path)

    monkeypatch.setattr(_runs, "read_run", spy)
    _runs._SUMMARIES.items.clear()
    assert _equal_rows(runs(save_dir, "demo").to_pylist(), expected)
    assert calls == ["version_2"]  # the crashed one only


def test_a_run_summarised_before_is_read_again_once_its_files_change(tmp_path: Path) -> None:
    """runs() keeps summaries of finished runs between calls, and a resumed run's new rows still show."""
    with test_tube.Experiment(name="x", save_dir=tmp_path, record_git=False) as exp:
        exp.log({"loss": 1.0})
    assert runs(tmp_path).column("rows").to_pylist() == [1]
    assert runs(tmp_path).column("rows").to_pylist() == [1]
    with test_tube.Experiment(name="x", save_dir=tmp_path, version=0, record_git=False) as exp:
        assert runs(tmp_path).column("status").to_pylist() == ["running"]
        exp.log({"loss": 0.5})
        exp.tag({"lr": 0.1})
    table = runs(tmp_path)
    assert table.column("rows").to_pylist() == [2] and table.column("loss.last").to_pylist() == [0.5]
    assert table.column("status").to_pylist() == ["finished"] and table.column("lr").to_pylist() == [0.1]


def test_a_parquet_older_than_the_journal_is_not_trusted(tmp_path: Path) -> None:
    """When the journal was written after metrics.parquet, the rows come from the journal."""
    with test_tube.Experiment(name="x", save_dir=tmp_path, record_git=False) as exp:
        exp.log({"loss": 1.0})
    log_dir = Path(exp.log_dir)
    stale = pq.read_table(log_dir / "metrics.parquet")
    with open(log_dir / "_journal.arrows", "ab") as f:
        table = pa.table({"step": pa.array([1], pa.int64()),
                          "created_at": pa.array([0], pa.timestamp("us", tz="UTC")), "loss": [0.5]})
        for piece in _journal.encode(table):
            f.write(memoryview(piece))
    os.utime(log_dir / "metrics.parquet", ns=(1, 1))
    row = runs(tmp_path).to_pylist()[0]
    assert stale.num_rows == 1 and row["rows"] == 2 and row["loss.last"] == 0.5 and row["loss.min"] == 0.5


def test_a_damaged_parquet_falls_back_to_the_journal(tmp_path: Path) -> None:
    """A metrics.parquet that cannot be parsed is skipped: the journal has every row."""
    with test_tube.Experiment(name="x", save_dir=tmp_path, record_git=False) as exp:
        exp.log({"loss": 1.0})
        exp.log({"loss": 0.25})
    (Path(exp.log_dir) / "metrics.parquet").write_bytes(b"not parquet")
    row = runs(tmp_path).to_pylist()[0]
    assert (row["status"], row["rows"], row["loss.last"], row["loss.max"]) == ("finished", 2, 0.25, 1.0)


def test_an_unreadable_run_warns_and_keeps_its_row(tmp_path: Path) -> None:
    """When no file of a run can be read, runs() warns naming it and leaves its counts null."""
    with test_tube.Experiment(name="x", save_dir=tmp_path, record_git=False) as exp:
        exp.tag({"lr": 0.5})
        exp.log({"loss": 1.0})
    (Path(exp.log_dir) / "_journal.arrows").write_bytes(b"garbage")
    (Path(exp.log_dir) / "metrics.parquet").write_bytes(b"x")
    with pytest.warns(RuntimeWarning, match="version_0"):
        row = runs(tmp_path).to_pylist()[0]
    assert (row["status"], row["rows"], row["lr"]) == ("finished", None, 0.5)


def test_runs_never_modifies_the_runs(save_dir: Path) -> None:
    """Every file keeps its bytes and modification time."""
    before = snapshot(save_dir)
    runs(save_dir)
    assert snapshot(save_dir) == before


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under root: its mtime and content."""
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(root.rglob("*"))
            if p.is_file()}


# -- status rules ----------------------------------------------------------------


def _meta(**changes: Any) -> dict[str, Any]:
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    meta: dict[str, Any] = {"status": "running", "pid": os.getpid(), "host": socket.gethostname(),
                            "updated_at": str(now), "flush_interval": 2.0}
    meta.update(changes)
    return meta


def test_status_of_a_live_writer_on_this_host_is_running() -> None:
    """Our own process is alive: running."""
    assert run_status(_meta()) == "running"


def test_status_of_a_dead_pid_on_this_host_is_crashed() -> None:
    """A pid that no longer exists: crashed."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    assert run_status(_meta(pid=int(proc.stdout))) == "crashed"


def test_a_reused_pid_does_not_keep_a_run_running() -> None:
    """A live process that started after the last heartbeat is not the writer."""
    old = str(datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(hours=1))
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as proc:
        try:
            assert run_status(_meta(pid=proc.pid, updated_at=old)) == "crashed"
        finally:
            proc.kill()


def test_other_host_uses_the_heartbeat_bound() -> None:
    """On another host, a heartbeat older than max(60 s, 10 flush intervals) means crashed."""
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    recent = str(now - timedelta(seconds=30))
    stale = str(now - timedelta(seconds=_runs.HEARTBEAT_BOUND + 5))
    assert run_status(_meta(host="elsewhere", updated_at=recent)) == "running"
    assert run_status(_meta(host="elsewhere", updated_at=stale)) == "crashed"
    assert run_status(_meta(host="elsewhere", updated_at=stale, flush_interval=60.0)) == "running"


def test_closed_and_legacy_statuses_pass_through() -> None:
    """finished and failed are read as written; no status at all is unknown."""
    assert run_status(_meta(status="finished", pid=1)) == "finished"
    assert run_status(_meta(status="failed")) == "failed"
    assert run_status({"name": "old"}) == "unknown"


def test_running_run_is_summarised_from_its_journal(tmp_path: Path) -> None:
    """An open Experiment in this process: running, with every saved row counted."""
    exp = test_tube.Experiment(name="live", save_dir=tmp_path, record_git=False, flush_interval=30.0)
    try:
        for i in range(7):
            exp.log({"loss": float(i)})
        exp.save()
        row = runs(tmp_path).to_pylist()[0]
        assert (row["status"], row["rows"], row["last_step"], row["loss.max"]) == ("running", 7, 6, 6.0)
    finally:
        exp.close()


# -- the fast path agrees with reading every row ----------------------------------

_values = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True, width=64))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    columns=st.lists(st.lists(_values, min_size=1, max_size=40), min_size=1, max_size=3),
    ints=st.lists(st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)), min_size=1, max_size=40),
    cuts=st.lists(st.integers(1, 39), max_size=5),
    row_group=st.integers(1, 50),
)
def test_footer_and_journal_tail_agree_with_every_row(
    tmp_path: Path, columns: list[list[Any]], ints: list[Any], cuts: list[int], row_group: int
) -> None:
    """For any rows, frames and row groups, the fast summary equals the one computed from every row."""
    n = min(len(ints), *(len(c) for c in columns))
    data: dict[str, Any] = {
        "step": pa.array(range(n), pa.int64()),
        "created_at": pa.array(range(n), pa.timestamp("us", tz="UTC")),
        "note": pa.array(["TTJ1" * (i % 3) for i in range(n)], pa.large_string()),  # the magic inside payloads
        "count": pa.array(ints[:n], pa.int64()),
    }
    for i, values in enumerate(columns):
        data[f"m{i}"] = pa.array(values[:n], pa.float64())
    table = pa.table(data)
    log_dir = tmp_path / f"case{len(list(tmp_path.iterdir()))}"
    log_dir.mkdir()
    bounds = sorted({0, n, *(c for c in cuts if c < n)})
    with open(log_dir / _layout.JOURNAL, "wb") as f:
        for start, stop in zip(bounds, bounds[1:]):
            for piece in _journal.encode(table.slice(start, stop - start)):
                f.write(memoryview(piece))
    pq.write_table(table, log_dir / _layout.PARQUET, row_group_size=row_group, compression="zstd",
                   use_dictionary=False)
    (log_dir / _layout.META).write_text(json.dumps({"status": "finished"}))
    fast = _runs.summarise(str(log_dir), "x", 0)
    slow = _runs.Summary("x", 0, str(log_dir), {}, "finished")
    _runs._from_table(slow, test_tube.read(log_dir))
    assert (fast.rows, fast.last_step) == (slow.rows, slow.last_step)
    assert fast.metrics.keys() == slow.metrics.keys()
    for name in fast.metrics:
        a, b = fast.metrics[name], slow.metrics[name]
        assert a.type == b.type, name
        assert _same([a.last, a.min, a.max], [b.last, b.min, b.max]), (name, a, b)


def _write_run(log_dir: Path, table: pa.Table, frames: list[int] | None) -> None:
    """A finished run written directly: journal frames of the given sizes (None: no journal), then Parquet."""
    log_dir.mkdir(parents=True)
    if frames is not None:
        with open(log_dir / _layout.JOURNAL, "wb") as f:
            start = 0
            for size in frames:
                for piece in _journal.encode(table.slice(start, size)):
                    f.write(memoryview(piece))
                start += size
    pq.write_table(table, log_dir / _layout.PARQUET)
    (log_dir / _layout.META).write_text(json.dumps({"status": "finished"}))


@pytest.mark.parametrize("frames", [[1] * 20, None], ids=["value-beyond-16-frames", "no-journal"])
def test_last_values_out_of_the_journals_reach_come_from_parquet(tmp_path: Path, frames: list[int] | None) -> None:
    """A value logged only in the first of 20 frames, or a run without journal, still gets its last value."""
    n = 20
    table = pa.table({
        "step": pa.array(range(n), pa.int64()),
        "created_at": pa.array(range(n), pa.timestamp("us", tz="UTC")),
        "rare": pa.array([7.5] + [None] * (n - 1), pa.float64()),
        "loss": pa.array([float(i) for i in range(n)]),
    })
    _write_run(tmp_path / "x" / "version_0", table, frames)
    row = runs(tmp_path).to_pylist()[0]
    assert (row["rows"], row["last_step"], row["rare.last"], row["loss.last"], row["loss.max"]) == (
        20, 19, 7.5, 19.0, 19.0)


def _same(a: list[Any], b: list[Any]) -> bool:
    return all(x == y or (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y))
               for x, y in zip(a, b))


def _equal_rows(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    return len(a) == len(b) and all(x.keys() == y.keys() and _same(list(x.values()), list(y.values()))
                                     for x, y in zip(a, b))


def test_benchmark_script_runs_on_a_tiny_fixture(tmp_path: Path) -> None:
    """benchmarks/bench_runs.py builds its runs, checks runs() on them and prints a row per size."""
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, str(root / "benchmarks" / "bench_runs.py"), "--sizes", "3,6", "--rows",
                           "1200", "--rounds", "2", "--old-src", str(root / "src"), "--dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "| runs | runs() s | us/run | again s | old runs() s | old/runs() | baseline s | baseline/runs() |" \
        in proc.stdout
    rows = [line.split(" | ")[0] for line in proc.stdout.splitlines() if line.startswith("| ") and "x |" in line]
    assert rows == ["| 3", "| 6"] * 2  # the table, then both trees each in a process of its own
    assert "| runs | old first s | first s | old/first | old runs() s | runs() s | old/runs() |" in proc.stdout


# -- per-rank runs (Experiment(per_rank=True)) ------------------------------------------


def build_per_rank(save_dir: Path) -> Path:
    """ddp/version_3/rank_0 and rank_1 (rank r logs 3 + r rows, loss = 10 * (r + 1) + step, an image on
    rank 1), next to an ordinary run plain/version_0."""
    for r in (0, 1):
        with test_tube.Experiment(save_dir=save_dir, name="ddp", version=3, rank=r, per_rank=True,
                                  record_git=False) as exp:
            exp.tag({"lr": 0.1, "worker": r})
            for step in range(3 + r):
                exp.log({"loss": 10.0 * (r + 1) + step, "acc": step / 10})
            if r == 1:
                exp.log({"sample_png": np.full((4, 4), 200, np.uint8)})
            exp.save()
    with test_tube.Experiment(save_dir=save_dir, name="plain", record_git=False) as exp:
        exp.log({"loss": 0.5})
    return save_dir


@pytest.fixture(scope="module")
def per_rank_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_per_rank(tmp_path_factory.mktemp("per_rank") / "logs")


def test_a_per_rank_version_is_one_row_per_rank(per_rank_dir: Path) -> None:
    """version_3 of a per_rank experiment gives two rows, ranks 0 and 1, each with its own folder, rows and metrics."""
    table = runs(per_rank_dir)
    assert table.column_names[:4] == ["name", "version", "rank", "log_dir"]
    assert table.schema.field("rank").type == pa.int64()
    rows = table.to_pylist()
    assert [(r["name"], r["version"], r["rank"]) for r in rows] == [("ddp", 3, 0), ("ddp", 3, 1), ("plain", 0, None)]
    rank0, rank1, plain = rows
    assert rank0["log_dir"] == str(per_rank_dir / "ddp" / "version_3" / "rank_0")
    assert rank1["log_dir"] == str(per_rank_dir / "ddp" / "version_3" / "rank_1")
    assert rank0["status"] == rank1["status"] == "finished"
    assert (rank0["rows"], rank1["rows"]) == (3, 5)  # rank 1: four rows and the image's
    assert (rank0["loss.last"], rank0["loss.min"], rank0["loss.max"]) == (12.0, 10.0, 12.0)
    assert (rank1["loss.last"], rank1["loss.min"], rank1["loss.max"]) == (23.0, 20.0, 23.0)
    assert (rank0["worker"], rank1["worker"], plain["worker"]) == (0, 1, None)
    assert plain["log_dir"] == str(per_rank_dir / "plain" / "version_0") and plain["loss.last"] == 0.5


def test_name_and_experiment_folder_list_the_ranks_too(per_rank_dir: Path) -> None:
    """runs(save_dir, name) and runs(experiment folder) look inside rank folders like runs(save_dir)."""
    for table in (runs(per_rank_dir, "ddp"), runs(per_rank_dir / "ddp")):
        assert table.column("rank").to_pylist() == [0, 1]
        assert table.column("rows").to_pylist() == [3, 5]


def test_tables_without_per_rank_runs_have_no_rank_column(per_rank_dir: Path, table: pa.Table) -> None:
    """Ordinary runs keep the columns they always had: rank appears only when some run has one."""
    assert "rank" not in table.column_names
    plain = runs(per_rank_dir, "plain")
    assert tuple(plain.column_names[:8]) == _runs.BUILTIN_COLUMNS and "rank" not in plain.column_names


def test_a_version_with_its_own_run_files_is_not_split_by_rank(tmp_path: Path) -> None:
    """A version folder that is a run itself stays one row, whatever folders it holds; rank_01 is no rank."""
    with test_tube.Experiment(save_dir=tmp_path, name="x", version=0, record_git=False) as exp:
        exp.log({"a": 1})
    (tmp_path / "x" / "version_0" / "rank_0").mkdir()
    with test_tube.Experiment(save_dir=tmp_path, name="y", version=0, rank=0, per_rank=True, record_git=False):
        pass
    (tmp_path / "y" / "version_0" / "rank_01").mkdir()
    (tmp_path / "y" / "version_0" / "rank_1_backup").mkdir()
    table = runs(tmp_path)
    assert [(r["name"], r["version"], r["rank"], r["rows"]) for r in table.to_pylist()] == [
        ("x", 0, None, 1), ("y", 0, 0, 0)]


def test_summarise_reads_name_version_and_rank_from_a_rank_folder(per_rank_dir: Path) -> None:
    """A rank folder summarised on its own knows its experiment, version and rank from the path."""
    summary = _runs.summarise(str(per_rank_dir / "ddp" / "version_3" / "rank_1"))
    assert (summary.name, summary.version, summary.rank, summary.rows) == ("ddp", 3, 1, 5)


def test_read_and_runs_take_a_file_uri_and_a_local_filesystem(tmp_path: Path) -> None:
    """file:// URIs and filesystem=LocalFileSystem() read as the plain path does; a wrong filesystem is named."""
    import pyarrow.fs as pafs

    with test_tube.Experiment(name="x", save_dir=tmp_path, record_git=False) as exp:
        exp.log({"loss": 1.0})
    log_dir = tmp_path / "x" / "version_0"
    expected = test_tube.read(log_dir).to_pylist()
    assert test_tube.read(f"file://{log_dir}").to_pylist() == expected
    assert test_tube.read(str(log_dir), filesystem=pafs.LocalFileSystem()).to_pylist() == expected
    assert runs(f"file://{tmp_path}").column("log_dir").to_pylist() == [str(log_dir)]
    with pytest.raises(TypeError, match="filesystem must be a pyarrow.fs.FileSystem, got str"):
        test_tube.runs(tmp_path, filesystem="s3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="is a URI; with filesystem= it must be a path"):
        test_tube.read(f"file://{log_dir}", filesystem=pafs.LocalFileSystem())


def test_a_runs_warning_names_the_callers_line(tmp_path: Path) -> None:
    """runs()'s warning about an unreadable file points at the line that called runs(), not into test_tube."""
    import warnings

    with test_tube.Experiment(name="bad", save_dir=tmp_path, record_git=False) as exp:
        exp.log({"loss": 1.0})
    (tmp_path / "bad" / "version_0" / _layout.TAGS).write_bytes(b"\xff\xfe")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        table = runs(tmp_path)
    assert table.column("status").to_pylist() == ["damaged"]
    assert [(w.category, w.filename) for w in seen] == [(RuntimeWarning, __file__)]
