"""The fast path of ``log()``: rows of a known key set, packed into bytes.

Training loops log the same few key sets millions of times, with a Python
float, int or bool under each key.  For each such key set (a *shape*) this
module keeps a queue and compiles one function, :attr:`FastPath.put`, that
checks a row against every shape seen so far and packs a matching row with
``struct`` into one ``bytes`` object:

    sequence number | time of the call (ns) | value | value | ...

The check is an exact-type test per value, written out as straight-line
code so that it costs a few nanoseconds a value instead of a loop.  Packing
is the snapshot (values are captured at the call), the range check of ints
(``struct`` rejects what does not fit in 64 bits) and most of the
conversion: the writer joins a shape's queue into one buffer and reads it
as a numpy record array, one C call per column, where a row of Python
objects would cost it a conversion per value with the GIL held.  ``bytes``
objects are not tracked by the cyclic garbage collector, so a long queue
costs it nothing.

Anything the compiled function does not recognise (a new key set, another
type, a full queue, a closed experiment) makes it return ``False``;
``Experiment._log_slow`` then validates the row, raises if it must, queues
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

from ._rows import BOOL, FLOAT, INT

#: Value types the fast path takes, with their struct code, numpy type and column type.
KINDS: dict[type, tuple[str, str, pa.DataType]] = {
    float: ("d", "<f8", FLOAT),
    int: ("q", "<i8", INT),
    bool: ("?", "?", BOOL),
}

#: Beyond this many shapes, rows of new shapes take the slow path (still correct, just slower).
MAX_SHAPES = 64

_HEADER = [("seq", "<i8"), ("time", "<i8")]


class Shape:
    """One key set with one exact type per key, and the queue of its packed rows."""

    __slots__ = ("names", "types", "packer", "dtype", "columns", "queue")

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


def _refuse(row: Any) -> bool:
    return False


class FastPath:
    """The shapes of one Experiment and the function compiled from them."""

    def __init__(self, next_seq: Callable[[], int], max_rows: int) -> None:
        self.shapes: list[Shape] = []
        self.put: Callable[[Any], bool] = _refuse
        # The compiled function reads this flag on every call, so a reference to
        # it held by the caller (``log = exp.log``) stops working the moment the
        # Experiment closes, fails or is forked.
        self._open = [True]
        self._next_seq = next_seq
        self._max_rows = max_rows

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
        self.shapes = [*self.shapes, Shape(names, types)]
        self.put = _compile(self.shapes, self._open, self._next_seq, self._max_rows)

    def queued(self) -> int:
        return sum(len(s.queue) for s in self.shapes)

    def drain(self) -> Iterator[tuple[Shape, bytes]]:
        for shape in self.shapes:
            if shape.queue:
                yield shape, shape.take()

    def clear(self) -> None:
        for shape in self.shapes:
            shape.queue.clear()


def _compile(shapes: list[Shape], is_open: list[bool], next_seq: Callable[[], int], max_rows: int) -> Any:
    """Compile ``put(row) -> bool`` for ``shapes``; see the module docstring.

    The generated code for one shape with keys ``loss`` and ``lr``::

        if n == 2:
            try:
                v0 = row['loss']; v1 = row['lr']
            except KeyError:
                pass
            else:
                if type(v0) is float and type(v1) is float and len(queue_0) < max_rows:
                    try:
                        append_0(pack_0(next_seq(), time_ns(), v0, v1))
                        return True
                    except StructError:  # an int beyond 64 bits: the slow path says so
                        return False

    Several shapes of one length are told apart by ``row.keys() == keys_i``
    (a C-level set comparison) instead of by a KeyError.
    """
    env: dict[str, Any] = {
        "__builtins__": {}, "dict": dict, "type": type, "len": len, "KeyError": KeyError,
        "StructError": struct.error, "is_open": is_open, "next_seq": next_seq, "time_ns": time.time_ns,
        "max_rows": max_rows,
    }
    by_length: dict[int, list[int]] = {}
    for i, shape in enumerate(shapes):
        by_length.setdefault(len(shape.names), []).append(i)
        env[f"queue_{i}"] = shape.queue
        env[f"append_{i}"] = shape.queue.append
        env[f"pack_{i}"] = shape.packer.pack
        env[f"keys_{i}"] = frozenset(shape.names)
        for t in shape.types:
            env[t.__name__] = t
    lines = [
        "def put(row):",
        "    if type(row) is not dict or not is_open[0]:",
        "        return False",
        "    n = len(row)",
    ]
    for length, members in by_length.items():
        lines.append(f"    if n == {length}:")
        for i in members:
            shape = shapes[i]
            values = [f"v{j}" for j in range(len(shape.names))]
            loads = "; ".join(f"{v} = row[{name!r}]" for v, name in zip(values, shape.names))
            checks = " and ".join(f"type({v}) is {t.__name__}" for v, t in zip(values, shape.types))
            store = [
                f"if {checks} and len(queue_{i}) < max_rows:",
                "    try:",
                f"        append_{i}(pack_{i}(next_seq(), time_ns(), {', '.join(values)}))",
                "        return True",
                "    except StructError:",
                "        return False",
            ]
            if len(members) == 1:
                # Same length, other keys: a KeyError, once; the slow path then adds that shape.
                lines += ["        try:", f"            {loads}", "        except KeyError:", "            pass",
                          "        else:", *(" " * 12 + line for line in store)]
            else:
                # Several key sets of this length (or one with several type mixes): compare the set first.
                lines += [f"        if row.keys() == keys_{i}:", f"            {loads}",
                          *(" " * 12 + line for line in store)]
    lines.append("    return False")
    exec(compile("\n".join(lines), "<test_tube fast path>", "exec"), env)
    return env["put"]
