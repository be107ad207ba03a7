"""The fast path of ``log()``: rows of a known key set, packed into bytes.

Training loops log the same few key sets millions of times, with a Python
float, int or bool under each key.  For each such key set (a *shape*) this
module keeps a queue and compiles the Experiment's ``log`` function
(:attr:`FastPath.log`), which checks a row against every shape seen so far
and packs a matching row with ``struct`` into one ``bytes`` object:

    sequence number | time of the call (ns) | value | value | ...

The check is an exact-type test per value, written out as straight-line
code so that it costs a few nanoseconds a value instead of a loop.  Packing
is the snapshot (values are captured at the call) and most of the
conversion: the writer joins a shape's queue into one buffer and reads it
as a numpy record array, one C call per column, where a row of Python
objects would cost it a conversion per value with the GIL held.  ``bytes``
objects are not tracked by the cyclic garbage collector, so a long queue
costs it nothing.

Anything the compiled function does not recognise (a new key set, another
type, a full queue, a closed experiment, an explicit step) it hands to
``Experiment._log_slow``, which validates the row, raises if it must, queues
it the slow way and registers its shape here so the next one is fast.

The sequence number comes from the counter the slow path also draws from, so
the writer can put rows of all queues back in the order they were logged.
Steps are not stored: a row's step is its sequence number plus an offset
that only the slow path (an explicit ``step=``) changes, and the writer
applies the same rule.
"""

from __future__ import annotations

import struct
import time
from collections import deque
from collections.abc import Callable, Iterator
from itertools import repeat
from typing import Any

import numpy as np
import pyarrow as pa

from ._rows import BOOL, FLOAT, INT, INT64_MAX, INT64_MIN

#: Value types the fast path takes, with their struct code, numpy type and column type.
KINDS: dict[type, tuple[str, str, pa.DataType]] = {
    float: ("d", "<f8", FLOAT),
    int: ("q", "<i8", INT),
    bool: ("?", "?", BOOL),
}

#: Beyond this many shapes, rows of new shapes take the slow path (still correct, just slower).
MAX_SHAPES = 64

_HEADER = [("seq", "<i8"), ("time", "<i8")]


class PackedShape:
    """One key set with one exact type per key, and the queue of its packed rows."""

    __slots__ = ("columns", "dtype", "names", "packer", "queue", "types")

    def __init__(self, names: tuple[str, ...], types: tuple[type, ...]) -> None:
        self.names = names
        self.types = types
        self.packer = struct.Struct("<qq" + "".join(KINDS[t][0] for t in types))
        self.dtype = np.dtype([*_HEADER, *((f"v{i}", KINDS[t][1]) for i, t in enumerate(types))])
        assert self.dtype.itemsize == self.packer.size
        self.columns = [KINDS[t][2] for t in types]
        self.queue: deque[bytes] = deque()

    def take(self) -> bytes:
        """Pop what is queued now as one buffer (other threads may keep appending)."""
        queue = self.queue
        return b"".join(map(deque.popleft, repeat(queue, len(queue))))

    def arrays(self, data: bytes) -> tuple[np.ndarray, np.ndarray, list[pa.Array]]:
        """(sequence numbers, times in ns, one Arrow array per key) of packed rows."""
        records = np.frombuffer(data, self.dtype)
        values = [pa.array(records[f"v{i}"], typ) for i, typ in enumerate(self.columns)]
        return records["seq"], records["time"], values


class FastPath:
    """The shapes of one Experiment and the ``log`` function compiled from them.

    :attr:`log` is created once and handed out as the Experiment's ``log``;
    when a shape is added, a new body is compiled and swapped into the same
    function object, so a reference the caller took before (``log =
    exp.log``, the usual hot-loop idiom) runs the new body too.
    """

    def __init__(self, next_seq: Callable[[], int], max_rows: int, slow: Callable[..., None]) -> None:
        self.shapes: list[PackedShape] = []
        # Read on every call: the moment the Experiment closes, fails or is
        # forked, every row goes to the slow path, which raises.
        self._open = [True]
        # The globals of every compiled body; the names of a shape's queue and
        # packer are added before a body that uses them is swapped in.
        self._env: dict[str, Any] = {
            "__builtins__": {}, "dict": dict, "type": type, "len": len, "KeyError": KeyError,
            "is_open": self._open, "next_seq": next_seq, "time_ns": time.time_ns, "max_rows": max_rows,
            "slow": slow, "float": float, "int": int, "bool": bool,
        }
        self.log: Callable[..., None] = self._compile()

    @property
    def open(self) -> bool:
        return self._open[0]

    @open.setter
    def open(self, value: bool) -> None:
        self._open[0] = value

    def knows(self, names: tuple[str, ...], types: tuple[type, ...]) -> bool:
        return any(s.names == names and s.types == types for s in self.shapes)

    def add(self, names: tuple[str, ...], types: tuple[type, ...]) -> None:
        """Take rows with these keys and value types from now on (call under the Experiment's lock)."""
        if len(self.shapes) >= MAX_SHAPES or self.knows(names, types):
            return
        shape = PackedShape(names, types)
        i = len(self.shapes)
        self._env.update({f"queue_{i}": shape.queue, f"append_{i}": shape.queue.append,
                          f"pack_{i}": shape.packer.pack, f"keys_{i}": frozenset(names)})
        self.shapes = [*self.shapes, shape]
        self.log.__code__ = self._compile().__code__

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
        """Compile ``log(metrics, step=None, *, global_step=None)`` for the shapes so far.

        The body for one shape with keys ``loss`` and ``lr``::

            def log(metrics, step=None, *, global_step=None):
                if type(metrics) is dict and step is None and global_step is None and is_open[0]:
                    n = len(metrics)
                    if n == 2:
                        try:
                            v0 = metrics['loss']; v1 = metrics['lr']
                        except KeyError:
                            pass
                        else:
                            if type(v0) is float and type(v1) is float and len(queue_0) < max_rows:
                                append_0(pack_0(next_seq(), time_ns(), v0, v1))
                                return
                slow(metrics, step, global_step)

        Several shapes of one length are told apart by ``metrics.keys() ==
        keys_i`` (a C-level set comparison) instead of by a KeyError.
        """
        by_length: dict[int, list[int]] = {}
        for i, shape in enumerate(self.shapes):
            by_length.setdefault(len(shape.names), []).append(i)
        lines = [
            "def log(metrics, step=None, *, global_step=None):",
            "    if type(metrics) is dict and step is None and global_step is None and is_open[0]:",
            "        n = len(metrics)",
        ]
        for length, members in by_length.items():
            lines.append(f"        if n == {length}:")
            for i in members:
                shape = self.shapes[i]
                values = [f"v{j}" for j in range(len(shape.names))]
                loads = "; ".join(f"{v} = metrics[{name!r}]" for v, name in zip(values, shape.names))
                checks = " and ".join(_check(v, t) for v, t in zip(values, shape.types))
                store = [
                    f"if {checks} and len(queue_{i}) < max_rows:",
                    f"    append_{i}(pack_{i}(next_seq(), time_ns(), {', '.join(values)}))",
                    "    return",
                ]
                pad = " " * 16
                if len(members) == 1:
                    # Same length, other keys: one KeyError; the slow path then adds that shape.
                    lines += [f"{pad[4:]}try:", f"{pad}{loads}", f"{pad[4:]}except KeyError:", f"{pad}pass",
                              f"{pad[4:]}else:", *(pad + line for line in store)]
                else:
                    # Several key sets of this length, or one key set with several type mixes.
                    lines += [f"{pad[4:]}if metrics.keys() == keys_{i}:", f"{pad}{loads}",
                              *(pad + line for line in store)]
        lines.append("    slow(metrics, step, global_step)")
        # Our own source, built above from the run's keys (embedded with repr) and types.
        exec(compile("\n".join(lines), "<test_tube log fast path>", "exec"), self._env)  # noqa: S102
        log = self._env.pop("log")
        log.__name__, log.__qualname__ = "log", "Experiment.log"
        return log


def _check(value: str, t: type) -> str:
    # An int must fit in 64 bits before it takes a sequence number: a row that
    # the slow path then rejects must not leave a gap in the steps.
    if t is int:
        return f"type({value}) is int and {INT64_MIN} <= {value} <= {INT64_MAX}"
    return f"type({value}) is {t.__name__}"
