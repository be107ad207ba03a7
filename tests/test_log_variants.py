"""The rows real training loops log: explicit steps, numpy scalars, nested dicts, 0-d tensors.

Each variant must land with the right steps, column types and values, whether
the row took the compiled fast path or the general one, and every rule of
``log()`` keeps holding for them.
"""

from __future__ import annotations

import csv
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import test_tube
from test_tube import Experiment

torch = pytest.importorskip("torch", reason="the tensor tests need torch (installed by the test extra)")


def _open(tmp_path: Path, **kw: Any) -> Experiment:
    return Experiment(save_dir=tmp_path, name="v", record_git=False, **kw)


def _closed_table(exp: Experiment) -> pa.Table:
    exp.close()
    table = test_tube.read(exp.log_dir)
    parquet = pq.read_table(Path(exp.log_dir) / "metrics.parquet")
    # repr, so that NaN equals NaN
    assert repr(parquet.to_pylist()) == repr(table.to_pylist()), "metrics.parquet differs from the journal"
    return table


def _fast_shapes(exp: Experiment) -> int:
    # White-box on purpose: the fast path is a speed promise that no file shows.
    return len(exp._fast.shapes)


def _csv(exp: Experiment) -> list[dict[str, str]]:
    with open(Path(exp.log_dir) / "metrics.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# -- steps -------------------------------------------------------------------------


def test_explicit_steps_land_as_given_and_auto_steps_follow(tmp_path: Path) -> None:
    """step= increasing, repeated and going back lands as given; a row without one follows the last."""
    exp = _open(tmp_path)
    given_steps = [0, 10, 20, 20, 5, 6, None, None, 100, None]
    for i, s in enumerate(given_steps):
        exp.log({"loss": float(i), "acc": i / 10}, step=s)
    table = _closed_table(exp)
    assert table.column("step").to_pylist() == [0, 10, 20, 20, 5, 6, 7, 8, 100, 101]
    assert table.column("loss").to_pylist() == [float(i) for i in range(10)]
    assert [r["step"] for r in _csv(exp)] == ["0", "10", "20", "20", "5", "6", "7", "8", "100", "101"]


def test_global_step_is_the_same_as_step(tmp_path: Path) -> None:
    """global_step= (0.7.5's and Lightning's name) sets the step exactly as step= does."""
    exp = _open(tmp_path)
    for i in range(5):
        exp.log({"loss": float(i)}, global_step=i * 3)
    exp.log({"loss": 9.0}, step=50, global_step=50)
    exp.log({"loss": 10.0})
    assert _closed_table(exp).column("step").to_pylist() == [0, 3, 6, 9, 12, 50, 51]


def test_steps_follow_across_key_sets_and_paths(tmp_path: Path) -> None:
    """An explicit step on one key set moves the automatic steps of the others, fast path or not."""
    exp = _open(tmp_path)
    for epoch in range(3):
        for batch in range(4):
            exp.log({"train_loss": 1.0 / (batch + 1)}, step=epoch * 100 + batch)
        exp.log({"val_loss": 0.5, "epoch": epoch})  # automatic: one after the last train step
        exp.log({"note": f"epoch {epoch}"})  # a string row: the general path
    table = _closed_table(exp)
    steps = table.column("step").to_pylist()
    assert steps == [0, 1, 2, 3, 4, 5, 100, 101, 102, 103, 104, 105, 200, 201, 202, 203, 204, 205]
    assert table.column("epoch").to_pylist()[4::6] == [0, 1, 2]
    assert _fast_shapes(exp) == 2


@pytest.mark.parametrize("step", [2**63, -(2**63) - 1])
def test_a_step_beyond_64_bits_raises_and_leaves_no_gap(tmp_path: Path, step: int) -> None:
    """A step that does not fit raises ValueError naming step; the next automatic step has no gap."""
    exp = _open(tmp_path)
    exp.log({"loss": 1.0})
    exp.log({"loss": 2.0})
    with pytest.raises(ValueError, match="step"):
        exp.log({"loss": 3.0}, step=step)
    exp.log({"loss": 4.0})
    table = _closed_table(exp)
    assert table.column("step").to_pylist() == [0, 1, 2]
    assert table.column("loss").to_pylist() == [1.0, 2.0, 4.0]


@pytest.mark.parametrize("step", [True, 1.0, "3", np.float64(2.0)])
def test_a_step_that_is_not_an_int_raises_on_a_known_key_set(tmp_path: Path, step: Any) -> None:
    """A bool, float or str step raises TypeError naming step, also after the key set is known."""
    exp = _open(tmp_path)
    exp.log({"loss": 1.0}, step=0)
    with pytest.raises(TypeError, match="step"):
        exp.log({"loss": 2.0}, step=step)
    assert _closed_table(exp).num_rows == 1


def test_numpy_integer_steps_are_accepted(tmp_path: Path) -> None:
    """step=np.int64(...) (a counter kept in numpy) lands as that step."""
    exp = _open(tmp_path)
    for s in np.arange(3, 6):
        exp.log({"loss": 1.0}, step=s)
    assert _closed_table(exp).column("step").to_pylist() == [3, 4, 5]


# -- numpy scalars -------------------------------------------------------------------------

NUMPY_SCALARS = [
    (np.float64(0.1), pa.float64(), 0.1),
    (np.float32(0.1), pa.float64(), float(np.float32(0.1))),
    (np.float16(0.1), pa.float64(), float(np.float16(0.1))),
    (np.int64(-(2**62)), pa.int64(), -(2**62)),
    (np.int32(-7), pa.int64(), -7),
    (np.int16(300), pa.int64(), 300),
    (np.int8(-128), pa.int64(), -128),
    (np.uint32(2**32 - 1), pa.int64(), 2**32 - 1),
    (np.uint16(65535), pa.int64(), 65535),
    (np.uint8(255), pa.int64(), 255),
    (np.bool_(True), pa.bool_(), True),
]


@pytest.mark.parametrize(("value", "column", "stored"), NUMPY_SCALARS, ids=lambda v: type(v).__name__)
def test_numpy_scalars_keep_type_and_value_on_both_paths(
    tmp_path: Path, value: Any, column: pa.DataType, stored: Any
) -> None:
    """Every numpy scalar type is stored with its column type and exact value, first call and hot loop alike."""
    exp = _open(tmp_path)
    for i in range(4):
        exp.log({"x": value, "i": i}, step=i * 2 if i % 2 else None)
    assert _fast_shapes(exp) == 1
    table = _closed_table(exp)
    assert table.schema.field("x").type == column
    assert table.column("x").to_pylist() == [stored] * 4
    assert table.column("step").to_pylist() == [0, 2, 3, 6]


def test_float32_nan_and_infinities_are_kept(tmp_path: Path) -> None:
    """np.float32 NaN and ±inf from a diverging loss are stored as NaN and ±inf."""
    exp = _open(tmp_path)
    for v in (np.float32("nan"), np.float32("inf"), np.float32("-inf"), np.float32("nan")):
        exp.log({"loss": v})
    values = _closed_table(exp).column("loss").to_pylist()
    assert math.isnan(values[0]) and values[1:3] == [math.inf, -math.inf] and math.isnan(values[3])
    assert [r["loss"] for r in _csv(exp)] == ["nan", "inf", "-inf", "nan"]


def test_a_column_keeps_its_type_across_numpy_and_python_values(tmp_path: Path) -> None:
    """ints widen to floats, whichever of numpy or Python gave them; a bool after a float raises naming the key."""
    exp = _open(tmp_path)
    exp.log({"a": np.int32(1)})
    exp.log({"a": np.int32(2)})
    exp.log({"a": np.float32(2.5)})
    exp.log({"a": 3})
    with pytest.raises(TypeError, match="'a'"):
        exp.log({"a": np.bool_(True)})
    table = _closed_table(exp)
    assert table.schema.field("a").type == pa.float64()
    assert table.column("a").to_pylist() == [1.0, 2.0, 2.5, 3.0]


def test_uint64_and_longdouble_still_take_the_general_path(tmp_path: Path) -> None:
    """np.uint64 beyond int64 raises naming the key; one that fits is stored; longdouble becomes float64."""
    exp = _open(tmp_path)
    exp.log({"u": np.uint64(5), "ld": np.longdouble(0.5)})
    exp.log({"u": np.uint64(6), "ld": np.longdouble(1.5)})
    with pytest.raises(ValueError, match="'u'"):
        exp.log({"u": np.uint64(2**63), "ld": np.longdouble(0.5)})
    table = _closed_table(exp)
    assert table.column("u").to_pylist() == [5, 6] and table.column("ld").to_pylist() == [0.5, 1.5]


# -- nested dicts ------------------------------------------------------------------------------


def test_nested_dicts_land_as_slash_columns_in_a_hot_loop(tmp_path: Path) -> None:
    """{"losses": {"train": .., "val": ..}} lands as losses/train, losses/val, with steps, on the fast path."""
    exp = _open(tmp_path)
    for i in range(5):
        exp.log({"losses": {"train": i * 1.0, "val": {"top1": np.float32(i / 4)}}, "lr": 0.1}, step=10 + i)
    assert _fast_shapes(exp) == 1
    table = _closed_table(exp)
    assert table.column_names == ["step", "created_at", "losses/train", "losses/val/top1", "lr"]
    assert table.column("losses/val/top1").to_pylist() == [i / 4 for i in range(5)]
    assert table.column("step").to_pylist() == [10, 11, 12, 13, 14]


def test_a_nested_dict_with_other_keys_is_never_cut_down(tmp_path: Path) -> None:
    """A known layout with an extra, missing or replaced inner key stores exactly what was logged."""
    exp = _open(tmp_path)
    exp.log({"losses": {"train": 1.0, "val": 2.0}})
    exp.log({"losses": {"train": 1.0, "val": 2.0}})
    exp.log({"losses": {"train": 3.0, "val": 4.0, "test": 5.0}})  # one more inner key
    exp.log({"losses": {"train": 6.0}, "x": 0.0})  # one fewer, and a second top key
    exp.log({"losses": {"train": 7.0, "other": 8.0}})  # same size, other key
    with pytest.raises(TypeError, match="losses/train"):
        exp.log({"losses": {"train": "text", "val": 2.0}})
    table = _closed_table(exp)
    rows = table.to_pylist()
    assert [r["losses/train"] for r in rows] == [1.0, 1.0, 3.0, 6.0, 7.0]
    assert [r["losses/val"] for r in rows] == [2.0, 2.0, 4.0, None, None]
    assert [r["losses/test"] for r in rows] == [None, None, 5.0, None, None]
    assert [r["losses/other"] for r in rows] == [None, None, None, None, 8.0]
    assert [r["x"] for r in rows] == [None, None, None, 0.0, None]


def test_a_flat_slash_key_and_a_nested_dict_fill_the_same_column(tmp_path: Path) -> None:
    """{"a/b": 1.0} and {"a": {"b": 2.0}} are both column a/b, in logging order."""
    exp = _open(tmp_path)
    for i in range(3):
        exp.log({"a/b": float(i)})
        exp.log({"a": {"b": float(i) + 0.5}})
    table = _closed_table(exp)
    assert table.column("a/b").to_pylist() == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    assert table.column("step").to_pylist() == list(range(6))


# -- tensors -------------------------------------------------------------------------------


def test_a_tensor_changed_in_place_after_log_keeps_its_logged_value(tmp_path: Path) -> None:
    """A running-loss accumulator updated and zeroed after log() is stored with the value at each call."""
    exp = _open(tmp_path)
    running = torch.zeros(())
    expected = []
    for step in range(20):
        running += step * 0.5
        exp.log({"running_loss": running}, step=step)
        expected.append(float(running))
        if step % 5 == 4:
            running.zero_()
    running.fill_(-1.0)
    assert _closed_table(exp).column("running_loss").to_pylist() == expected


@pytest.mark.parametrize(
    ("make", "column", "stored"),
    [
        (lambda: torch.tensor(0.1), pa.float64(), float(torch.tensor(0.1))),
        (lambda: torch.tensor(0.1, dtype=torch.float64), pa.float64(), 0.1),
        (lambda: torch.tensor(0.1, dtype=torch.bfloat16), pa.float64(), float(torch.tensor(0.1, dtype=torch.bfloat16))),
        (lambda: torch.tensor(7), pa.int64(), 7),
        (lambda: torch.tensor(-3, dtype=torch.int8), pa.int64(), -3),
        (lambda: torch.tensor(True), pa.bool_(), True),
        (lambda: torch.tensor(2.0, requires_grad=True) * 1.5, pa.float64(), 3.0),
    ],
    ids=["float32", "float64", "bfloat16", "int64", "int8", "bool", "requires_grad"],
)
def test_tensors_keep_dtype_column_and_value(tmp_path: Path, make: Any, column: pa.DataType, stored: Any) -> None:
    """0-d CPU tensors of every dtype land with the dtype's column type and their value, on both paths."""
    exp = _open(tmp_path)
    for i in range(3):
        exp.log({"t": make(), "i": i}, step=None if i else 5)
    assert _fast_shapes(exp) == 1
    table = _closed_table(exp)
    assert table.schema.field("t").type == column
    assert table.column("t").to_pylist() == [stored] * 3
    assert table.column("step").to_pylist() == [5, 6, 7]


def test_a_tensor_of_another_dtype_under_a_known_key_follows_the_column_rule(tmp_path: Path) -> None:
    """An int tensor in a float tensor's column widens; a bool tensor there raises naming the key."""
    exp = _open(tmp_path)
    exp.log({"t": torch.tensor(0.5)})
    exp.log({"t": torch.tensor(0.25)})
    exp.log({"t": torch.tensor(2)})
    with pytest.raises(TypeError, match="'t'"):
        exp.log({"t": torch.tensor(True)})
    table = _closed_table(exp)
    assert table.schema.field("t").type == pa.float64()
    assert table.column("t").to_pylist() == [0.5, 0.25, 2.0]


def test_a_tensor_with_dimensions_is_rejected_after_a_0d_one(tmp_path: Path) -> None:
    """A 1-element 1-d tensor under a key that held 0-d tensors raises TypeError naming the key."""
    exp = _open(tmp_path)
    exp.log({"t": torch.tensor(0.5)})
    exp.log({"t": torch.tensor(0.5)})
    with pytest.raises(TypeError, match="'t'.*dimensions"):
        exp.log({"t": torch.tensor([0.5])})
    assert _closed_table(exp).num_rows == 2


class DeviceTensor:
    """A 0-d tensor on a device: reading it (``item``) would wait for the device, so log() must not."""

    dtype = "torch.float32"
    ndim = 0
    is_cpu = False

    def __init__(self, value: float) -> None:
        self.value = value
        self.items_read = 0

    def detach(self) -> DeviceTensor:
        return self

    def clone(self) -> DeviceTensor:
        return DeviceTensor(self.value)

    def item(self) -> float:
        self.items_read += 1
        return self.value


def test_a_device_tensor_is_copied_at_the_call_and_read_later(tmp_path: Path) -> None:
    """A tensor not on the CPU is cloned by log() (no item() there) and changing it afterwards changes nothing."""
    exp = _open(tmp_path)
    accumulator = DeviceTensor(1.0)
    for i in range(3):
        exp.log({"loss": accumulator})
        assert accumulator.items_read == 0
        accumulator.value += 1.0  # in place, after the call
    assert _closed_table(exp).column("loss").to_pylist() == [1.0, 2.0, 3.0]


# -- every variant, randomly mixed ----------------------------------------------------------

LEAVES = {
    "float": st.floats(allow_nan=False, width=64),
    "np.float32": st.floats(allow_nan=False, width=32).map(np.float32),
    "np.float16": st.floats(allow_nan=False, width=16).map(np.float16),
    "int": st.integers(-(2**63), 2**63 - 1),
    "np.int8": st.integers(-128, 127).map(np.int8),
    "np.uint32": st.integers(0, 2**32 - 1).map(np.uint32),
    "bool": st.booleans(),
    "np.bool_": st.booleans().map(np.bool_),
    "tensor": st.floats(-1e6, 1e6, allow_nan=False, width=32).map(lambda v: torch.tensor(v)),
}
# Kinds that may share a column: each layout's leaf draws from one family.
FAMILIES = [["float", "np.float32", "np.float16", "tensor"], ["int", "np.int8", "np.uint32"], ["bool", "np.bool_"]]


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.item()
    return value.item() if isinstance(value, np.generic) else value


@st.composite
def loops(draw: st.DrawFn) -> list[tuple[dict[str, Any], int | None]]:
    layouts = [
        (("a",), ("b",)),
        (("a",), ("n", "x"), ("n", "y")),
        (("c",),),
    ]
    family = {leaf: draw(st.sampled_from(FAMILIES)) for leaf in ("a", "b", "n/x", "n/y", "c")}
    calls = []
    for _ in range(draw(st.integers(1, 30))):
        layout = draw(st.sampled_from(layouts))
        row: dict[str, Any] = {}
        for path in layout:
            leaf = LEAVES[draw(st.sampled_from(family["/".join(path)]))]
            target = row
            for key in path[:-1]:
                target = target.setdefault(key, {})
            target[path[-1]] = draw(leaf)
        step = draw(st.one_of(st.none(), st.integers(-5, 10**6)))
        calls.append((row, step))
    return calls


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(loops())
def test_random_loops_of_every_variant_read_back_equal(calls: list[tuple[dict[str, Any], int | None]]) -> None:
    """Random mixes of layouts, value kinds and explicit steps read back with the steps the rule gives."""
    folder = tempfile.mkdtemp(prefix="tt-variants-")
    try:
        exp = Experiment(save_dir=folder, name="h", record_git=False)
        expected_steps, step = [], -1
        for row, given_step in calls:
            exp.log(row, step=given_step)
            step = step + 1 if given_step is None else given_step
            expected_steps.append(step)
        table = _closed_table(exp)
        assert table.column("step").to_pylist() == expected_steps
        data = table.to_pydict()
        for i, (row, _) in enumerate(calls):
            flat = {f"{k}/{kk}": vv for k, v in row.items() if isinstance(v, dict) for kk, vv in v.items()}
            flat.update({k: v for k, v in row.items() if not isinstance(v, dict)})
            for name, value in flat.items():
                assert data[name][i] == _plain(value), (i, name, data[name][i], value)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# -- found in review ---------------------------------------------------------------------


def test_a_nested_mapping_that_is_not_a_dict_never_teaches_a_wrong_shape(tmp_path: Path) -> None:
    """A MappingProxy is flattened like a dict; rows after it keep the column rule and lose nothing."""
    from types import MappingProxyType

    exp = _open(tmp_path)
    exp.log({"a": MappingProxyType({"x": 1.0})})
    exp.log({"a": 2.0})
    with pytest.raises(TypeError, match="'a'"):
        exp.log({"a": "text"})  # 'a' holds floats
    exp.log({"a": 3.0})
    exp.log({"m": MappingProxyType({"x": 1, "y": 2.0}), "e": 0.5})
    exp.log({"m": 5, "e": 0.5})
    rows = _closed_table(exp).to_pylist()
    assert [r["a/x"] for r in rows] == [1.0, None, None, None, None]
    assert [r["a"] for r in rows] == [None, 2.0, 3.0, None, None]
    assert [(r["m/x"], r["m/y"], r["m"], r["e"]) for r in rows[3:]] == [(1, 2.0, None, 0.5), (None, None, 5, 0.5)]


def test_an_int_beyond_2_53_in_a_float_column_is_stored_as_float(tmp_path: Path) -> None:
    """ints widen to floats even when too large to convert exactly: save() returns and the float is stored."""
    exp = _open(tmp_path)
    exp.log({"a": 1.5, "note": "x"})
    exp.log({"a": 2**60, "note": "y"})
    exp.save()
    assert _closed_table(exp).column("a").to_pylist() == [1.5, float(2**60)]


def test_an_automatic_step_beyond_64_bits_raises_naming_step(tmp_path: Path) -> None:
    """After step=2**63-1, an automatic step would overflow: ValueError naming step, on both paths."""
    exp = _open(tmp_path)
    exp.log({"loss": 1.0})
    exp.log({"loss": 1.0}, step=2**63 - 1)
    with pytest.raises(ValueError, match="step"):
        exp.log({"loss": 2.0})  # a known layout: the fast path
    with pytest.raises(ValueError, match="step"):
        exp.log({"other": "x"})  # the general path
    exp.log({"loss": 3.0}, step=10)
    exp.log({"loss": 4.0})
    table = _closed_table(exp)
    assert table.column("step").to_pylist() == [0, 2**63 - 1, 10, 11]
    assert table.column("loss").to_pylist() == [1.0, 1.0, 3.0, 4.0]


class BrokenDeviceTensor(DeviceTensor):
    """A device tensor whose read fails on the writer (a device error)."""

    def clone(self) -> BrokenDeviceTensor:
        return BrokenDeviceTensor(self.value)

    def item(self) -> float:
        raise RuntimeError("device-side assert triggered")


def test_a_device_tensor_that_cannot_be_read_costs_only_its_value(tmp_path: Path) -> None:
    """The failed value is stored as null, the error reaches save(), and the rest of the batch is kept."""
    exp = _open(tmp_path)
    exp.log({"loss": DeviceTensor(1.0), "i": 0})
    exp.log({"loss": BrokenDeviceTensor(2.0), "i": 1})
    exp.log({"loss": DeviceTensor(3.0), "i": 2})
    with pytest.raises(test_tube.WriterError, match="device-side assert"):
        exp.save()
    exp.log({"loss": 4.0, "i": 3})
    table = _closed_table(exp)
    assert table.column("i").to_pylist() == [0, 1, 2, 3]
    assert table.column("loss").to_pylist() == [1.0, None, 3.0, 4.0]


def test_close_racing_new_layouts_never_reopens_the_fast_path(tmp_path: Path) -> None:
    """While a thread logs new layouts, close(): every row log() accepted is on disk, and later rows raise."""
    import threading

    for trial in range(12):
        exp = Experiment(save_dir=tmp_path, name=f"race{trial}", record_git=False)
        started = threading.Event()
        accepted = []

        def worker(exp: Experiment = exp, started: threading.Event = started, accepted: list[int] = accepted) -> None:
            for i in range(100_000):
                try:
                    exp.log({f"k{i % 200}": 1.0})  # new layouts: each one is taught to the fast path
                except test_tube.ExperimentClosedError:
                    return
                accepted.append(i)
                if i == 50:
                    started.set()

        thread = threading.Thread(target=worker)
        thread.start()
        assert started.wait(30)
        exp.close()
        thread.join(30)
        assert not thread.is_alive()
        with pytest.raises(test_tube.ExperimentClosedError):
            exp.log({"k0": 1.0})
        assert test_tube.read(exp.log_dir).num_rows == len(accepted)


# -- the generated log() -----------------------------------------------------------


PINNED_ONE_FLOAT = '''\
def log(metrics=None, step=None, *, global_step=None, metrics_dict=None):
    if global_step is not None or metrics_dict is not None:
        if step is not None or metrics_dict is not None:
            return slow(metrics, step, global_step, metrics_dict)
        step = global_step
    if type(metrics) is dict:
        n = len(metrics)
        if n == 1:
            try:
                v0 = metrics['x']
            except KeyError:
                pass
            else:
                if type(v0) is T0:
                    if step is None:
                        try:
                            for s in counter: break
                            if s >= room[0]: wait_room(s)
                            pack_0(slots, (s & mask) << 7, s, s + offset[0], time_ns(), 1, v0, s)
                        except struct_error:
                            skip(s)
                            offset[0] -= 1
                        except BaseException:
                            skip(s)
                            raise
                        else:
                            return
                    elif type(step) is int:
                        try:
                            for s in counter: break
                            if s >= room[0]: wait_room(s)
                            pack_0(slots, (s & mask) << 7, s, step, time_ns(), 1, v0, s)
                        except struct_error:
                            skip(s)
                            offset[0] -= 1
                        except BaseException:
                            skip(s)
                            raise
                        else:
                            offset[0] = step - s
                            return
    slow(metrics, step, None, metrics_dict)
'''


def test_the_generated_log_is_pinned_and_shows_in_tracebacks(tmp_path: Path) -> None:
    """The source compiled for {"x": float} is exactly the pinned text, and a traceback through it shows its line."""
    import traceback

    exp = _open(tmp_path)
    exp.log({"x": 1.0})
    assert exp._fast.source == PINNED_ONE_FLOAT
    with pytest.raises(TypeError) as info:
        exp.log({"x": "text"})  # the fast path hands it to the slow path, which refuses it
    frames = [f for f in traceback.extract_tb(info.value.__traceback__) if f.filename.startswith("<test_tube log()")]
    assert frames and frames[0].line == "slow(metrics, step, None, metrics_dict)", traceback.format_tb(info.value.__traceback__)
    exp.close()
    assert test_tube.read(exp.log_dir).column("x").to_pylist() == [1.0]
