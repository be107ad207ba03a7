"""The fast path of ``log()``, and the step rule.

Training loops log the same few key sets millions of times, each key holding
a number: a Python float, int or bool, a numpy scalar, or a 0-d CPU tensor,
at the top of the row or in nested dicts.  For each such layout (a *shape*:
the key paths and one exact type per value) this module compiles the
Experiment's ``log`` function (:attr:`FastPath.log`), which checks a row
against every shape seen so far and packs a matching row with
``struct.pack_into`` straight into its slot of the ring (``_ring``), a
memory-mapped file: when ``log()`` returns, the row is in the kernel's page
cache and survives the death of the process.

The check is an exact-type test per value, written out as straight-line
code so that it costs a few nanoseconds a value instead of a loop.  Packing
is the snapshot (values are captured at the call: a tensor is read with
``.tolist()``, which on the CPU never waits for a device).  The writer reads
a run of slots as one numpy array, one C call per column.

The sequence number is taken with ``for s in counter: break``: unlike a call
to ``next()``, nothing between taking it and storing it can raise (the
interpreter runs signal handlers at calls and backward jumps only), so every
number taken is either packed or marked as skipped (``Ring.skip``) and the
writer never waits on a number nobody will write.

Anything the compiled function does not recognise (a new layout, another
type, a tensor on a device, a closed experiment, an odd step) it hands to
``Experiment._log_slow``, which validates the row, raises if it must, writes
it the slow way and registers its shape here so the next one is fast.

The step rule lives here once, as source (:data:`AUTO_STEP`, :data:`FOLLOW`,
:data:`GIVE_BACK`): the compiled function is emitted from those lines, and
:class:`Steps` compiles its own ``step_for`` (the slow path's) from the same
lines: every row takes the next sequence number, which orders rows across
layouts; its step is that number plus an offset, and an explicit ``step=``
moves the offset.  :func:`resolve_step` is the one check of the arguments.
"""

from __future__ import annotations

import itertools
import linecache
import struct
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from . import _ring
from .._errors import LogTypeError, LogValueError
from ._rows import BOOL, FLOAT, INT, INT64_MAX, INT64_MIN, SCALARS

#: How each kind of packed value is stored: struct code, numpy type, column type.
_PACKED: dict[type, tuple[str, str, pa.DataType]] = {
    float: ("d", "<f8", FLOAT),
    int: ("q", "<i8", INT),
    bool: ("?", "?", BOOL),
}
_CODES = {code: (typ, column) for code, typ, column in _PACKED.values()}

#: Beyond this many shapes, rows of new shapes take the slow path (still correct, just slower).
MAX_SHAPES = 64

# metrics_dict is test-tube 0.7.5's name for the row, for calls by keyword: such a
# call goes to the slow path, which takes it (or refuses it beside metrics).  The
# check shares the global_step test's branch: about 5 ns a call when neither is given.
_SIGNATURE = "def log(metrics=None, step=None, *, global_step=None, metrics_dict=None):"

#: Key paths of each value of a row, in flattening order: ``(("losses", "train"), ("lr",))``.
Paths = tuple[tuple[str, ...], ...]


#: The step rule, as the source both paths run (``s``: the row's sequence number;
#: ``offset``: the cell :class:`Steps` holds).  The step of a row logged without one:
AUTO_STEP = "s + offset[0]"
#: After a row with an explicit ``step``: the next automatic step follows it.
FOLLOW = "offset[0] = step - s"
#: A row whose automatic step was refused: the steps go on as if it never came.
GIVE_BACK = "offset[0] -= 1"

_RULE_SOURCE = f"""\
def step_for(s, step):
    if step is None:
        return {AUTO_STEP}
    {FOLLOW}
    return step
def give_back():
    {GIVE_BACK}
"""


def resolve_step(step: Any, global_step: Any) -> int | None:
    """The explicit step of a log() call (``global_step`` is the original's name for it), checked; or None."""
    if global_step is not None:
        if step is not None and step != global_step:
            raise LogValueError(f"log(): step={step!r} and global_step={global_step!r} disagree; pass one")
        step = global_step
    if step is None:
        return None
    if type(step) is bool or not isinstance(step, (int, np.integer)):
        raise LogTypeError(f"log(): step must be an int, got {type(step).__name__} {step!r}", key="step",
                           value_type=type(step))
    value = int(step)
    if not INT64_MIN <= value <= INT64_MAX:
        raise LogValueError(f"log(): step {value} does not fit in a 64-bit integer", key="step")
    return value


class Steps:
    """The one rule for a row's step, shared by both paths.

    A row's step is its sequence number plus :attr:`offset`; an explicit step
    sets the offset so that the next automatic step follows it.  Sequence
    numbers come from one ``itertools.count`` (atomic under the GIL), so
    automatic steps are unique across threads.  The compiled ``log`` runs the
    same rule, emitted by :func:`_store`, on :attr:`counter` and :attr:`offset`.
    """

    __slots__ = ("_give_back", "_step_for", "counter", "offset")

    def __init__(self) -> None:
        self.counter = itertools.count()
        self.offset = [0]  # a cell, so the compiled function sees every change
        env: dict[str, Any] = {"__builtins__": {}, "offset": self.offset}
        exec(compile(_RULE_SOURCE, "<test_tube step rule>", "exec"), env)  # noqa: S102
        self._step_for: Callable[[int, int | None], int] = env["step_for"]
        self._give_back: Callable[[], None] = env["give_back"]

    def peek(self) -> int:
        """The next sequence number, without taking it (every smaller one is taken)."""
        return int(repr(self.counter)[6:-1])

    def step_for(self, seq: int, step: int | None) -> int:
        """The step of row ``seq`` (``step``: the explicit one, if any); moves the offset.

        Raises ``LogValueError`` when the automatic step would not fit in 64
        bits (after an explicit step near the top of the range).
        """
        explicit = step is not None
        step = self._step_for(seq, step)
        if not explicit and step > INT64_MAX:
            # Give the sequence number back, so the next try names the same step (no creeping).
            self._give_back()
            raise LogValueError(
                f"log(): the automatic step would be {step} (one after the last step, {step - 1}), "
                f"beyond a 64-bit integer; pass step=", key="step")
        return step

    def continue_after(self, last_step: int) -> None:
        """Make the next automatic step ``last_step + 1`` (resuming a version)."""
        self.offset[0] = last_step + 1 - self.peek()


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
    """One layout: its column names and struct codes, how a slot holds it, and its columns.

    Built from what the ring's shape table records (``names``, ``codes``), so a
    reader in another process decodes the slots exactly as the writer does.
    """

    __slots__ = ("codes", "columns", "dtype", "gather", "kind", "names", "packer", "words")

    def __init__(self, kind: int, names: tuple[str, ...], codes: str) -> None:
        self.kind = kind
        self.names = names
        self.codes = codes
        size = struct.calcsize("<" + codes)
        if size > _ring.VALUE_BYTES:
            raise ValueError(f"{len(codes)} values ({size} bytes) do not fit in a ring slot")
        pad = _ring.VALUE_BYTES - size
        self.packer = struct.Struct(f"<qqqi4x{codes}{pad}xq")
        assert self.packer.size == _ring.SLOT
        offsets, at = [], _ring.VALUES_AT
        for code in codes:
            offsets.append(at)
            at += struct.calcsize("<" + code)
        self.dtype = np.dtype({
            "names": ["seq", "step", "time", *(f"v{i}" for i in range(len(codes)))],
            "formats": ["<i8", "<i8", "<i8", *(_CODES[c][0] for c in codes)],
            "offsets": [0, 8, 16, *offsets], "itemsize": _ring.SLOT,
        })
        self.columns = [_CODES[c][1] for c in codes]
        # Where every value is 8 bytes wide, a run of slots read as 64-bit words is a
        # matrix whose columns are the fields: one gather of its transpose gives every
        # field as a contiguous column (seq, trailer, kind first, for the check).
        self.gather: np.ndarray | None = None
        self.words = ""
        if codes and set(codes) <= {"d", "q"}:
            first = _ring.VALUES_AT // 8
            self.gather = np.array([0, _ring.TRAILER_AT // 8, 3, 1, 2, *range(first, first + len(codes))],
                                   dtype=np.intp)
            self.words = codes

    def arrays(self, records: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[pa.Array]]:
        """(sequence numbers, steps, times in ns, one Arrow array per key) of raw slots of this layout."""
        view = records.view(self.dtype)
        values = [pa.array(view[f"v{i}"], typ) for i, typ in enumerate(self.columns)]
        return view["seq"], view["step"], view["time"], values


def codes_of(kinds: tuple[Kind, ...]) -> str:
    return "".join(_PACKED[k.value][0] for k in kinds)


class FastPath:
    """The shapes of one Experiment and the ``log`` function compiled from them.

    :attr:`log` is created once and handed out as the Experiment's ``log``;
    when a shape is added, a new body is compiled and swapped into the same
    function object, so a reference the caller took before (``log =
    exp.log``, the usual hot-loop idiom) runs the new body too.  The source of
    each body is kept in :mod:`linecache`, so a traceback through ``log()``
    shows its lines.
    """

    def __init__(self, steps: Steps, ring: _ring.Ring, slow: Callable[..., None],
                 wait_room: Callable[[int], None], lock: threading.Lock) -> None:
        """``lock`` is the Experiment's: shapes are added and the body swapped under it."""
        self.lock = lock
        self.shapes: list[PackedShape] = []
        self._layouts: list[tuple[Paths, tuple[Kind, ...]]] = []
        self.ring = ring
        # The globals of every compiled body; the names of a shape's packer and
        # types are added before a body that uses them is swapped in.
        self._env: dict[str, Any] = {
            "__builtins__": {}, "dict": dict, "type": type, "len": len, "KeyError": KeyError,
            "BaseException": BaseException,
            "counter": steps.counter, "offset": steps.offset, "room": ring.room, "slots": ring.slots,
            "mask": ring.mask, "skip": ring.skip, "wait_room": wait_room,
            "time_ns": time.time_ns, "slow": slow,
            "float": float, "int": int, "bool": bool, "struct_error": struct.error,
        }
        self._type_names: dict[type, str] = {}
        self._generation = itertools.count()
        self.source = ""
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

    def shut(self) -> None:
        """Send every row to the slow path from now on (the writer failed: the slow path raises)."""
        with self.lock:
            self.open = False

    def knows(self, paths: Paths, kinds: tuple[Kind, ...]) -> bool:
        return (paths, kinds) in self._layouts

    def add(self, paths: Paths, kinds: tuple[Kind, ...]) -> None:
        """Take rows of this layout and these kinds from now on (call under the Experiment's lock)."""
        if len(self.shapes) >= MAX_SHAPES or self.knows(paths, kinds):
            return
        codes = codes_of(kinds)
        if struct.calcsize("<" + codes) > _ring.VALUE_BYTES:
            return  # too many values for one slot: the slow path keeps them
        i = len(self.shapes)
        shape = PackedShape(i + 1, tuple("/".join(path) for path in paths), codes)
        # The layout is on record before any row of it is, so a reader can decode its slots.
        if not self.ring.put_shape(_ring.shape_payload(shape.kind, shape.names, codes)):
            return
        for kind in kinds:
            self._type_names.setdefault(kind.raw, f"T{len(self._type_names)}")
        self._env.update({f"pack_{i}": shape.packer.pack_into, f"keys_{i}": frozenset(p[0] for p in paths),
                          **{name: t for t, name in self._type_names.items()}})
        self._layouts.append((paths, kinds))
        self.shapes = [*self.shapes, shape]
        self._open_body = self._compile().__code__
        if self._open:
            self.log.__code__ = self._open_body

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
                            if type(v0) is T0 and type(v1) is T1:
                                if step is None:
                                    try:
                                        for s in counter: break
                                        if s >= room[0]: wait_room(s)
                                        pack_0(slots, (s & mask) << 7, s, s + offset[0], time_ns(), 1, v0, v1, s)
                                    except struct_error:
                                        skip(s)
                                        offset[0] -= 1
                                    except BaseException:
                                        skip(s)
                                        raise
                                    else:
                                        return
                                elif type(step) is int:
                                    ... the same, with ``step`` and ``offset[0] = step - s`` after
                slow(metrics, step, None, metrics_dict)

        A nested dict is loaded key by key after a check that it is a plain
        dict of the expected size (its keys are then exactly the expected
        ones); a tensor is read with ``.tolist()`` once every type check passed,
        and the type of what it gives is checked in turn.  Several shapes of
        one length are told apart by ``metrics.keys() == keys_i`` (a C-level
        set comparison) before their loads.
        """
        by_length: dict[int, list[int]] = {}
        for i, (paths, _) in enumerate(self._layouts):
            by_length.setdefault(len({p[0] for p in paths}), []).append(i)
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
        # Our own source, built from the run's keys (embedded with repr) and types;
        # kept in linecache under a name of its own, so tracebacks show its lines.
        source = "\n".join(lines) + "\n"
        filename = f"<test_tube log() {id(self):x}.{next(self._generation)}>"
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        exec(compile(source, filename, "exec"), self._env)  # noqa: S102
        log = self._env.pop("log")
        log.__name__, log.__qualname__ = "log", "Experiment.log"
        self.source = source
        return log

    def _shape_block(self, i: int) -> list[str]:
        paths, kinds = self._layouts[i]
        shape = self.shapes[i]
        loads = _loads(paths)
        raw_checks: list[str] = []
        reads: list[str] = []
        read_checks: list[str] = []
        packed: list[str] = []
        for j, kind in enumerate(kinds):
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
        store = [*_store(i, shape.kind, ", ".join(packed), AUTO_STEP, auto=True),
                 *_store(i, shape.kind, ", ".join(packed), "step", auto=False)]
        if reads:
            store = [*reads, f"if {' and '.join(read_checks)}:", *("    " + line for line in store)]
        checked = [f"if {' and '.join(raw_checks)}:", *("    " + line for line in store)]
        return ["try:", *("    " + line for line in loads), "except KeyError:", "    pass", "else:",
                *("    " + line for line in checked)]


_SHIFT = _ring.SLOT.bit_length() - 1


def _store(i: int, kind: int, values: str, step: str, *, auto: bool) -> list[str]:
    """The step rule and the store of one row, as emitted into ``log()``.

    ``for s in counter: break`` takes the sequence number with nothing that can
    raise between taking and storing it, and the handlers mark a number whose
    row was not stored (``skip``), so the writer never waits for it.
    """
    pack = f"pack_{i}(slots, (s & mask) << {_SHIFT}, s, {step}, time_ns(), {kind}, {values}, s)"
    return [
        "if step is None:" if auto else "elif type(step) is int:",
        "    try:",  # costs nothing unless raised
        "        for s in counter: break",
        "        if s >= room[0]: wait_room(s)",  # the ring is full: wait for the writer
        f"        {pack}",  # pack_into checks that the step fits in 64 bits
        "    except struct_error:",  # refused (the slow path says why)
        "        skip(s)",
        f"        {GIVE_BACK}",  # give the number back: the steps go on as if the row never came
        "    except BaseException:",  # a signal, or wait_room saw the writer fail
        "        skip(s)",
        "        raise",
        "    else:",
        *(["        return"] if auto else [f"        {FOLLOW}", "        return"]),
    ]


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
