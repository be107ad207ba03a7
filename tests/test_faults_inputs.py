"""Bad inputs: a clear exception at the call or a documented round trip, never a damaged file."""

from __future__ import annotations

import csv
import decimal
import math
import shutil
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import test_tube
from faultlib import count, same
from test_tube._errors import LogTypeError, LogValueError


def _open(tmp_path: Path, **kw: Any) -> test_tube.Experiment:
    return test_tube.Experiment(name="in", save_dir=tmp_path, record_git=False, **kw)


def _values(exp: test_tube.Experiment) -> dict[str, list[Any]]:
    exp.close()
    return test_tube.read(exp.log_dir).to_pydict()


# value -> (column value read back) for everything accepted
ACCEPTED = [
    ("nan", float("nan"), float("nan")),
    ("inf", float("inf"), float("inf")),
    ("ninf", -float("inf"), -float("inf")),
    ("none", None, None),
    ("int64_max", 2**63 - 1, 2**63 - 1),
    ("int64_min", -(2**63), -(2**63)),
    ("bool", True, True),
    ("zero_d_float", np.array(3.5), 3.5),
    ("zero_d_int", np.array(7, np.int32), 7),
    ("zero_d_bool", np.array(False), False),
    ("empty_str", "", ""),
    ("unicode", "naïve, \"quoted\"\nnew line\r\tü€😀", "naïve, \"quoted\"\nnew line\r\tü€😀"),
]
NUMPY_OK = [np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
            np.float16, np.float32, np.float64, np.longdouble]


@pytest.mark.parametrize(("key", "value", "back"), ACCEPTED, ids=[a[0] for a in ACCEPTED])
def test_special_values_round_trip(tmp_path: Path, key: str, value: Any, back: Any) -> None:
    """NaN, infinities, None, int64 limits, 0-d arrays and awkward text read back as logged."""
    exp = _open(tmp_path)
    exp.log({key: value, "after": 1})
    data = _values(exp)
    assert same(data[key][0], back), data[key]
    check_readers_plain(exp.log_dir)


def check_readers_plain(log_dir: str) -> None:
    """The published files parse with pandas, Polars, DuckDB and pyarrow."""
    import duckdb
    import pandas as pd
    import polars as pl

    pd.read_csv(Path(log_dir) / "metrics.csv")
    pl.read_csv(Path(log_dir) / "metrics.csv", infer_schema_length=None)
    duckdb.sql(f"SELECT count(*) FROM read_csv('{log_dir}/metrics.csv')").fetchall()
    pq.read_table(Path(log_dir) / "metrics.parquet")
    pl.read_parquet(Path(log_dir) / "metrics.parquet")


@pytest.mark.parametrize("kind", NUMPY_OK, ids=lambda k: k.__name__)
def test_numpy_scalars_of_every_real_dtype(tmp_path: Path, kind: type) -> None:
    """Every numpy bool, integer and floating scalar is stored as bool, int64 or float64 with its value."""
    exp = _open(tmp_path)
    value = kind(1) if kind is not np.bool_ else kind(True)
    exp.log({"v": value})
    exp.log({"v": kind(0) if kind is not np.bool_ else kind(False)})
    data = _values(exp)
    want = [True, False] if kind is np.bool_ else ([1.0, 0.0] if issubclass(kind, np.floating) else [1, 0])
    assert [type(v) for v in data["v"]] == [type(w) for w in want] and data["v"] == want


@pytest.mark.parametrize(
    ("key", "value", "error"),
    [
        ("huge", 2**63, LogValueError),
        ("neg_huge", -(2**64), LogValueError),
        ("u64_huge", np.uint64(2**64 - 1), LogValueError),
        ("decimal", decimal.Decimal("1.5"), LogTypeError),
        ("complex", 1j, LogTypeError),
        ("c64", np.complex64(1), LogTypeError),
        ("c128", np.complex128(1), LogTypeError),
        ("object", object(), LogTypeError),
        ("list", [1, 2], LogTypeError),
        ("bytes", b"ab", LogTypeError),
        ("array_1d", np.array([1.0]), LogTypeError),
        ("datetime64", np.datetime64("2020-01-01"), LogTypeError),
        ("np_str", np.str_("hi"), LogTypeError),
    ],
)
def test_unsupported_values_raise_naming_the_key(tmp_path: Path, key: str, value: Any, error: type) -> None:
    """An unusable value raises LogTypeError/LogValueError naming its key, and nothing of the row is written."""
    exp = _open(tmp_path)
    exp.log({"good": 1})
    with pytest.raises(error) as info:
        exp.log({"fine": 2.0, key: value})
    assert info.value.key == key and key in str(info.value)
    exp.log({"good": 3})
    data = _values(exp)
    assert data["good"] == [1, 3] and "fine" not in data and key not in data
    check_readers_plain(exp.log_dir)


@pytest.mark.parametrize(
    ("key", "error"), [(1, LogTypeError), (None, LogTypeError), (("a",), LogTypeError), ("", LogValueError),
                       ("step", LogValueError), ("created_at", LogValueError)],
)
def test_bad_keys_raise(tmp_path: Path, key: Any, error: type) -> None:
    """Keys that are not strings, empty, or reserved (step, created_at) raise at the call."""
    exp = _open(tmp_path)
    with pytest.raises(error):
        exp.log({key: 1.0})
    exp.log({"ok": 1})
    assert _values(exp)["ok"] == [1]


def test_a_key_whose_type_changes_mid_run(tmp_path: Path) -> None:
    """An int column widens to float (documented); a str into a number column raises naming the key."""
    exp = _open(tmp_path)
    for i in range(100):
        exp.log({"n": i, "b": True})
    exp.save()
    exp.log({"n": 0.5, "b": False})
    with pytest.raises(LogTypeError) as info:
        exp.log({"n": "text"})
    assert info.value.key == "n"
    with pytest.raises(LogTypeError):
        exp.log({"b": 2.5})
    data = _values(exp)
    assert data["n"] == [float(i) for i in range(100)] + [0.5]
    assert all(type(v) is float for v in data["n"])
    check_readers_plain(exp.log_dir)


def test_a_new_key_first_seen_at_row_ten_thousand(tmp_path: Path) -> None:
    """A key first seen at row 10,000 reaches the CSV header, the Parquet file and read()."""
    import pandas as pd

    exp = _open(tmp_path)
    for i in range(10_000):
        exp.log({"i": i})
    exp.save()
    exp.log({"i": 10_000, "late": 1.5})
    data = _values(exp)
    assert data["late"] == [None] * 10_000 + [1.5]
    df = pd.read_csv(Path(exp.log_dir) / "metrics.csv")
    assert df.shape == (10_001, 4) and df["late"][10_000] == 1.5 and df["i"].tolist() == list(range(10_001))
    assert pq.read_table(Path(exp.log_dir) / "metrics.parquet").column("late").to_pylist()[-1] == 1.5


def test_ten_thousand_keys_in_one_row(tmp_path: Path) -> None:
    """One row of 10,000 keys is stored whole, in key order, in every published file."""
    import pandas as pd

    exp = _open(tmp_path)
    for i in range(50):
        exp.log({"i": i})
    wide = {f"k{j}": float(j) for j in range(10_000)}
    exp.log(wide)
    data = _values(exp)
    assert list(data)[3:] == list(wide)
    assert [data[k][-1] for k in wide] == list(wide.values()) and data["k0"][:-1] == [None] * 50
    df = pd.read_csv(Path(exp.log_dir) / "metrics.csv")
    assert df.shape == (51, 10_003) and df["k9999"][50] == 9999.0
    assert pq.read_table(Path(exp.log_dir) / "metrics.parquet").num_rows == 51


def test_a_ten_megabyte_string(tmp_path: Path) -> None:
    """A 10 MB string reads back whole from the journal, the CSV and the Parquet file."""
    exp = _open(tmp_path)
    big = "x" * (10 * 2**20 - 3) + ",\"\n"
    exp.log({"big": big, "i": 1})
    data = _values(exp)
    assert data["big"] == [big]
    csv.field_size_limit(2**30)
    with open(Path(exp.log_dir) / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["big"] == big
    assert pq.read_table(Path(exp.log_dir) / "metrics.parquet").column("big").to_pylist() == [big]


def test_steps_that_repeat_or_go_backwards_are_kept_as_given(tmp_path: Path) -> None:
    """Explicit steps are stored as given, in logging order, even repeated or decreasing; later rows continue."""
    exp = _open(tmp_path)
    for s in [0, 1, 2, 2, 1, 7]:
        exp.log({"v": s}, step=s)
    exp.log({"v": -1})
    exp.log({"v": -2}, global_step=np.int64(3))
    with pytest.raises(LogTypeError):
        exp.log({"v": 0}, step=True)
    with pytest.raises(LogValueError):
        exp.log({"v": 0}, step=1, global_step=2)
    assert _values(exp)["step"] == [0, 1, 2, 2, 1, 7, 8, 3]


def test_mappings_are_snapshots(tmp_path: Path) -> None:
    """Any Mapping is accepted, and changing it after log() changes nothing."""
    exp = _open(tmp_path)
    row: dict[str, Any] = {"a": 1}
    exp.log(row)
    row["a"] = 2
    exp.log(OrderedDict(a=3))
    exp.log({"nested": {"x": 1.0}})
    data = _values(exp)
    assert data["a"] == [1, 3, None] and data["nested/x"] == [None, None, 1.0]


KINDS = {
    "int": st.integers(-(2**63), 2**63 - 1),
    "float": st.floats(allow_nan=True, allow_infinity=True),
    "bool": st.booleans(),
    "str": st.text(max_size=30),
}


@st.composite
def runs(draw: st.DrawFn) -> tuple[dict[str, str], list[dict[str, Any]]]:
    names = draw(st.lists(st.text("abcxyz_/ ,", min_size=1, max_size=5).filter(lambda k: k not in ("step", "created_at") and not k.startswith("/") and not k.endswith("/") and "//" not in k), min_size=1, max_size=5, unique=True))
    kinds = {name: draw(st.sampled_from(sorted(KINDS))) for name in names}
    rows = draw(st.lists(
        st.fixed_dictionaries({}, optional={n: st.one_of(st.none(), KINDS[k]) for n, k in kinds.items()}),
        min_size=1, max_size=40,
    ))
    return kinds, rows


@settings(max_examples=count(40, 400), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(runs())
def test_random_rows_read_back_equal(run: tuple[dict[str, str], list[dict[str, Any]]]) -> None:
    """Random rows of every column kind (with None, NaN, infinities, odd text) read back equal, in every file."""
    _, rows = run
    folder = tempfile.mkdtemp(prefix="tt-hyp-")
    try:
        exp = test_tube.Experiment(name="h", save_dir=folder, record_git=False)
        for r in rows:
            exp.log(r)
        exp.close()
        table = test_tube.read(exp.log_dir)
        assert table.num_rows == len(rows)
        data = table.to_pydict()
        for i, r in enumerate(rows):
            for name in set(data) - {"step", "created_at"}:
                assert same(data[name][i], r.get(name)), (i, name, data[name][i], r.get(name))
        assert set(data) - {"step", "created_at"} == {k for r in rows for k in r}
        parquet = pq.read_table(Path(exp.log_dir) / "metrics.parquet")
        assert parquet.num_rows == len(rows)
        for name in parquet.column_names[2:]:
            assert all(same(a, b) for a, b in zip(parquet.column(name).to_pylist(), data[name])), name
        with open(Path(exp.log_dir) / "metrics.csv", newline="", encoding="utf-8") as f:
            lines = list(csv.reader(f))
        assert len(lines) == len(rows) + 1
        header = lines[0]
        for i, r in enumerate(rows):
            for name, v in r.items():
                if isinstance(v, str) and v:
                    assert lines[i + 1][header.index(name)] == v
                elif isinstance(v, float) and math.isfinite(v):
                    assert float(lines[i + 1][header.index(name)]) == v
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# -- holes found by trying to break it (issue 22) ------------------------------------------


class _BadStr:
    """A tag value whose str() raises."""

    def __str__(self) -> str:
        raise RuntimeError("no text for you")


def _meta(log_dir: str) -> dict[str, Any]:
    import json

    return json.loads((Path(log_dir) / "meta.experiment").read_text())


@pytest.mark.parametrize(
    ("call", "row", "key"),
    [
        ("log", {"s": "bad \udc80 text"}, "s"),
        ("log", {"bad\udc80key": "x"}, "bad\udc80key"),
        ("log", {"outer": {"in\ud800": 1.0}}, "outer/in\ud800"),
        ("tag", {"t\udc80": 1}, "t\udc80"),
        ("tag", {"t": "v\udfff"}, "t"),
        ("tag", {"t": _BadStr()}, "t"),
    ],
    ids=["value", "key", "nested_key", "tag_key", "tag_value", "tag_str_raises"],
)
def test_text_no_file_can_hold_is_refused_at_the_call_and_nothing_is_lost(
        tmp_path: Path, call: str, row: dict[str, Any], key: str) -> None:
    """A lone surrogate or a tag whose str() raises is refused naming the key; every other row is written."""
    exp = _open(tmp_path)
    exp.tag({"lr": 0.1})
    exp.log({"s": "ok"})
    exp.save()
    with pytest.raises((LogTypeError, LogValueError)) as info:
        getattr(exp, call)(row)
    assert info.value.key == key and repr(key) in str(info.value)
    exp.log({"s": "after"})
    exp.tag({"seed": 3})
    exp.save()
    exp.close()
    assert test_tube.read(exp.log_dir).column("s").to_pylist() == ["ok", "after"]
    assert _meta(exp.log_dir)["status"] == "finished"
    import pandas as pd

    assert pd.read_csv(Path(exp.log_dir) / "metrics.csv")["s"].tolist() == ["ok", "after"]
    with open(Path(exp.log_dir) / "meta_tags.csv", newline="") as f:
        assert list(csv.reader(f)) == [["key", "value"], ["lr", "0.1"], ["seed", "3"]]


def test_a_refused_surrogate_in_a_script_that_never_closes_loses_nothing_at_exit(tmp_path: Path) -> None:
    """At exit, after a refused surrogate, every accepted row is written, no warning, status finished."""
    import subprocess
    import sys

    script = tmp_path / "victim.py"
    script.write_text(
        "import sys, test_tube\n"
        f"e = test_tube.Experiment(save_dir={str(tmp_path)!r}, name='x', record_git=False)\n"
        "e.log({'s': 'ok'}); e.save()\n"
        "try:\n    e.log({'s': '\\udc80'})\nexcept ValueError as exc:\n    print('refused', exc.key == 's')\n"
        "e.log({'s': 'after'}); e.log({'s': 'last'})\n"
        "print(e.log_dir)\n"
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.split()
    assert out[:2] == ["refused", "True"]
    assert "rows were not written" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert test_tube.read(out[2]).column("s").to_pylist() == ["ok", "after", "last"]
    assert _meta(out[2])["status"] == "finished"


def test_an_int_beyond_2_53_then_a_float_in_a_later_frame_reads_everywhere(tmp_path: Path) -> None:
    """Ints widen to floats across journal frames too: read(), show, runs() and /api/run all work."""
    import polars as pl

    from test_serve import Running, get_json, q
    from test_tube._app._cli import main

    exp = _open(tmp_path)
    exp.log({"x": 2**53 + 1})
    exp.save()
    exp.log({"x": 0.5})
    exp.close()
    assert test_tube.read(exp.log_dir).column("x").to_pylist() == [float(2**53 + 1), 0.5]
    assert pl.read_parquet(Path(exp.log_dir) / "metrics.parquet")["x"].to_list() == [float(2**53 + 1), 0.5]
    assert main(["show", exp.log_dir]) == 0
    assert test_tube.runs(tmp_path).column("x.last").to_pylist() == [0.5]
    server = Running(tmp_path)
    try:
        assert get_json(server.url + "api/run?" + q(name="in", version=0))["rows"] == 2
    finally:
        server.stop()


def test_a_carriage_return_in_a_key_or_tag_round_trips(tmp_path: Path) -> None:
    """``\\r`` in a metric key, tag key or tag value is quoted: pandas, csv and a reopen read it back."""
    import pandas as pd

    exp = _open(tmp_path)
    exp.log({"a\rb": 1.0, "c": 2})
    exp.tag({"t\rk": 1, "v": "x\ry"})
    exp.close()
    df = pd.read_csv(Path(exp.log_dir) / "metrics.csv")
    assert list(df.columns) == ["step", "created_at", "a\rb", "c"]
    assert df["step"].tolist() == [0] and df["a\rb"].tolist() == [1.0]
    assert test_tube.read(exp.log_dir).column_names == ["step", "created_at", "a\rb", "c"]
    again = _open(tmp_path, version=0)
    again.close()
    assert again.tags == {"t\rk": 1, "v": "x\ry"}


def test_a_long_image_key_gets_a_file_name_that_fits_and_keeps_the_row(tmp_path: Path) -> None:
    """A 300-character image key is written to a file that exists; the cell names it; other values are kept."""
    key = "k" * 300 + "_png"
    other = "k" * 299 + "j_png"  # the same first 160 bytes: its own file all the same
    exp = _open(tmp_path)
    exp.log({key: np.zeros((4, 4), np.uint8), other: np.ones((4, 4), np.uint8), "v": 1.5})
    exp.save()
    exp.close()
    row = test_tube.read(exp.log_dir).to_pylist()[0]
    assert row["v"] == 1.5
    assert row[key] != row[other]
    for k in (key, other):
        path = Path(exp.log_dir) / row[k]
        assert path.is_file() and len(path.name.encode()) <= 200


def test_the_automatic_step_after_int64_max_is_named_and_does_not_creep(tmp_path: Path) -> None:
    """After step=2**63-1 an automatic step is refused naming 2**63, every time; an explicit step still works."""
    exp = _open(tmp_path)
    exp.log({"v": 1.0}, step=2**63 - 1)
    messages = []
    for row in ({"v": 2.0}, {"v": 3.0}, {"other": "slow path"}):
        with pytest.raises(LogValueError) as info:
            exp.log(row)
        assert info.value.key == "step"
        messages.append(str(info.value))
    assert all(str(2**63) in m for m in messages) and not any(str(2**63 + 1) in m for m in messages)
    exp.log({"v": 4.0}, step=5)
    exp.log({"v": 5.0})
    assert _values(exp)["step"] == [2**63 - 1, 5, 6]


# -- the property: random bad input is refused at the call or read back everywhere ----------

# Every code point, lone surrogates and control characters included.
ANY_CHAR = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, blacklist_categories=())
KEYS = st.one_of(
    st.text(ANY_CHAR, min_size=0, max_size=8),
    st.text("ab\r\n\t\0,\"' /\udc80é😀", min_size=1, max_size=6),
    st.sampled_from(["step", "created_at", "x_png", "a/b"]),
    st.text("kK_", min_size=200, max_size=400),  # long names
)
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),  # huge ints, beyond int64 and beyond 2**53
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(ANY_CHAR, max_size=12),
)


@st.composite
def bad_runs(draw: st.DrawFn) -> list[dict[str, Any]]:
    keys = draw(st.lists(KEYS, min_size=1, max_size=4, unique=True))
    # A few keys, random value kinds per row: the type of a key changes under it.
    return draw(st.lists(st.dictionaries(st.sampled_from(keys), VALUES, min_size=1, max_size=4),
                         min_size=1, max_size=8))


def _expected(accepted: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Each column as read() should give it: ints widened to floats where a float came too."""
    names = list(dict.fromkeys(k for r in accepted for k in r))
    columns: dict[str, list[Any]] = {}
    for name in names:
        values = [r.get(name) for r in accepted]
        kinds = {type(v) for v in values if v is not None}
        if kinds == {int, float}:
            values = [None if v is None else float(v) for v in values]
        columns[name] = values
    return columns


def _csv_text(value: Any) -> str:
    if value is None:
        return ""
    return str(value)


@settings(max_examples=count(40, 400), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bad_runs(), st.booleans())
def test_random_bad_input_is_refused_at_the_call_or_read_back_by_every_reader(
        rows: list[dict[str, Any]], save_between: bool) -> None:
    """Either log() raises naming the key, or read(), pandas on metrics.csv and Polars on metrics.parquet give it back."""
    import pandas as pd
    import polars as pl

    folder = tempfile.mkdtemp(prefix="tt-bad-")
    exp = test_tube.Experiment(name="h", save_dir=folder, record_git=False)
    try:
        accepted: list[dict[str, Any]] = []
        for r in rows:
            try:
                exp.log(r)
            except (LogTypeError, LogValueError) as exc:
                assert exc.key in r, (exc.key, r)  # a clear error naming the key, at the call
                assert repr(exc.key) in str(exc)
                continue
            accepted.append(r)
            if save_between:
                exp.save()  # one journal frame per row: type changes cross frames
        exp.close()  # never an error later
        want = _expected(accepted)
        data = test_tube.read(exp.log_dir).to_pydict()
        assert list(data)[2:] == list(want)
        for name, values in want.items():
            assert all(same(a, b) for a, b in zip(data[name], values)), (name, data[name], values)
        parquet = pl.read_parquet(Path(exp.log_dir) / "metrics.parquet")
        assert parquet.columns[2:] == list(want) and parquet.height == len(accepted)
        for name, values in want.items():
            assert all(same(a, b) for a, b in zip(parquet[name].to_list(), values)), (name, values)
        frame = pd.read_csv(Path(exp.log_dir) / "metrics.csv", dtype=str, keep_default_na=False)
        assert list(frame.columns)[2:] == list(want) and len(frame) == len(accepted)
        for name, values in want.items():
            for cell, value in zip(frame[name].tolist(), values):
                if isinstance(value, float):
                    assert same(float(cell), value), (name, cell, value)
                else:
                    assert cell == _csv_text(value), (name, cell, value)
        pd.read_csv(Path(exp.log_dir) / "metrics.csv")  # with type inference too
    finally:
        exp.close()
        shutil.rmtree(folder, ignore_errors=True)
