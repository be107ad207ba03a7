"""Normalising logged values: which types a row may hold and what column each becomes.

Rows of plain floats, ints and bools under a key set seen before take the fast
path (``_fastpath``) and never come here.  Everything in this module runs on
the slow path, which handles every other row and teaches the fast path new key
sets, so it is written for clarity rather than speed.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from .._errors import LogTypeError, LogValueError

#: Column names test_tube fills in itself; a logged key may not use them.
RESERVED = ("step", "created_at")

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

# Arrow types of the column kinds.  ``null`` is a column that has only seen None.
FLOAT = pa.float64()
INT = pa.int64()
BOOL = pa.bool_()
STR = pa.large_string()
NULL = pa.null()

#: The one table of accepted scalar types: each exact type, the Python type its
#: value is stored as, and its column type.  numpy scalars are immutable, so the
#: slow path may hold them as they are; numpy's integer types up to 32 unsigned
#: bits always fit in 64 signed bits.  ``None`` is taken by the slow path only.
SCALAR_TYPES: dict[type, tuple[type, pa.DataType]] = {
    float: (float, FLOAT),
    int: (int, INT),
    bool: (bool, BOOL),
    np.float64: (float, FLOAT),
    np.float32: (float, FLOAT),
    np.float16: (float, FLOAT),
    np.int64: (int, INT),
    np.int32: (int, INT),
    np.int16: (int, INT),
    np.int8: (int, INT),
    np.uint32: (int, INT),
    np.uint16: (int, INT),
    np.uint8: (int, INT),
    np.bool_: (bool, BOOL),
}

#: Exact types the fast path packs, with the Python type each is packed as.
SCALARS: dict[type, type] = {t: value for t, (value, _) in SCALAR_TYPES.items()}

#: Exact types that pyarrow converts correctly without help, with their column type.
DIRECT_TYPES: dict[type, pa.DataType] = {t: column for t, (_, column) in SCALAR_TYPES.items()}
DIRECT_TYPES[type(None)] = NULL

_IMAGE_WORD = re.compile(r"jpeg|jpg|png", re.IGNORECASE)


def image_extension(key: str) -> str | None:
    """The image format a key asks for (``png``, ``jpg`` or ``jpeg``), or None.

    When a key names several, the last one in the key decides.
    """
    found = _IMAGE_WORD.findall(key)
    return found[-1].lower() if found else None


@dataclass(frozen=True)
class Shape:
    """What the writer needs to know about a queued row.

    ``names`` are the row's columns in order.  ``items`` are the positions of
    values that are read with ``.item()`` on the writer thread (tensors), so the
    training loop never waits for a device.
    """

    names: tuple[str, ...]
    items: tuple[int, ...] = ()


# A row queued by the slow path (the fast path packs rows: see _fastpath) is a
# dict of its normalised values with its step, time and sequence number stored
# under int keys, which can never clash with a logged (str) key.  A dict holding
# only numbers and strings is not tracked by the cyclic garbage collector.  Rows
# with tensors carry the code of their Shape under SHAPE; codes are per process.
STEP, TIME, SHAPE, SEQ = 0, 1, 2, 3
SHAPES: list[Shape] = []
_CODES: dict[tuple[tuple[Any, ...], ...], int] = {}
_codes_lock = threading.Lock()


def shape_code(names: tuple[str, ...], items: tuple[int, ...] = ()) -> int:
    """The code of the Shape with these fields, registering it on first use."""
    key = (names, items)
    code = _CODES.get(key)
    if code is None:
        with _codes_lock:
            code = _CODES.get(key)
            if code is None:
                SHAPES.append(Shape(names, items))
                code = _CODES[key] = len(SHAPES) - 1
    return code


@dataclass(frozen=True)
class Image:
    """An image snapshot waiting to be encoded: its pixels and target format."""

    pixels: np.ndarray
    ext: str


def widen(old: pa.DataType, new: pa.DataType, key: str) -> pa.DataType:
    """The column type after a value of type ``new`` arrives in a column of ``old``.

    A column's type is fixed by its first non-null value; ints may widen to
    floats and floats accept ints; every other change raises ``LogTypeError``.
    """
    if old == new or new == NULL:
        return old
    if old == NULL:
        return new
    if {old, new} == {INT, FLOAT}:
        return FLOAT
    raise LogTypeError(
        f"log(): column {key!r} holds {_kind(old)} values, got a {_kind(new)}; "
        f"a column keeps the type of its first value (ints may widen to floats)",
        key=key,
        value_type=_kind(new),
    )


def _kind(t: pa.DataType) -> str:
    return {FLOAT: "float", INT: "int", BOOL: "bool", STR: "str", NULL: "None"}.get(t, str(t))


def check_key(key: object) -> str:
    """Return ``key`` if it can name a column, else raise naming the problem."""
    if type(key) is not str:
        raise LogTypeError(
            f"log(): keys must be str, got {type(key).__name__} {key!r}", key=key, value_type=type(key)
        )
    if not key:
        raise LogValueError("log(): keys must not be empty (got '')", key=key)
    if not key.isascii():
        check_text("log()", key, key, what="key")
    if key in RESERVED:
        raise LogValueError(
            f"log(): {key!r} is filled in by test_tube; pass the step as log(row, step=...) "
            f"and leave {key!r} out of the row",
            key=key,
        )
    return key


def check_text(where: str, key: Any, text: str, *, what: str = "value") -> None:
    """Raise ``LogValueError`` naming ``key`` if ``text`` cannot be written as UTF-8.

    A lone surrogate (``"\\udc80"``, what ``os.fsdecode`` makes of undecodable
    bytes) is a valid ``str`` that no file can hold; refused at the call, it
    cannot fail the writer later and take the rows of its batch with it.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise LogValueError(
            f"{where}: the {what} of {key!r} holds a lone surrogate {text[exc.start]!r} at index {exc.start}, "
            f"which UTF-8 cannot store; decode the text with errors='replace' or pass the key and value as valid text",
            key=key,
        ) from None


def flatten(row: Mapping[Any, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings into ``outer/inner`` keys, keeping insertion order."""
    flat: dict[str, Any] = {}
    for key, value in row.items():
        name = prefix + check_key(key) if not prefix else prefix + _nested_key(key, prefix)
        if isinstance(value, Mapping):
            for inner, v in flatten(value, name + "/").items():
                _put(flat, inner, v)
        else:
            _put(flat, name, value)
    return flat


def _nested_key(key: object, prefix: str) -> str:
    if type(key) is not str or not key:
        raise LogTypeError(
            f"log(): nested keys must be non-empty str, got {key!r} under {prefix[:-1]!r}",
            key=prefix + str(key),
            value_type=type(key),
        )
    if not key.isascii():
        check_text("log()", prefix + key, key, what="key")
    return key


def _put(flat: dict[str, Any], name: str, value: Any) -> None:
    if name in flat:
        raise LogValueError(f"log(): key {name!r} appears twice after flattening nested dicts", key=name)
    flat[name] = value


def normalise(key: str, value: Any) -> tuple[Any, pa.DataType, bool]:
    """Snapshot one value: return (value to queue, column type, read with .item() later).

    Raises ``LogTypeError`` / ``LogValueError`` naming ``key`` for anything that
    cannot be stored.  Image keys are handled by :func:`normalise_image` first.
    """
    t = type(value)
    column = DIRECT_TYPES.get(t)
    if column is not None:
        if t is int and not INT64_MIN <= value <= INT64_MAX:
            raise LogValueError(
                f"log(): {key!r} = {value} does not fit in a 64-bit integer; log it as float({value}) or str",
                key=key,
            )
        return value, column, False
    if t is str:
        if not value.isascii():
            check_text("log()", key, value)
        return value, STR, False
    if isinstance(value, np.ndarray) or isinstance(value, np.generic):
        return _numpy(key, value)
    item = getattr(value, "item", None)
    dtype = getattr(value, "dtype", None)
    if callable(item) and dtype is not None:
        return _tensor(key, value, str(dtype))
    raise LogTypeError(
        f"log(): {key!r} has type {t.__module__}.{t.__qualname__}; expected a bool, int, float, str, "
        f"None, numpy scalar, 0-d array or tensor, or a dict of those",
        key=key,
        value_type=t,
    )


def _tensor(key: str, value: Any, dtype: str) -> tuple[Any, pa.DataType, bool]:
    """Snapshot a 0-d tensor without waiting for a device.

    On the CPU, ``.item()`` is the snapshot (about 0.15 µs for a torch tensor).
    On a device it would wait for every queued kernel, so a copy is queued
    instead (``detach().clone()``, which the device runs in order, after the
    kernels that compute the value, and before any later in-place change) and
    read with ``.item()`` on the writer thread.  Without the copy, a tensor
    changed in place after ``log()`` (a running-loss accumulator, ``zero_()``)
    would be written with its later value.  Tensors without ``clone`` (JAX
    arrays) are immutable and are queued as they are.
    """
    t = type(value)
    ndim = getattr(value, "ndim", None)
    if ndim not in (0, None):
        raise LogTypeError(
            f"log(): {key!r} is a tensor with {ndim} dimensions; only 0-d tensors are scalars "
            f"(use an image key containing png/jpg/jpeg for images)",
            key=key,
            value_type=t,
        )
    column = _dtype_column(key, dtype, t)
    if getattr(value, "is_cpu", False) is True:
        return normalise(key, value.item())[0], column, False
    if callable(getattr(value, "clone", None)):
        detach = getattr(value, "detach", None)
        return (detach() if callable(detach) else value).clone(), column, True
    return value, column, True


def _numpy(key: str, value: Any) -> tuple[Any, pa.DataType, bool]:
    if isinstance(value, np.ndarray) and value.ndim != 0:
        raise LogTypeError(
            f"log(): {key!r} is an array of shape {value.shape}; only 0-d arrays are scalars "
            f"(use an image key containing png/jpg/jpeg for images)",
            key=key,
            value_type=type(value),
        )
    column = _dtype_column(key, value.dtype.name, type(value))
    # A 0-d array is mutable and exotic scalars (uint64, longdouble) need range
    # checks: both become plain Python scalars now.
    item = value.item()
    if isinstance(item, np.generic):
        # longdouble's item() returns a longdouble again; it becomes a float64 column.
        item = float(item)
    return normalise(key, item)[0], column, False


def _dtype_column(key: str, dtype: str, t: type) -> pa.DataType:
    name = dtype.rsplit(".", 1)[-1]
    if name.startswith("bool"):
        return BOOL
    if name.startswith(("int", "uint", "long", "short")):
        return INT
    if name.startswith(("float", "double", "half", "bfloat", "longdouble")):
        return FLOAT
    raise LogTypeError(
        f"log(): {key!r} has dtype {dtype}; expected a bool, integer or floating dtype",
        key=key,
        value_type=t,
    )


def normalise_image(key: str, ext: str, value: Any) -> Image:
    """Copy an image array and check it can be encoded as ``ext``.

    Accepted: 2-D (grey) or 3-D with 1, 3 or 4 channels last; uint8, bool,
    uint16 (greyscale PNG only), or floats in [0, 1] (scaled to uint8).
    """
    try:
        pixels = np.asarray(value)
    except Exception as exc:  # an object whose __array__ fails is bad input at this call
        raise LogTypeError(f"log(): image {key!r} could not be read as an array: {exc}", key=key) from exc
    if pixels.dtype == object or pixels.dtype.kind not in "biuf":
        raise LogTypeError(
            f"log(): image {key!r} has dtype {pixels.dtype}; expected uint8, bool, uint16 (png) or float in [0, 1]",
            key=key,
            value_type=type(value),
        )
    if pixels.size == 0:
        raise LogValueError(f"log(): image {key!r} is empty (shape {pixels.shape})", key=key)
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    if not (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[-1] in (3, 4))):
        raise LogValueError(
            f"log(): image {key!r} has shape {pixels.shape}; expected (H, W) or (H, W, C) with C in 1, 3, 4",
            key=key,
        )
    kind = pixels.dtype.kind
    if kind == "b":
        pixels = pixels.astype(np.uint8) * 255
    elif kind == "f":
        if not np.isfinite(pixels).all():
            raise LogValueError(f"log(): image {key!r} contains NaN or infinity", key=key)
        lo, hi = float(pixels.min()), float(pixels.max())
        if lo < 0.0 or hi > 1.0:
            raise LogValueError(
                f"log(): float image {key!r} has values in [{lo}, {hi}]; expected [0, 1] (scaled to 0-255)",
                key=key,
            )
        pixels = np.round(pixels * 255.0).astype(np.uint8)
    elif pixels.dtype == np.uint16:
        if ext != "png" or pixels.ndim != 2:
            raise LogTypeError(
                f"log(): image {key!r} is uint16 with shape {pixels.shape}; 16-bit images must be "
                f"greyscale (H, W) under a png key",
                key=key,
                value_type=type(value),
            )
    elif pixels.dtype != np.uint8:
        raise LogTypeError(
            f"log(): image {key!r} has dtype {pixels.dtype}; expected uint8, bool, uint16 (png) or float in [0, 1]",
            key=key,
            value_type=type(value),
        )
    if ext != "png" and pixels.ndim == 3 and pixels.shape[-1] == 4:
        raise LogValueError(f"log(): image {key!r} has an alpha channel; jpeg cannot store it, use png", key=key)
    if kind in "bf":
        return Image(np.ascontiguousarray(pixels), ext)  # already a new array
    return Image(_snapshot(pixels), ext)


def _snapshot(pixels: np.ndarray) -> np.ndarray:
    """A C-ordered copy, made without letting go of the GIL when ``pixels`` is contiguous.

    numpy releases the GIL while it copies a large array; getting it back
    from a busy encoder thread can take the interpreter's switch interval
    (5 ms), which the training loop would wait.  ``tobytes`` of a C-contiguous
    array (the usual image buffer) is one ``memcpy`` with the GIL held, about
    10 µs for 256x256 RGB; a strided or transposed view is gathered by numpy
    first, which releases the GIL as before.
    """
    return np.frombuffer(pixels.tobytes(), pixels.dtype).reshape(pixels.shape)


def media_stem(key: str, ext_word: str) -> str:
    """The file stem for an image key: the key without its format word and joining ``_``.

    ``fake_png`` gives ``fake``; ``test_jpg`` gives ``test``; ``png`` gives ``image``.
    Characters that cannot appear in a file name are replaced by ``_``; a stem
    longer than ``MAX_STEM_BYTES`` is cut and ends in a hash of the whole key, so
    two long keys that share a beginning still get their own files.
    """
    idx = key.lower().rfind(ext_word)
    stem = key[:idx] + key[idx + len(ext_word) :]
    stem = re.sub(r"__+", "_", stem).strip("_")
    stem = re.sub(r"[^\w.-]+", "_", stem).strip("._")
    if len(stem.encode()) > MAX_STEM_BYTES:
        # A file name is at most 255 bytes; the key itself stays whole in the row's column.
        digest = hashlib.sha1(key.encode()).hexdigest()[:10]
        stem = stem.encode()[: MAX_STEM_BYTES - 11].decode(errors="ignore") + "-" + digest
    return stem or "image"


#: The longest file stem an image key gives, in bytes: with ``_<step>_<n>.jpeg``
#: and the temp name's ``.`` and ``.<pid>.tmp`` it stays under 255 bytes.
MAX_STEM_BYTES = 160
