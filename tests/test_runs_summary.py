"""The summary close() records in meta.experiment: runs() reads it, and gives the same table as from the files."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import test_tube
from test_tube._store import _journal, _layout, _runs
from test_tube._store._reader import StoredRun


def build(save_dir: Path) -> None:
    """Finished and failed runs with every kind of value, per-rank runs, a resumed-then-closed run."""
    with test_tube.Experiment(save_dir=save_dir, name="kinds", record_git=False) as exp:
        exp.tag({"lr": 0.1, "layers": 3, "fast": True, "opt": "adam", "shape": [1, 2]})
        for step in range(40):
            exp.log({"loss": 1.0 / (step + 1), "count": step * 3 - 7, "big": 2**62 + step,
                     "flag": step % 2 == 0, "note": f"s{step}",
                     "nan_last": math.nan if step == 39 else float(step),
                     "all_nan": math.nan, "up": math.inf if step > 30 else 1.0, "down": -math.inf,
                     "neg_zero": -0.0, "sparse": 0.5 * step if step % 10 == 0 else None}, step=step * 2)
            if step == 20:
                exp.save()  # two journal frames
    with test_tube.Experiment(save_dir=save_dir, name="kinds", record_git=False) as exp:
        exp.log({"loss": 3.0, "count": 1})
        exp.close(failed=True)
    with test_tube.Experiment(save_dir=save_dir, name="kinds", record_git=False) as exp:
        exp.tag({"lr": "high"})  # a tag that disagrees across runs: text
        exp.log({"count": 2.5})  # an int metric widened to float across runs
    for r in (0, 1):
        with test_tube.Experiment(save_dir=save_dir, name="ddp", version=0, rank=r, per_rank=True,
                                  record_git=False) as exp:
            for step in range(2 + r):
                exp.log({"loss": 10.0 * (r + 1) + step})
    with test_tube.Experiment(save_dir=save_dir, name="resumed", record_git=False) as exp:
        exp.log({"loss": 1.0, "epoch": 0})
    with test_tube.Experiment(save_dir=save_dir, name="resumed", version=0, record_git=False) as exp:
        exp.log({"loss": 0.25, "epoch": 1, "extra": 7})


@pytest.fixture(scope="module")
def save_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("summary") / "logs"
    build(root)
    return root


def metas(save_dir: Path) -> list[Path]:
    return sorted(save_dir.rglob(_layout.META))


def strip_summaries(save_dir: Path) -> None:
    """Rewrite every meta.experiment without its summary, as a run of an earlier version has none."""
    for path in metas(save_dir):
        meta = json.loads(path.read_text())
        meta.pop(_layout.SUMMARY, None)
        path.write_text(json.dumps(meta))


def fresh_runs(save_dir: Path, **kwargs: Any) -> pa.Table:
    """runs() as the first call in a process makes it: no summaries kept from earlier calls."""
    _runs._SUMMARIES.items.clear()
    return test_tube.runs(save_dir, **kwargs)


def assert_same_table(got: pa.Table, expected: pa.Table) -> None:
    """Column by column: names, types and values, NaN equal to NaN, 0.0 told from -0.0, int from float."""
    assert got.schema == expected.schema
    for name in expected.column_names:
        a, b = got.column(name).to_pylist(), expected.column(name).to_pylist()
        assert len(a) == len(b), name
        for x, y in zip(a, b):
            assert type(x) is type(y), (name, x, y)
            if isinstance(x, float):
                assert (math.isnan(x) and math.isnan(y)) or (x == y and math.copysign(1, x) == math.copysign(1, y)), \
                    (name, x, y)
            else:
                assert x == y, (name, x, y)


class Reads:
    """Counts the reads runs() makes of Parquet footers, columns, journal tails and whole runs."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        for name in ("parquet_metadata", "read_parquet", "last_frames", "frames"):
            monkeypatch.setattr(StoredRun, name, self.spy(name, getattr(StoredRun, name)))
        read_run = _runs.read_run
        monkeypatch.setattr(_runs, "read_run", lambda run: (self.calls.append("read_run"), read_run(run))[1])

    def spy(self, name: str, real: Any) -> Any:
        def call(run: StoredRun, *args: Any, **kwargs: Any) -> Any:
            self.calls.append(f"{name} {run.shown}")
            return real(run, *args, **kwargs)
        return call


def test_close_records_a_summary_in_strict_json(save_dir: Path) -> None:
    """Every closed run's meta.experiment has a summary; it parses as strict JSON (no NaN or Infinity tokens)."""
    def refuse(token: str) -> None:
        raise AssertionError(f"{token} is not JSON")

    found = metas(save_dir)
    assert len(found) == 6
    for path in found:
        meta = json.loads(path.read_text(), parse_constant=refuse)
        assert meta["status"] in ("finished", "failed")
        record = meta[_layout.SUMMARY]
        assert record["files"][_layout.PARQUET][0] == os.path.getsize(path.parent / _layout.PARQUET)
    kinds = json.loads((save_dir / "kinds" / "version_0" / _layout.META).read_text())[_layout.SUMMARY]
    by_name = {m[0]: m[1:] for m in kinds["metrics"]}
    assert by_name["nan_last"] == ["float64", "nan", 0.0, 38.0]
    assert by_name["up"] == ["float64", "inf", 1.0, "inf"] and by_name["down"] == ["float64", "-inf", "-inf", "-inf"]
    assert by_name["count"] == ["int64", 110, -7, 110] and type(by_name["count"][1]) is int
    assert by_name["big"][1:] == [2**62 + 39, 2**62, 2**62 + 39]
    assert "flag" not in by_name and "note" not in by_name  # not numeric: not summarised
    assert kinds["rows"] == 40 and kinds["last_step"] == 78


def test_the_summary_gives_the_table_the_files_give(save_dir: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """runs() from the recorded summaries equals runs() of the same runs without them, reading no run file."""
    with monkeypatch.context() as m:
        reads = Reads(m)
        with_summaries = fresh_runs(save_dir)
    assert reads.calls == []  # neither footers nor journals nor rows
    assert with_summaries.num_rows == 6 and set(with_summaries.column("status").to_pylist()) == {"finished", "failed"}
    copy = tmp_path / "logs"
    shutil.copytree(save_dir, copy, copy_function=shutil.copyfile)
    # the copy's files have other times: first show that then every run is read from its files...
    with monkeypatch.context() as m:
        reads = Reads(m)
        moved = fresh_runs(copy)
    assert len(reads.calls) >= 6
    strip_summaries(copy)
    without = fresh_runs(copy)
    assert_same_table(moved, without)
    # ...then compare in the same folder, so log_dir agrees too.
    strip_summaries(save_dir)
    try:
        assert_same_table(with_summaries, fresh_runs(save_dir))
    finally:
        shutil.rmtree(save_dir)
        build(save_dir)


def test_a_resumed_run_gets_a_fresh_summary(save_dir: Path) -> None:
    """A run resumed and closed again records every row of both sessions."""
    record = json.loads((save_dir / "resumed" / "version_0" / _layout.META).read_text())[_layout.SUMMARY]
    assert record["rows"] == 2 and record["last_step"] == 1
    assert [m[0] for m in record["metrics"]] == ["loss", "epoch", "extra"]
    row = fresh_runs(save_dir, name="resumed").to_pylist()[0]
    assert (row["loss.min"], row["loss.last"], row["extra.last"]) == (0.25, 0.25, 7)


def test_a_resumed_run_still_running_is_not_answered_by_the_old_summary(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """While a resumed run writes, runs() shows its new rows and status, not what the last close recorded."""
    with test_tube.Experiment(save_dir=tmp_path, name="x", record_git=False) as exp:
        exp.log({"loss": 1.0})
    assert fresh_runs(tmp_path).column("rows").to_pylist() == [1]
    exp = test_tube.Experiment(save_dir=tmp_path, name="x", version=0, record_git=False)
    try:
        exp.log({"loss": 0.5})
        exp.save()
        table = fresh_runs(tmp_path).to_pylist()[0]
        assert (table["status"], table["rows"], table["loss.min"]) == ("running", 2, 0.5)
    finally:
        exp.close()
    table = fresh_runs(tmp_path).to_pylist()[0]
    assert (table["status"], table["rows"], table["loss.last"]) == ("finished", 2, 0.5)


def test_a_file_changed_after_close_is_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """metrics.parquet rewritten, or rows added to the journal, after close(): runs() reads the files."""
    for version in (0, 1):
        with test_tube.Experiment(save_dir=tmp_path, name="x", record_git=False) as exp:
            for step in range(5):
                exp.log({"loss": float(step)})
    # version_0: its metrics.parquet replaced by one with other values (same schema, same row count)
    parquet = tmp_path / "x" / "version_0" / _layout.PARQUET
    table = pq.read_table(parquet)
    pq.write_table(table.set_column(table.column_names.index("loss"), "loss",
                                    pa.array(np.arange(5, dtype=np.float64) + 100)), parquet)
    # version_1: a frame appended to its journal (as a writer of another version would), parquet now older
    journal = tmp_path / "x" / "version_1" / _layout.JOURNAL
    extra = pa.table({"step": pa.array([5], pa.int64()),
                      "created_at": pa.array([0], pa.timestamp("us", tz="UTC")), "loss": [-1.0]})
    with open(journal, "ab") as f:
        for piece in _journal.encode(extra):
            f.write(memoryview(piece))
    with monkeypatch.context() as m:
        reads = Reads(m)
        got = fresh_runs(tmp_path)
    assert any(c.startswith("parquet_metadata") for c in reads.calls) and "read_run" in reads.calls
    rows = got.to_pylist()
    assert (rows[0]["loss.min"], rows[0]["loss.max"]) == (100.0, 104.0)
    assert (rows[1]["rows"], rows[1]["loss.min"], rows[1]["loss.last"]) == (6, -1.0, -1.0)
    strip_summaries(tmp_path)
    assert_same_table(got, fresh_runs(tmp_path))


def test_a_damaged_or_foreign_summary_is_not_trusted(tmp_path: Path) -> None:
    """A summary this version does not read (wrong types, unknown text) leaves runs() reading the files."""
    with test_tube.Experiment(save_dir=tmp_path, name="x", record_git=False) as exp:
        exp.log({"loss": 2.0, "n": 3})
    path = tmp_path / "x" / "version_0" / _layout.META
    expected = fresh_runs(tmp_path)
    meta = json.loads(path.read_text())
    for bad in (["loss", "float64", "two", 2.0, 2.0], ["n", "int64", 3.0, 3, 3], ["n", "int128", 3, 3, 3],
                ["n", "int64", 3, 3], [1, "int64", 3, 3, 3]):
        record = dict(meta[_layout.SUMMARY], metrics=[bad])
        path.write_text(json.dumps({**meta, _layout.SUMMARY: record}))
        assert_same_table(fresh_runs(tmp_path), expected)
    path.write_text(json.dumps({**meta, _layout.SUMMARY: "not a record"}))
    assert_same_table(fresh_runs(tmp_path), expected)


def test_nothing_is_recorded_without_a_complete_metrics_parquet(tmp_path: Path) -> None:
    """closing_summary() gives None without metrics.parquet; runs() then reads the journal."""
    exp = test_tube.Experiment(save_dir=tmp_path, name="x", record_git=False)
    exp.log({"loss": 1.0})
    exp.save()
    exp.close()
    log_dir = tmp_path / "x" / "version_0"
    (log_dir / _layout.PARQUET).unlink()
    assert _runs.closing_summary(str(log_dir)) is None
    row = fresh_runs(tmp_path).to_pylist()[0]
    assert (row["status"], row["rows"], row["loss.last"]) == ("finished", 1, 1.0)
