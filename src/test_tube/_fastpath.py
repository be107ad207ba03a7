"""The fast path of ``log()``, and the step rule.

Training loops log the same few key sets millions of times, each key holding
a number: a Python float, int or bool, a numpy scalar, or a 0-d CPU tensor,
at the top of the row or in nested dicts.  For each such layout (a *shape*:
the key paths and one exact type per value) this module keeps a queue and
compiles the Experiment's ``log`` function (:attr:`FastPath.log`), which
checks a row against every shape seen so far and packs a matching row with
``struct`` into one ``bytes`` object:

    sequence number | step | time of the call (ns) | value | value | ...

The check is an exact-type test per value, written out as straight-line
code so that it costs a few nanoseconds a value instead of a loop.  Packing
is the snapshot (values are captured at the call: a tensor is read with
``.tolist()``, which on the CPU never waits for a device) and most of the
conversion: the writer joins a shape's queue into one buffer and reads it
as a numpy record array, one C call per column, where a row of Python
objects would cost it a conversion per value with the GIL held.  ``bytes``
objects are not tracked by the cyclic garbage collector, so a long queue
costs it nothing.

Anything the compiled function does not recognise (a new layout, another
type, a tensor on a device, a full queue, a closed experiment, an odd step)
it hands to ``Experiment._log_slow``, which validates the row, raises if it
must, queues it the slow way and registers its shape here so the next one
is fast.

The step rule lives here, in :class:`Steps`, for both paths: every row takes
the next sequence number, which orders rows across queues; its step is that
number plus an offset, and an explicit ``step=`` moves the offset.  The
compiled function inlines the same three lines.
"""

from __future__ import annotations

import itertools
import struct
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import numpy as np
import pyarrow as pa

from ._errors import LogValueError
from ._rows import BOOL, FLOAT, INT, INT64_MAX, INT64_MIN

#: How each kind of packed value is stored: struct code, numpy type, column type.
_PACKED: dict[type, tuple[str, str, pa.DataType]] = {
    float: ("d", "<f8", FLOAT),
    int: ("q", "<i8", INT),
    bool: ("?", "?", BOOL),
}

#: Exact scalar types the fast path takes, with the Python type each is packed as.
#: numpy's integer types up to 32 unsigned bits always fit in 64 signed bits.
SCALARS: dict[type, type] = {
    float: float, int: int, bool: bool,
    np.float64: float, np.float32: float, np.float16: float,
    np.int64: int, np.int32: int, np.int16: int, np.int8: int,
    np.uint32: int, np.uint16: int, np.uint8: int,
    np.bool_: bool,
}

#: Beyond this many shapes, rows of new shapes take the slow path (still correct, just slower).
MAX_SHAPES = 64

# metrics_dict is test-tube 0.7.5's name for the row, for calls by keyword: such a
# call goes to the slow path, which takes it (or refuses it beside metrics).  The
# check shares the global_step test's branch: about 5 ns a call when neither is given.
_SIGNATURE = "def log(metrics=None, step=None, *, global_step=None, metrics_dict=None):"

_HEADER = [("seq", "<i8"), ("step", "<i8"), ("time", "<i8")]

#: The key path of each value of a row, in flattening order: ``(("losses", "train"), ("lr",))``.
Paths = tuple[tuple[str, ...], ...]


class Steps:
    """The one rule for a row's step, shared by both paths.

    A row's step is its sequence number plus :attr:`offset`; an explicit step
    sets the offset so that the next automatic step follows it.  Sequence
    numbers come from one ``itertools.count`` (atomic under the GIL), so
    automatic steps are unique across threads.  The compiled ``log`` reads
    :attr:`counter` and :attr:`offset` directly.
    """

    __slots__ = ("counter", "offset")

    def __init__(self) -> None:
        self.counter = itertools.count()
        self.offset = [0]  # a cell, so the compiled function sees every change

    def take(self, step: int | None) -> tuple[int, int]:
        """(sequence number, step) of the next row; ``step`` is the explicit one, if any.

        Raises ``LogValueError`` when the automatic step would not fit in 64
        bits (after an explicit step near the top of the range).
        """
        seq = next(self.counter)
        if step is None:
            step = seq + self.offset[0]
            if step > INT64_MAX:
                # Give the sequence number back, so the next try names the same step (no creeping).
                self.offset[0] -= 1
                raise LogValueError(
                    f"log(): the automatic step would be {step} (one after the last step, {step - 1}), "
                    f"beyond a 64-bit integer; pass step=", key="step")
            return seq, step
        self.offset[0] = step - seq
        return seq, step

    def continue_after(self, last_step: int) -> None:
        """Make the next automatic step ``last_step + 1`` (resuming a version)."""
        seq = next(self.counter)  # a sequence number may be skipped; only order matters
        self.offset[0] = last_step - seq


@dataclass(frozen=True)
class Kind:
    """The exact type of a logged value and the Python type it is packed as."""

    raw: type
    value: type

    @property
    def is_tensor(self) -> bool:
        return self.raw not in SCALARS


def shape_of(row: dict[str, Any], flat: dict[str, Any], snapshots: list[Any]) -> tuple[Paths, tuple[Kind, ...]] | None:
    """The fast-path shape of a row the slow path accepted, or None if the fast path cannot take it.

    ``flat`` is the row flattened (column name to logged value), ``snapshots``
    what the slow path queued for those values.
    """
    kinds: list[Kind] = []
    for raw, snapshot in zip(flat.values(), snapshots):
        kind = kind_of(raw, snapshot)
        if kind is None:  # a string, None, an image...: the usual slow-path row, given up on at once
            return None
        kinds.append(kind)
    paths = paths_of(row)
    # The shape's names must be exactly the columns the slow path just typed, in order.
    if paths is None or tuple(map("/".join, paths)) != tuple(flat):
        return None
    return paths, tuple(kinds)


def kind_of(raw: Any, snapshot: Any) -> Kind | None:
    """The fast-path kind of a value the slow path accepted as ``snapshot``, or None."""
    t = type(raw)
    packed = SCALARS.get(t)
    if packed is not None:
        return Kind(t, packed)
    if _is_cpu_tensor(raw) and type(snapshot) in _PACKED:
        return Kind(t, type(snapshot))
    return None


def _is_cpu_tensor(value: Any) -> bool:
    # Only torch's own class: a subclass (nn.Parameter) may override item().
    # torch is never imported here: a tensor's presence means it already is.
    torch = sys.modules.get("torch")
    return (torch is not None and type(value) is torch.Tensor
            and value.is_cpu and value.ndim == 0)


def paths_of(row: dict[str, Any]) -> Paths | None:
    """The key paths of a row's leaves in flattening order, or None if the fast path cannot take them.

    Only plain, non-empty dicts are walked: any other mapping, or an empty dict
    (which flattens to nothing), leaves the row to the slow path.
    """
    paths: list[tuple[str, ...]] = []
    for key, value in row.items():
        if type(value) is dict:
            inner = paths_of(value)
            if not inner:
                return None
            paths += [(key, *path) for path in inner]
        elif isinstance(value, Mapping):  # flattened by the slow path, but not a dict the fast path loads
            return None
        else:
            paths.append((key,))
    return tuple(paths)


class PackedShape:
    """One layout of keys with one kind per value, and the queue of its packed rows."""

    __slots__ = ("columns", "dtype", "kinds", "names", "packer", "paths", "queue")

    def __init__(self, paths: Paths, kinds: tuple[Kind, ...]) -> None:
        self.paths = paths
        self.kinds = kinds
        self.names = tuple("/".join(path) for path in paths)
        stored = [_PACKED[k.value] for k in kinds]
        self.packer = struct.Struct("<qqq" + "".join(code for code, _, _ in stored))
        self.dtype = np.dtype([*_HEADER, *((f"v{i}", typ) for i, (_, typ, _) in enumerate(stored))])
        assert self.dtype.itemsize == self.packer.size
        self.columns = [column for _, _, column in stored]
        self.queue: deque[bytes] = deque()

    def take(self) -> bytes:
        """Pop what is queued now as one buffer (other threads may keep appending)."""
        queue = self.queue
        return b"".join(map(deque.popleft, repeat(queue, len(queue))))

    def arrays(self, data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[pa.Array]]:
        """(sequence numbers, steps, times in ns, one Arrow array per key) of packed rows."""
        records = np.frombuffer(data, self.dtype)
        values = [pa.array(records[f"v{i}"], typ) for i, typ in enumerate(self.columns)]
        return records["seq"], records["step"], records["time"], values


class FastPath:
    """The shapes of one Experiment and the ``log`` function compiled from them.

    :attr:`log` is created once and handed out as the Experiment's ``log``;
    when a shape is added, a new body is compiled and swapped into the same
    function object, so a reference the caller took before (``log =
    exp.log``, the usual hot-loop idiom) runs the new body too.
    """

    def __init__(self, steps: Steps, max_rows: int, slow: Callable[..., None]) -> None:
        self.shapes: list[PackedShape] = []
        # The globals of every compiled body; the names of a shape's queue,
        # packer and types are added before a body that uses them is swapped in.
        self._env: dict[str, Any] = {
            "__builtins__": {}, "dict": dict, "type": type, "len": len, "next": next, "KeyError": KeyError,
            "counter": steps.counter, "offset": steps.offset,
            "time_ns": time.time_ns, "max_rows": max_rows, "slow": slow,
            "float": float, "int": int, "bool": bool, "struct_error": struct.error,
        }
        self._type_names: dict[type, str] = {}
        # While closed (the Experiment closed, failed or was forked), log()'s
        # body hands every row to the slow path, which raises: the open body
        # never checks a flag.
        self._open = True
        self._closed_body = self._build([_SIGNATURE, "    slow(metrics, step, global_step, metrics_dict)"]).__code__
        self.log: Callable[..., None] = self._compile()
        self._open_body = self.log.__code__

    @property
    def open(self) -> bool:
        return self._open

    @open.setter
    def open(self, value: bool) -> None:
        """Swap the body (call under the Experiment's lock, or in a forked child)."""
        self._open = value
        self.log.__code__ = self._open_body if value else self._closed_body

    def knows(self, paths: Paths, kinds: tuple[Kind, ...]) -> bool:
        return any(s.paths == paths and s.kinds == kinds for s in self.shapes)

    def add(self, paths: Paths, kinds: tuple[Kind, ...]) -> None:
        """Take rows of this layout and these kinds from now on (call under the Experiment's lock)."""
        if len(self.shapes) >= MAX_SHAPES or self.knows(paths, kinds):
            return
        shape = PackedShape(paths, kinds)
        i = len(self.shapes)
        for kind in kinds:
            self._type_names.setdefault(kind.raw, f"T{len(self._type_names)}")
        self._env.update({f"queue_{i}": shape.queue, f"append_{i}": shape.queue.append,
                          f"pack_{i}": shape.packer.pack, f"keys_{i}": frozenset(p[0] for p in paths),
                          **{name: t for t, name in self._type_names.items()}})
        self.shapes = [*self.shapes, shape]
        self._open_body = self._compile().__code__
        if self._open:
            self.log.__code__ = self._open_body

    def queued(self) -> int:
        return sum(len(s.queue) for s in self.shapes)

    def drain(self) -> Iterator[tuple[PackedShape, bytes]]:
        for shape in self.shapes:
            if shape.queue:
                yield shape, shape.take()

    def clear(self) -> None:
        for shape in self.shapes:
            shape.queue.clear()

    def _compile(self) -> Any:
        """Compile ``log(metrics=None, step=None, *, global_step=None, metrics_dict=None)`` for the shapes so far.

        The body for one shape, ``{"loss": float, "lr": np.float32}``::

            def log(metrics=None, step=None, *, global_step=None, metrics_dict=None):
                if global_step is not None or metrics_dict is not None:
                    if step is not None or metrics_dict is not None:
                        return slow(metrics, step, global_step, metrics_dict)
                    step = global_step
                if type(metrics) is dict:
                    n = len(metrics)
                    if n == 2:
                        try:
                            v0 = metrics['loss']; v1 = metrics['lr']
                        except KeyError:
                            pass
                        else:
                            if type(v0) is T0 and type(v1) is T1 and len(queue_0) < max_rows:
                                if step is None:
                                    s = next(counter)
                                    try:
                                        append_0(pack_0(s, s + offset[0], time_ns(), v0, v1))
                                    except struct_error:
                                        offset[0] -= 1
                                    else:
                                        return
                                if type(step) is int:
                                    s = next(counter)
                                    try:
                                        append_0(pack_0(s, step, time_ns(), v0, v1))
                                    except struct_error:
                                        offset[0] -= 1
                                    else:
                                        offset[0] = step - s
                                        return
                slow(metrics, step, None, metrics_dict)

        A nested dict is loaded key by key after a check that it is a plain
        dict of the expected size (its keys are then exactly the expected
        ones); a tensor is read with ``.tolist()`` once every type check passed,
        and the type of what it gives is checked in turn.  Several shapes of
        one length are told apart by ``metrics.keys() == keys_i`` (a C-level
        set comparison) before their loads.
        """
        by_length: dict[int, list[int]] = {}
        for i, shape in enumerate(self.shapes):
            by_length.setdefault(len({p[0] for p in shape.paths}), []).append(i)
        lines = [
            _SIGNATURE,
            "    if global_step is not None or metrics_dict is not None:",
            "        if step is not None or metrics_dict is not None:",
            "            return slow(metrics, step, global_step, metrics_dict)",  # the slow path compares or takes them
            "        step = global_step",
            "    if type(metrics) is dict:",
            "        n = len(metrics)",
        ]
        for length, members in by_length.items():
            lines.append(f"        if n == {length}:")
            for i in members:
                body = self._shape_block(i)
                if len(members) > 1:
                    lines.append(f"            if metrics.keys() == keys_{i}:")
                    body = ["    " + line for line in body]
                lines += ["            " + line for line in body]
        lines.append("    slow(metrics, step, None, metrics_dict)")
        return self._build(lines)

    def _build(self, lines: list[str]) -> Any:
        # Our own source, built from the run's keys (embedded with repr) and types.
        exec(compile("\n".join(lines), "<test_tube log fast path>", "exec"), self._env)  # noqa: S102
        log = self._env.pop("log")
        log.__name__, log.__qualname__ = "log", "Experiment.log"
        return log

    def _shape_block(self, i: int) -> list[str]:
        shape = self.shapes[i]
        loads = _loads(shape.paths)
        raw_checks: list[str] = []
        reads: list[str] = []
        read_checks: list[str] = []
        packed: list[str] = []
        for j, kind in enumerate(shape.kinds):
            t = self._type_names[kind.raw]
            if kind.is_tensor:
                # tolist() of a 0-d tensor is its value, as item() is; of any other
                # tensor it is a list, which fails the check below, and the slow
                # path rejects it naming the key: one call instead of ndim and item().
                raw_checks.append(f"type(v{j}) is {t} and v{j}.is_cpu")
                reads.append(f"x{j} = v{j}.tolist()")
                read_checks.append(_value_check(f"x{j}", kind.value))
                packed.append(f"x{j}")
            else:
                raw_checks.append(_value_check(f"v{j}", kind.value, t) if kind.raw is int
                                  else f"type(v{j}) is {t}")
                packed.append(f"v{j}")
        values = ", ".join(packed)
        store = [
            "if step is None:",
            "    s = next(counter)",
            "    try:",  # costs nothing unless raised
            f"        append_{i}(pack_{i}(s, s + offset[0], time_ns(), {values}))",
            "    except struct_error:",  # past 64 bits: give the number back; the slow path says so
            "        offset[0] -= 1",
            "    else:",
            "        return",
            "if type(step) is int:",
            "    s = next(counter)",
            "    try:",  # pack checks that the step fits in 64 bits
            f"        append_{i}(pack_{i}(s, step, time_ns(), {values}))",
            "    except struct_error:",  # refused (the slow path says why): give its sequence number back
            "        offset[0] -= 1",
            "    else:",
            "        offset[0] = step - s",
            "        return",
        ]
        if reads:
            store = [*reads, f"if {' and '.join(read_checks)}:", *("    " + line for line in store)]
        checked = [f"if {' and '.join(raw_checks)} and len(queue_{i}) < max_rows:", *("    " + line for line in store)]
        return ["try:", *("    " + line for line in loads), "except KeyError:", "    pass", "else:",
                *("    " + line for line in checked)]


def _loads(paths: Paths) -> list[str]:
    """Lines binding ``v<j>`` to the j-th leaf; a nested level that does not fit raises KeyError."""
    lines: list[str] = []
    counter = itertools.count()

    def walk(source: str, entries: list[tuple[int, tuple[str, ...]]]) -> None:
        groups: dict[str, list[tuple[int, tuple[str, ...]]]] = {}
        for j, path in entries:
            groups.setdefault(path[0], []).append((j, path[1:]))
        for key, members in groups.items():
            if len(members) == 1 and not members[0][1]:
                lines.append(f"v{members[0][0]} = {source}[{key!r}]")
                continue
            d = f"d{next(counter)}"
            size = len({rest[0] for _, rest in members})
            lines.append(f"{d} = {source}[{key!r}]")
            lines.append(f"if type({d}) is not dict or len({d}) != {size}:")
            lines.append("    raise KeyError")
            walk(d, members)

    walk("metrics", list(enumerate(paths)))
    return lines


def _value_check(name: str, value: type, t: str | None = None) -> str:
    # An int must fit in 64 bits before it takes a sequence number: a row that
    # the slow path then rejects must not leave a gap in the steps.
    exact = f"type({name}) is {t or value.__name__}"
    if value is int:
        return f"{exact} and {INT64_MIN} <= {name} <= {INT64_MAX}"
    return exact
