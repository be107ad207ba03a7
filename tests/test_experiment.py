"""The Experiment's contract: layout, values, versions, lifecycle, read-back."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import test_tube
from faultlib import released_together
from test_tube import Experiment, ExperimentClosedError

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}")


def csv_rows(log_dir: str) -> list[dict[str, str]]:
    with open(os.path.join(log_dir, "metrics.csv"), newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def csv_header(log_dir: str) -> list[str]:
    with open(os.path.join(log_dir, "metrics.csv"), newline="", encoding="utf-8") as f:
        return next(csv.reader(f))


def run_python(code: str, cwd: Path, timeout: float = 60, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True,
        timeout=timeout, **kwargs,
    )


# -- layout ---------------------------------------------------------------------


def test_layout_matches_the_original(tmp_path: Path) -> None:
    """A run writes meta.experiment, meta_tags.csv, metrics.csv, metrics.parquet and media/ in version_0."""
    with Experiment(name="demo", save_dir=tmp_path, description="first") as exp:
        exp.tag({"lr": 0.001, "opt": "adam", "layers": [1, 2], "nesterov": True})
        exp.log({"loss": 0.5})
    log_dir = tmp_path / "demo" / "version_0"
    assert exp.log_dir == str(log_dir)
    assert {"meta.experiment", "meta_tags.csv", "metrics.csv", "metrics.parquet", "media"} <= set(os.listdir(log_dir))
    meta = json.loads((log_dir / "meta.experiment").read_text())
    assert list(meta)[:8] == [
        "name", "version", "tags_path", "metrics_path", "autosave", "description", "created_at", "exp_hash",
    ]
    assert meta["exp_hash"] == "demo_v0" and meta["version"] == 0 and meta["description"] == "first"
    assert meta["metrics_path"] == str(log_dir / "metrics.csv")
    assert TIMESTAMP.fullmatch(meta["created_at"])
    assert (log_dir / "meta_tags.csv").read_text() == "key,value\nlr,0.001\nopt,adam\nlayers,\"[1, 2]\"\nnesterov,True\n"


def test_csv_cells_follow_the_original_spelling(tmp_path: Path) -> None:
    """Missing cells are empty, ints stay ints with gaps, and NaN, infinities, bools and times are spelled as documented."""
    with Experiment(name="cells", save_dir=tmp_path) as exp:
        exp.log({"train_loss": 0.9, "epoch": 0})
        exp.log({"val_loss": 1.1, "val_acc": 0.4})
        exp.log({"train_loss": 0.7, "epoch": 1, "ok": True})
        exp.log({"train_loss": float("nan"), "val_loss": float("inf"), "val_acc": float("-inf"), "ok": False})
        exp.log({"train_loss": 2.0, "epoch": None})
    header = csv_header(exp.log_dir)
    assert header == ["step", "created_at", "train_loss", "epoch", "val_loss", "val_acc", "ok"]
    rows = csv_rows(exp.log_dir)
    assert [r["step"] for r in rows] == ["0", "1", "2", "3", "4"]
    assert [r["epoch"] for r in rows] == ["0", "", "1", "", ""]
    assert [r["train_loss"] for r in rows] == ["0.9", "", "0.7", "nan", "2.0"]
    assert (rows[3]["val_loss"], rows[3]["val_acc"]) == ("inf", "-inf")
    assert [r["ok"] for r in rows] == ["", "", "True", "False", ""]
    assert all(TIMESTAMP.fullmatch(r["created_at"]) for r in rows)


def test_parquet_has_real_types(tmp_path: Path) -> None:
    """metrics.parquet stores int64, float64, bool, string, step and a UTC timestamp."""
    with Experiment(name="types", save_dir=tmp_path) as exp:
        exp.log({"i": 1, "f": 0.5, "b": True, "s": "text"})
        exp.log({"f": 1.5})
    schema = pq.read_schema(os.path.join(exp.log_dir, "metrics.parquet"))
    types = {f.name: f.type for f in schema}
    assert types["step"] == pa.int64()
    assert types["created_at"] == pa.timestamp("us", tz="UTC")
    assert types["i"] == pa.int64() and types["f"] == pa.float64() and types["b"] == pa.bool_()
    assert pa.types.is_large_string(types["s"]) or pa.types.is_string(types["s"])
    table = pq.read_table(os.path.join(exp.log_dir, "metrics.parquet"))
    assert table.column("i").to_pylist() == [1, None]


def test_common_readers_agree_on_both_files(tmp_path: Path) -> None:
    """pandas, pyarrow, Polars and DuckDB read metrics.csv and metrics.parquet while the run is open."""
    pd = pytest.importorskip("pandas")
    pl = pytest.importorskip("polars")
    duckdb = pytest.importorskip("duckdb")
    exp = Experiment(name="readers", save_dir=tmp_path)
    for i in range(100):
        exp.log({"loss": 1.0 / (i + 1), "note": f"row {i}, \"quoted\""})
    exp.save()
    csv_path = os.path.join(exp.log_dir, "metrics.csv")
    parquet_path = os.path.join(exp.log_dir, "metrics.parquet")
    assert len(pd.read_csv(csv_path)) == 100
    assert pl.read_csv(csv_path).height == 100
    assert duckdb.sql(f"select count(*) from read_csv('{csv_path}')").fetchall() == [(100,)]
    assert pd.read_csv(csv_path)["note"].iloc[7] == 'row 7, "quoted"'
    assert pq.read_table(parquet_path).num_rows == 100
    assert pl.read_parquet(parquet_path).height == 100
    assert duckdb.sql(f"select count(*) from '{parquet_path}'").fetchall() == [(100,)]
    exp.close()


def test_float_cells_round_trip_and_whole_floats_keep_their_point(tmp_path: Path) -> None:
    """Every float cell reads back as the same float; a whole one reads as a float, not an int.

    Python spells 3.0 "3.0" and Arrow "3"; the CSV keeps Python's point, except
    where the text already has an exponent ("1e+16", never "1e+16.0").
    """
    values = [1e16, 3.0, 0.5, -0.0, 1e-7, 2.0**53, 99999900000.0, -42.0, 0.1, 1e300, 5e-324]
    with Experiment(name="floats", save_dir=tmp_path) as exp:
        for i in range(200):  # enough rows that most cells are not whole; "w" is always whole
            exp.log({"x": values[i] if i < len(values) else i + 0.25, "w": float(i)})
    rows = csv_rows(exp.log_dir)
    assert [r["w"] for r in rows] == [f"{i}.0" for i in range(200)]
    cells = [r["x"] for r in rows]
    for value, cell in zip(values, cells):
        assert float(cell) == value and math.copysign(1, float(cell)) == math.copysign(1, value), cell
        if value.is_integer():
            assert "." in cell or "e" in cell, f"{value!r} was written as {cell!r}, which reads as an int"
            assert not cell.endswith(".0") or "e" not in cell, cell
    assert cells[1] == "3.0" and cells[3] == "-0.0" and cells[7] == "-42.0" and cells[0] == "1e+16"
    assert cells[len(values):] == [repr(i + 0.25) for i in range(len(values), 200)]


def test_tricky_keys_round_trip_through_both_files(tmp_path: Path) -> None:
    """Keys with commas, quotes, newlines and non-ASCII characters come back unchanged."""
    keys = ["a,b", 'say "hi"', "two\nlines", "ünïcødé ✓", "tab\there"]
    with Experiment(name="keys", save_dir=tmp_path) as exp:
        exp.log({k: float(i) for i, k in enumerate(keys)})
    assert csv_header(exp.log_dir)[2:] == keys
    assert [csv_rows(exp.log_dir)[0][k] for k in keys] == ["0.0", "1.0", "2.0", "3.0", "4.0"]
    assert pq.read_table(os.path.join(exp.log_dir, "metrics.parquet")).column_names[2:] == keys
    assert test_tube.read(exp.log_dir).column_names[2:] == keys


def test_new_column_mid_run_rewrites_the_csv_header(tmp_path: Path) -> None:
    """A key that first appears after a flush is added to the header and earlier rows get empty cells."""
    exp = Experiment(name="late", save_dir=tmp_path)
    exp.log({"a": 1.0})
    exp.save()
    assert csv_header(exp.log_dir) == ["step", "created_at", "a"]
    exp.log({"b": 2})
    exp.save()
    assert csv_header(exp.log_dir) == ["step", "created_at", "a", "b"]
    assert [(r["a"], r["b"]) for r in csv_rows(exp.log_dir)] == [("1.0", ""), ("", "2")]
    exp.close()


# -- versions --------------------------------------------------------------------


def test_versions_count_up_and_ignore_foreign_folders(tmp_path: Path) -> None:
    """The next version is one more than the highest version_<int>; version_2_backup is ignored."""
    (tmp_path / "exp" / "version_0").mkdir(parents=True)
    (tmp_path / "exp" / "version_2_backup").mkdir()
    (tmp_path / "exp" / "version_x").mkdir()
    with Experiment(name="exp", save_dir=tmp_path) as exp:
        assert exp.version == 1
    with Experiment(name="exp", save_dir=tmp_path) as exp:
        assert exp.version == 2


def test_parallel_processes_claim_distinct_versions(tmp_path: Path) -> None:
    """Ten processes released at the same instant get ten different versions."""
    script = tmp_path / "claim.py"
    script.write_text(textwrap.dedent(f"""
        import sys, test_tube
        print("ready", flush=True)
        sys.stdin.read()  # released together when the test closes every stdin
        exp = test_tube.Experiment(name="race", save_dir={str(tmp_path)!r}, record_git=False)
        print(exp.version, flush=True)
        exp.close()
    """))
    versions = [int(line) for line in released_together(script, 10, timeout=60)]
    assert sorted(versions) == list(range(10))


def test_explicit_version_resumes_rows_steps_and_tags(tmp_path: Path) -> None:
    """Reopening an existing version appends rows, continues the step and merges tags."""
    with Experiment(name="resume", save_dir=tmp_path, version=3) as exp:
        exp.tag({"lr": 0.1})
        exp.log({"loss": 1.0})
        exp.log({"loss": 0.9})
    with Experiment(name="resume", save_dir=tmp_path, version=3) as exp:
        assert exp.tags == {"lr": 0.1}
        exp.tag({"seed": 7})
        exp.log({"loss": 0.8, "acc": 0.5})
    table = test_tube.read(exp.log_dir)
    assert table.column("step").to_pylist() == [0, 1, 2]
    assert table.column("loss").to_pylist() == [1.0, 0.9, 0.8]
    assert [r["step"] for r in csv_rows(exp.log_dir)] == ["0", "1", "2"]
    assert pq.read_table(os.path.join(exp.log_dir, "metrics.parquet")).num_rows == 3
    assert (Path(exp.log_dir) / "meta_tags.csv").read_text() == "key,value\nlr,0.1\nseed,7\n"


def test_explicit_version_that_does_not_exist_is_created(tmp_path: Path) -> None:
    """version=5 in an empty folder creates version_5 and writes to it (no silent debug mode)."""
    with Experiment(name="new", save_dir=tmp_path, version=5) as exp:
        exp.log({"x": 1.0})
    assert test_tube.read(tmp_path / "new" / "version_5").num_rows == 1


def test_a_version_open_in_another_process_is_refused(tmp_path: Path) -> None:
    """Opening a version that a live process is writing raises VersionInUseError."""
    exp = Experiment(name="busy", save_dir=tmp_path, version=0)
    result = run_python(f"""
        import test_tube
        try:
            test_tube.Experiment(name="busy", save_dir={str(tmp_path)!r}, version=0)
        except test_tube.VersionInUseError as e:
            print("refused", e.log_dir)
    """, tmp_path)
    assert result.stdout.startswith("refused"), result.stderr
    exp.close()


def test_default_save_dir_is_under_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """save_dir=None writes to ./test_tube_logs, never inside the installed package."""
    monkeypatch.chdir(tmp_path)
    with Experiment(name="here") as exp:
        exp.log({"x": 1.0})
    assert exp.log_dir == str(tmp_path / "test_tube_logs" / "here" / "version_0")
    assert exp.get_data_path("here", 0) == exp.log_dir
    assert exp.get_media_path("here", 0) == os.path.join(exp.log_dir, "media")


# -- values ------------------------------------------------------------------------


class FakeTensor:
    """A 0-d tensor stand-in: a dtype and an .item() that records which thread read it."""

    def __init__(self, value: float, dtype: str = "torch.float32") -> None:
        self.value = value
        self.dtype = dtype
        self.ndim = 0
        self.read_on: str | None = None

    def item(self) -> float:
        self.read_on = threading.current_thread().name
        return self.value


def test_accepted_values_round_trip(tmp_path: Path) -> None:
    """Python and numpy scalars, 0-d arrays, str, None, NaN, infinities, tensors and nested dicts are stored."""
    tensor = FakeTensor(0.25)
    with Experiment(name="values", save_dir=tmp_path) as exp:
        exp.log({
            "f": 1.5, "i": 2, "b": False, "s": "x", "none": None, "nan": float("nan"), "inf": float("inf"),
            "np_f32": np.float32(0.5), "np_i8": np.int8(-3), "np_bool": np.bool_(True), "np_u64": np.uint64(9),
            "zero_d": np.array(4.0), "tensor": tensor, "int_tensor": FakeTensor(3, "torch.int64"),
            "losses": {"train": 0.1, "val": {"top1": 0.9}},
        })
    row = test_tube.read(exp.log_dir).to_pylist()[0]
    assert row["f"] == 1.5 and row["i"] == 2 and row["b"] is False and row["s"] == "x" and row["none"] is None
    assert math.isnan(row["nan"]) and row["inf"] == math.inf
    assert row["np_f32"] == 0.5 and row["np_i8"] == -3 and row["np_bool"] is True and row["np_u64"] == 9
    assert row["zero_d"] == 4.0 and row["tensor"] == 0.25 and row["int_tensor"] == 3
    assert row["losses/train"] == 0.1 and row["losses/val/top1"] == 0.9
    assert tensor.read_on is not None and tensor.read_on.startswith("test_tube-writer")


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (object(), TypeError),
        (b"bytes", TypeError),
        (1 + 2j, TypeError),
        ([1.0, 2.0], TypeError),
        (np.zeros(3), TypeError),
        (2**70, ValueError),
        (__import__("decimal").Decimal("1.5"), TypeError),
    ],
)
def test_bad_values_raise_at_the_call_naming_the_key(tmp_path: Path, value: Any, error: type) -> None:
    """An unsupported value raises at log() with the key in the message, and nothing of that row is stored."""
    with Experiment(name="bad", save_dir=tmp_path) as exp:
        exp.log({"ok": 1.0})
        with pytest.raises(error, match="'bad_key'") as info:
            exp.log({"fine": 2.0, "bad_key": value})
        assert getattr(info.value, "key", None) == "bad_key"
        exp.log({"ok": 3.0})
    table = test_tube.read(exp.log_dir)
    assert table.column("ok").to_pylist() == [1.0, 3.0]
    assert "fine" not in table.column_names


@pytest.mark.parametrize("key", [1, "", "step", "created_at", ("a",)])
def test_bad_keys_raise(tmp_path: Path, key: Any) -> None:
    """Keys must be non-empty strings other than step and created_at."""
    with Experiment(name="keys", save_dir=tmp_path) as exp, pytest.raises((TypeError, ValueError)):
        exp.log({key: 1.0})


def test_values_are_captured_at_the_call(tmp_path: Path) -> None:
    """Changing the dict or a 0-d array after log() does not change what is stored."""
    row = {"x": 1.0}
    arr = np.array(5.0)
    with Experiment(name="snap", save_dir=tmp_path) as exp:
        exp.log(row)
        row["x"] = 99.0
        exp.log({"a": arr})
        arr[()] = 6.0
    table = test_tube.read(exp.log_dir)
    assert table.column("x").to_pylist() == [1.0, None]
    assert table.column("a").to_pylist() == [None, 5.0]


def test_column_types_are_fixed_except_int_to_float(tmp_path: Path) -> None:
    """An int column widens to float; a str in a float column raises TypeError naming the column."""
    with Experiment(name="widen", save_dir=tmp_path) as exp:
        exp.log({"x": 1})
        exp.log({"x": 2.5})
        exp.log({"x": 3})
        with pytest.raises(TypeError, match="'x'"):
            exp.log({"x": "three"})
        with pytest.raises(TypeError, match="'x'"):
            exp.log({"x": True})
    table = test_tube.read(exp.log_dir)
    assert table.schema.field("x").type == pa.float64()
    assert table.column("x").to_pylist() == [1.0, 2.5, 3.0]


def test_steps_auto_increment_and_follow_explicit_steps(tmp_path: Path) -> None:
    """step counts calls, an explicit step (or global_step) is kept, and counting continues after it."""
    with Experiment(name="steps", save_dir=tmp_path) as exp:
        exp.log({"x": 0.0})
        exp.log({"x": 1.0})
        exp.log({"x": 2.0}, step=10)
        exp.log({"x": 3.0})
        exp.log({"x": 4.0}, global_step=5)
        with pytest.raises(TypeError):
            exp.log({"x": 5.0}, step="7")  # type: ignore[arg-type]
    assert test_tube.read(exp.log_dir).column("step").to_pylist() == [0, 1, 10, 11, 5]


def test_interleaved_key_sets_keep_logging_order_and_steps(tmp_path: Path) -> None:
    """Rows of alternating key sets, fast path and general path, read back in call order with their steps."""
    expected: list[tuple[int, float | None, int | None, str | None]] = []
    step = 0
    with Experiment(name="order", save_dir=tmp_path) as exp:
        for i in range(3000):
            if i % 3 == 0:
                exp.log({"a": i * 0.5})
                expected.append((step, i * 0.5, None, None))
            elif i % 3 == 1:
                exp.log({"b": i, "c": i % 2 == 0})
                expected.append((step, None, i, None))
            else:
                exp.log({"a": i * 0.5, "s": f"t{i}"})  # a string: the general path
                expected.append((step, i * 0.5, None, f"t{i}"))
            step += 1
            if i == 1500:
                exp.log({"a": -1.0}, step=100_000)
                expected.append((100_000, -1.0, None, None))
                step = 100_001
            if i % 1000 == 999:
                exp.save()
    table = test_tube.read(exp.log_dir)
    got = list(zip(*(table.column(c).to_pylist() for c in ("step", "a", "b", "s"))))
    assert got == expected
    assert csv_rows(exp.log_dir)[1502]["step"] == "100001"


def test_known_key_sets_still_check_every_value(tmp_path: Path) -> None:
    """After a key set is known, a value of another type or an int beyond 64 bits still raises at the call."""
    with Experiment(name="checks", save_dir=tmp_path) as exp:
        for _ in range(3):
            exp.log({"x": 1.5, "n": 3})
        with pytest.raises(TypeError, match="'x'"):
            exp.log({"x": True, "n": 3})
        with pytest.raises(ValueError, match="'n'"):
            exp.log({"x": 1.5, "n": 2**70})
        exp.log({"x": 2.5, "n": 4})
    table = test_tube.read(exp.log_dir)
    assert table.column("x").to_pylist() == [1.5, 1.5, 1.5, 2.5]
    assert table.column("n").to_pylist() == [3, 3, 3, 4]
    assert table.column("step").to_pylist() == [0, 1, 2, 3]


def test_a_log_function_held_by_the_caller_stops_at_close(tmp_path: Path) -> None:
    """``log = exp.log`` taken before the loop raises after close(), and its rows all landed."""
    exp = Experiment(name="held", save_dir=tmp_path)
    log = exp.log
    for i in range(1000):
        log({"x": float(i)})
    exp.close()
    with pytest.raises(ExperimentClosedError):
        log({"x": 1.0})
    assert test_tube.read(exp.log_dir).column("x").to_pylist() == [float(i) for i in range(1000)]


def test_rows_from_many_threads_all_land_in_order(tmp_path: Path) -> None:
    """Four threads logging 5,000 rows each lose nothing, and each thread's rows keep their order."""
    exp = Experiment(name="threads", save_dir=tmp_path)
    start = threading.Barrier(4)

    def work(t: int) -> None:
        start.wait()
        for i in range(5000):
            exp.log({"thread": t, "i": i})

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    exp.close()
    rows = test_tube.read(exp.log_dir).select(["thread", "i"]).to_pylist()
    assert len(rows) == 20000
    for t in range(4):
        assert [r["i"] for r in rows if r["thread"] == t] == list(range(5000))


def test_full_queue_blocks_log_instead_of_dropping(tmp_path: Path) -> None:
    """With a tiny queue bound, every row still lands: log() waited for the writer."""
    with Experiment(name="bound", save_dir=tmp_path, max_queue_rows=8) as exp:
        for i in range(5000):
            exp.log({"i": i})
    assert test_tube.read(exp.log_dir).column("i").to_pylist() == list(range(5000))


# -- lifecycle -----------------------------------------------------------------------


def test_debug_mode_creates_nothing_and_starts_no_thread(tmp_path: Path) -> None:
    """debug=True: every method works, no file, no folder, no thread."""
    before = threading.active_count()
    exp = Experiment(name="dbg", save_dir=tmp_path, debug=True)
    exp.tag({"a": 1})
    exp.log({"x": 1.0})
    exp.save()
    exp.close()
    exp.close()
    assert threading.active_count() == before
    assert list(tmp_path.iterdir()) == []


def test_autosave_off_publishes_only_on_save(tmp_path: Path) -> None:
    """autosave=False: nothing reaches metrics.* until save()."""
    exp = Experiment(name="manual", save_dir=tmp_path, autosave=False, flush_interval=0.05)
    for i in range(10):
        exp.log({"x": float(i)})
    # Wait until a periodic flush has journaled the rows (read() sees them) ...
    deadline = time.monotonic() + 30
    while test_tube.read(exp.log_dir).num_rows < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert test_tube.read(exp.log_dir).num_rows == 10
    # ... and still no rows were published.
    csv_path = os.path.join(exp.log_dir, "metrics.csv")
    assert not os.path.exists(csv_path) or csv_rows(exp.log_dir) == []
    assert not os.path.exists(os.path.join(exp.log_dir, "metrics.parquet"))
    exp.save()
    assert len(csv_rows(exp.log_dir)) == 10
    exp.close()


def test_autosave_publishes_without_save(tmp_path: Path) -> None:
    """autosave=True: the CSV fills up on its own within the flush interval."""
    result = run_python(f"""
        import os, time, test_tube
        exp = test_tube.Experiment(name="auto", save_dir={str(tmp_path)!r}, flush_interval=0.1)
        exp.log({{"x": 1.0}})
        path = os.path.join(exp.log_dir, "metrics.csv")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if os.path.exists(path) and open(path).read().count("\\n") == 2:
                print("published")
                break
            time.sleep(0.01)
        os._exit(0)
    """, tmp_path)
    assert result.stdout.strip() == "published", result.stderr


@pytest.mark.parametrize("what", ["rows", "text bytes"])
def test_rows_do_not_pile_up_in_the_queue_between_flushes(tmp_path: Path, what: str) -> None:
    """With no flush due for an hour, the writer still drains once a batch's worth waits.

    Rows wait in the queue for at most one flush window or one batch
    (``DRAIN_ROWS`` rows, or half of ``max_queue_bytes`` and at most
    ``BATCH_BYTES`` of text), whichever comes first, so the queue never holds a
    long run of Python objects for the garbage collector to walk, and
    ``log()`` does not block on the byte bound while the writer idles.
    """
    from test_tube._engine._writer import BATCH_BYTES, DRAIN_ROWS

    exp = Experiment(name="pile", save_dir=tmp_path, flush_interval=3600)
    if what == "rows":
        rows = 3 * DRAIN_ROWS
        for i in range(rows):
            exp.log({"i": i, "s": "text"})  # a str: the general path's dict rows
    else:
        rows = 3 * BATCH_BYTES // 100_000
        for i in range(rows):
            exp.log({"s": f"{i:08d}" + "x" * 99_992})

    def backlog() -> bool:
        return exp._queued_rows() >= DRAIN_ROWS or exp._queued_bytes >= BATCH_BYTES

    deadline = time.monotonic() + 30
    while backlog() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not backlog()
    exp.close()
    assert test_tube.read(exp.log_dir).num_rows == rows


def test_save_covers_every_row_logged_before_it(tmp_path: Path) -> None:
    """After save() returns, CSV, Parquet and read() all hold every row logged before."""
    exp = Experiment(name="save", save_dir=tmp_path)
    for i in range(1000):
        exp.log({"i": i})
    exp.save()
    assert len(csv_rows(exp.log_dir)) == 1000
    assert test_tube.read(exp.log_dir).num_rows == 1000
    assert pq.read_table(os.path.join(exp.log_dir, "metrics.parquet")).num_rows == 1000
    exp.close()


def test_parquet_refresh_keeps_it_at_most_half_behind(tmp_path: Path) -> None:
    """During a run metrics.parquet is rewritten once the rows since its last rewrite reach the rows it holds."""
    exp = Experiment(name="double", save_dir=tmp_path)
    path = os.path.join(exp.log_dir, "metrics.parquet")
    counts = []
    for _ in range(6):
        for _ in range(100):
            exp.log({"x": 1.0})
        exp.save()
        counts.append(pq.read_metadata(path).num_rows)
    exp.close()
    logged = [100 * (k + 1) for k in range(6)]
    assert all(c * 2 >= n for c, n in zip(counts, logged))
    assert counts == [100, 200, 200, 400, 400, 400]
    assert pq.read_metadata(path).num_rows == 600


def test_close_is_idempotent_and_log_after_close_raises(tmp_path: Path) -> None:
    """A second close() does nothing; log() after close() raises ExperimentClosedError."""
    exp = Experiment(name="closed", save_dir=tmp_path)
    exp.log({"x": 1.0})
    exp.close()
    exp.close()
    with pytest.raises(ExperimentClosedError):
        exp.log({"x": 2.0})
    assert json.loads((Path(exp.log_dir) / "meta.experiment").read_text())["status"] == "finished"


def test_context_manager_closes_and_marks_failure(tmp_path: Path) -> None:
    """Leaving a with block by an exception still saves the rows and records status failed."""
    with pytest.raises(RuntimeError), Experiment(name="ctx", save_dir=tmp_path) as exp:
        exp.log({"x": 1.0})
        raise RuntimeError("training diverged")
    assert test_tube.read(exp.log_dir).num_rows == 1
    assert json.loads((Path(exp.log_dir) / "meta.experiment").read_text())["status"] == "failed"


def test_argparse_records_hyperparameters_as_tags(tmp_path: Path) -> None:
    """argparse() turns namespace attributes into tags and skips callables."""
    import argparse

    ns = argparse.Namespace(lr=0.01, layers=3, name="x", fn=print)
    with Experiment(name="hp", save_dir=tmp_path) as exp:
        exp.argparse(ns)
    assert exp.tags == {"lr": 0.01, "layers": 3, "name": "x"}
    assert "fn" not in (Path(exp.log_dir) / "meta_tags.csv").read_text()


def test_an_experiment_cannot_be_pickled(tmp_path: Path) -> None:
    """Pickling raises TypeError that says what to do instead."""
    import pickle

    with Experiment(name="pickle", save_dir=tmp_path) as exp, pytest.raises(TypeError, match="log_dir"):
        pickle.dumps(exp)


def test_writer_failure_surfaces_on_the_next_call(tmp_path: Path) -> None:
    """When a published file cannot be written, save() raises WriterError with the cause chained."""
    exp = Experiment(name="fail", save_dir=tmp_path)
    exp.log({"x": 1.0})
    exp.save()
    csv_path = Path(exp.log_dir) / "metrics.csv"
    csv_path.unlink()
    csv_path.mkdir()  # appending to a folder fails
    exp.log({"x": 2.0})
    with pytest.raises(test_tube.WriterError) as info:
        exp.save()
    assert isinstance(info.value.__cause__, OSError)
    assert pq.read_table(os.path.join(exp.log_dir, "metrics.parquet")).num_rows >= 1
    csv_path.rmdir()
    exp.log({"x": 3.0})
    exp.save()  # the writer survived and rebuilt the CSV
    assert [r["x"] for r in csv_rows(exp.log_dir)] == ["1.0", "2.0", "3.0"]
    exp.close()


# -- read ------------------------------------------------------------------------------


def test_read_of_an_empty_run_has_step_and_created_at(tmp_path: Path) -> None:
    """A version with no rows reads as an empty table with the two built-in columns."""
    with Experiment(name="empty", save_dir=tmp_path) as exp:
        pass
    table = test_tube.read(exp.log_dir)
    assert table.num_rows == 0 and table.column_names == ["step", "created_at"]


def test_read_skips_a_torn_journal_tail(tmp_path: Path) -> None:
    """Cutting the journal anywhere inside its last frame loses that frame only, never misreads it."""
    exp = Experiment(name="torn", save_dir=tmp_path)
    exp.log({"x": 1.0})
    exp.save()
    size = os.path.getsize(os.path.join(exp.log_dir, "_journal.arrows"))
    exp.log({"x": 2.0})
    exp.close()
    journal = Path(exp.log_dir) / "_journal.arrows"
    data = journal.read_bytes()
    for cut in range(size, len(data), max(1, (len(data) - size) // 40)):
        journal.write_bytes(data[:cut])
        assert test_tube.read(exp.log_dir).column("x").to_pylist() == [1.0]
    journal.write_bytes(data)
    assert test_tube.read(exp.log_dir).column("x").to_pylist() == [1.0, 2.0]


def test_read_of_a_missing_folder_raises(tmp_path: Path) -> None:
    """read() on a path that is not a run folder raises FileNotFoundError."""
    with pytest.raises(FileNotFoundError):
        test_tube.read(tmp_path / "nope")


# -- process level ------------------------------------------------------------------------


def test_import_starts_no_thread_and_creates_no_file(tmp_path: Path) -> None:
    """import test_tube leaves the thread count and the working directory unchanged."""
    result = run_python("""
        import os, threading
        before = threading.active_count()
        import test_tube
        print(threading.active_count() - before, len(os.listdir(".")))
    """, tmp_path)
    assert result.stdout.split() == ["0", "0"], result.stderr


@pytest.mark.parametrize(
    ("ending", "code"),
    [("pass", 0), ("sys.exit(3)", 3), ("raise ValueError('boom')", 1)],
)
def test_exit_without_close_keeps_every_row(tmp_path: Path, ending: str, code: int) -> None:
    """The final flush at interpreter exit writes every row and keeps the exit code."""
    result = run_python(f"""
        import sys, test_tube
        exp = test_tube.Experiment(name="exit", save_dir={str(tmp_path)!r}, autosave=False)
        for i in range(20000):
            exp.log({{"i": i}})
        {ending}
    """, tmp_path)
    assert result.returncode == code, result.stderr
    log_dir = tmp_path / "exit" / "version_0"
    assert test_tube.read(log_dir).column("i").to_pylist() == list(range(20000))
    assert pq.read_metadata(log_dir / "metrics.parquet").num_rows == 20000
    status = json.loads((log_dir / "meta.experiment").read_text())["status"]
    assert status == ("failed" if code == 1 else "finished")


def test_sigterm_flushes_and_exits_143(tmp_path: Path) -> None:
    """SIGTERM leads to the final flush; the process exits with 128 + 15."""
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, test_tube
        exp = test_tube.Experiment(name="term", save_dir={str(tmp_path)!r}, autosave=False)
        for i in range(5000):
            exp.log({{"i": i}})
        print("ready", flush=True)
        sys.stdin.read()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    proc.terminate()
    assert proc.wait(timeout=60) == 143
    assert test_tube.read(tmp_path / "term" / "version_0").num_rows == 5000
    meta = json.loads((tmp_path / "term" / "version_0" / "meta.experiment").read_text())
    assert (meta["status"], meta["end_reason"]) == ("failed", "signal SIGTERM")


def test_forked_child_cannot_log_and_does_not_flush_parent_rows(tmp_path: Path) -> None:
    """A forked child gets ExperimentClosedError from log() and its exit writes nothing twice."""
    result = run_python(f"""
        import os, test_tube
        exp = test_tube.Experiment(name="fork", save_dir={str(tmp_path)!r}, autosave=False)
        for i in range(100):
            exp.log({{"i": i}})
        pid = os.fork()
        if pid == 0:
            try:
                exp.log({{"i": -1}})
            except test_tube.ExperimentClosedError:
                print("child refused", flush=True)
        else:
            os.waitpid(pid, 0)
            exp.log({{"i": 100}})
            exp.close()
    """, tmp_path)
    assert "child refused" in result.stdout, result.stderr
    assert test_tube.read(tmp_path / "fork" / "version_0").column("i").to_pylist() == list(range(101))


def test_public_names_are_pinned() -> None:
    """The public surface is exactly what __all__ lists."""
    assert test_tube.__all__ == sorted(test_tube.__all__)
    assert set(test_tube.__all__) == {
        "DamagedRunError", "DamagedRunWarning", "Experiment", "ExperimentClosedError", "FinalFlushWarning",
        "GitSnapshotWarning", "HyperOptArgumentParser", "RankError", "SlurmCluster", "TestTubeError", "TrialError",
        "UploadWarning", "VersionAgreementError",
        "VersionInUseError", "WriterError",
        "__version__", "checkout_snapshot", "read", "runs",
    }


def test_csv_is_current_after_each_save_and_never_quadratic(tmp_path: Path) -> None:
    """Each save() appends only the new rows: the CSV text grows by exactly those lines."""
    exp = Experiment(name="linear", save_dir=tmp_path)
    previous = b""
    for k in range(5):
        for i in range(50):
            exp.log({"i": k * 50 + i})
        exp.save()
        data = (Path(exp.log_dir) / "metrics.csv").read_bytes()
        assert data.startswith(previous)
        assert data.count(b"\n") == 1 + 50 * (k + 1)
        previous = data
    exp.close()
    _ = io  # keep the import for readers of this file who add byte-level checks


def test_resuming_a_version_of_the_original_keeps_its_rows(tmp_path: Path) -> None:
    """A version folder written by test-tube 0.7.5 (metrics.csv only) is resumed without losing a row."""
    log_dir = tmp_path / "old" / "version_0"
    log_dir.mkdir(parents=True)
    (log_dir / "metrics.csv").write_text(
        "train_loss,epoch,created_at,val_loss,val_acc\n"
        "0.9,0.0,2026-11-29 17:33:26.054121,,\n"
        ",,2026-11-29 17:33:26.054156,1.1,0.4\n"
    )
    (log_dir / "meta_tags.csv").write_text("key,value\nlr,0.001\n")
    with Experiment(name="old", save_dir=tmp_path, version=0) as exp:
        assert exp.tags == {"lr": 0.001}
        exp.log({"train_loss": 0.5})
    rows = csv_rows(exp.log_dir)
    assert [r["step"] for r in rows] == ["0", "1", "2"]
    assert [r["train_loss"] for r in rows] == ["0.9", "", "0.5"]
    assert rows[1]["created_at"] == "2026-11-29 17:33:26.054156"
    assert test_tube.read(exp.log_dir).column("val_acc").to_pylist() == [None, 0.4, None]


def test_many_laps_of_a_small_ring_keep_every_row_in_order(tmp_path: Path) -> None:
    """Rows taken in runs that wrap around the ring's end, with a new key set now and then, all arrive in order."""
    with Experiment(name="laps", save_dir=tmp_path, record_git=False, max_queue_rows=1000) as exp:
        for i in range(20_000):
            if i % 5000 == 4999:
                exp.log({"a": float(i), "b": i, "c": "text"}, step=i)  # a slow-path row between packed runs
            else:
                exp.log({"a": float(i), "b": i}, step=i)
            if i == 7777:
                exp.save()
    table = test_tube.read(exp.log_dir)
    assert table.column("step").to_pylist() == list(range(20_000))
    assert table.column("a").to_pylist() == [float(i) for i in range(20_000)]
    assert table.column("b").to_pylist() == list(range(20_000))
    with open(os.path.join(exp.log_dir, "metrics.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(20_000))
    assert rows[4999]["c"] == "text" and rows[5000]["c"] == ""
    assert pq.read_table(os.path.join(exp.log_dir, "metrics.parquet")).column("b").to_pylist() == list(range(20_000))


def test_the_switch_interval_is_lowered_while_open_and_given_back(tmp_path: Path) -> None:
    """While a writer runs the interpreter's switch interval is at most 0.2 ms; close() gives the old one back."""
    before = sys.getswitchinterval()
    try:
        sys.setswitchinterval(0.005)
        exp = Experiment(name="si", save_dir=tmp_path, record_git=False)
        assert sys.getswitchinterval() == pytest.approx(2e-4)
        exp.log({"x": 1.0})
        exp.close()
        assert sys.getswitchinterval() == pytest.approx(0.005)
        sys.setswitchinterval(1e-4)  # a user's lower setting is left alone
        with Experiment(name="si", save_dir=tmp_path, record_git=False):
            assert sys.getswitchinterval() == pytest.approx(1e-4)
        assert sys.getswitchinterval() == pytest.approx(1e-4)
    finally:
        sys.setswitchinterval(before)
