"""TensorBoard's event-file format, encoded with numpy: records, CRC32C and the few messages we write.

An event file is a sequence of records, each::

    uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)

where ``data`` is a serialised ``tensorboard.Event`` protobuf.  A reader stops at
the first record that is cut short, so appending whole records keeps the file
readable up to its last whole record after a crash.

Nothing here imports tensorboard or protobuf.  The messages we need (scalars,
images, text, histograms, hyperparameters) are a handful of fields, written
with the helpers below; the field numbers are those of TensorBoard's
``event.proto``, ``summary.proto``, ``tensor.proto`` and the hparams plugin's
``plugin_data.proto``, and the tests read every kind back with TensorBoard's
own reader.

Scalars are the bulk of a run, so :func:`scalar_records` encodes a whole batch
of rows at once: rows with the same set of present values and the same step
width share one byte layout, and CRC32C, being affine over GF(2), is the CRC of
that layout with zeros in the varying bytes XOR one table look-up per varying
byte.  No Python code runs per row.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np

# -- CRC32C (Castagnoli), reflected polynomial 0x82F63B78 -----------------------

_POLY = 0x82F63B78


def _make_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(_POLY), table >> 1).astype(np.uint32)
    return table


_TABLE = _make_table()
_TABLE_LIST = [int(v) for v in _TABLE]

#: _SHIFTED[d][b]: the register contribution of byte b followed by d zero bytes.
_shifted = np.empty((0, 256), np.uint32)


def _shift_tables(rows: int) -> np.ndarray:
    """Tables for distances 0..rows-1 from a message's end, grown on demand."""
    global _shifted
    if len(_shifted) < rows:
        grown = np.empty((max(rows, 2 * len(_shifted), 256), 256), np.uint32)
        grown[0] = _TABLE
        for d in range(1, len(grown)):
            prev = grown[d - 1]
            grown[d] = _TABLE[prev & 0xFF] ^ (prev >> 8)
        _shifted = grown
    return _shifted


def crc32c(data: bytes | memoryview) -> int:
    """CRC32C of ``data`` (check value: ``crc32c(b"123456789") == 0xE3069283``)."""
    view = memoryview(data).cast("B")
    if len(view) < 1024:
        crc = 0xFFFFFFFF
        table = _TABLE_LIST
        for byte in view:
            crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
        return crc ^ 0xFFFFFFFF
    return _crc32c_lanes(np.frombuffer(view, np.uint8))


def _crc32c_lanes(data: np.ndarray) -> int:
    """CRC32C of a long message: its lanes in parallel, then joined pairwise.

    The raw register (start 0, no final XOR) is linear in the message, so zeros
    put in front change nothing, and ``raw(A + B) = shift(raw(A), len(B)) ^ raw(B)``.
    """
    n = len(data)
    lanes = 1 << max(0, min(12, (n // 64).bit_length() - 1))
    width = -(-n // lanes)
    padded = np.zeros(lanes * width, np.uint8)
    padded[lanes * width - n:] = data
    block = padded.reshape(lanes, width)
    reg = np.zeros(lanes, np.uint32)
    for i in range(width):
        reg = _TABLE[(reg ^ block[:, i]) & 0xFF] ^ (reg >> 8)
    span = width
    while len(reg) > 1:
        reg = _shift_by(reg[0::2], span) ^ reg[1::2]
        span *= 2
    raw = int(reg[0])
    # The standard CRC starts from 0xFFFFFFFF and ends with an XOR of it.
    return raw ^ int(_shift_by(np.array([0xFFFFFFFF], np.uint32), n)[0]) ^ 0xFFFFFFFF


def _shift_by(reg: np.ndarray, zeros: int) -> np.ndarray:
    """Registers after ``zeros`` zero bytes: a linear map, applied byte by byte of the register."""
    out = np.zeros_like(reg)
    for k in range(4):
        out ^= _zero_operator(zeros, k)[(reg >> np.uint32(8 * k)) & 0xFF]
    return out


_operators: dict[tuple[int, int], np.ndarray] = {}


def _zero_operator(zeros: int, k: int) -> np.ndarray:
    """Table: register byte k (value b) after ``zeros`` zero bytes; built by squaring."""
    key = (zeros, k)
    table = _operators.get(key)
    if table is None:
        columns = _power_columns(zeros)
        values = np.arange(256, dtype=np.uint32)
        table = np.zeros(256, np.uint32)
        for bit in range(8):
            table ^= np.where((values >> bit) & 1, np.uint32(columns[8 * k + bit]), np.uint32(0)).astype(np.uint32)
        _operators[key] = table
    return table


def _power_columns(zeros: int) -> list[int]:
    """The images of the 32 register bits after ``zeros`` zero bytes."""
    def one_byte(reg: int) -> int:
        return _TABLE_LIST[reg & 0xFF] ^ (reg >> 8)

    def apply(cols: list[int], reg: int) -> int:
        out = 0
        bit = 0
        while reg:
            if reg & 1:
                out ^= cols[bit]
            reg >>= 1
            bit += 1
        return out

    result = [1 << b for b in range(32)]  # identity
    power = [one_byte(1 << b) for b in range(32)]  # one zero byte
    while zeros:
        if zeros & 1:
            result = [apply(power, c) for c in result]
        power = [apply(power, c) for c in power]
        zeros >>= 1
    return result


def masked(crc: int) -> int:
    """The CRC as TFRecord stores it (rotated and offset, so a CRC of CRCs is not trivially zero)."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def record(data: bytes) -> bytes:
    """One framed record around ``data``."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked(crc32c(length))) + data + struct.pack("<I", masked(crc32c(data)))


# -- protobuf wire format ---------------------------------------------------------


def varint(value: int) -> bytes:
    """Base-128 varint; a negative int64 takes ten bytes, as protobuf writes it."""
    value &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field_bytes(number: int, payload: bytes) -> bytes:
    """A length-delimited field (string, bytes, embedded message, packed repeated)."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def field_varint(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def field_double(number: int, value: float) -> bytes:
    return varint(number << 3 | 1) + struct.pack("<d", value)


def field_float(number: int, value: float) -> bytes:
    return varint(number << 3 | 5) + struct.pack("<f", value)


def event(wall_time: float, step: int, summary_values: Sequence[bytes]) -> bytes:
    """A serialised Event holding one Summary of the given (serialised) Summary.Values."""
    summary = b"".join(field_bytes(1, v) for v in summary_values)
    return field_double(1, wall_time) + field_varint(2, step) + field_bytes(5, summary)


def file_version_event(wall_time: float) -> bytes:
    """The first event of a file; version 2 tells readers to purge only on a restart, not on a step going back."""
    return field_double(1, wall_time) + field_bytes(3, b"brain.Event:2")


def _metadata(plugin: str, content: bytes = b"", data_class: int = 0) -> bytes:
    plugin_data = field_bytes(1, plugin.encode()) + (field_bytes(2, content) if content else b"")
    return field_bytes(1, plugin_data) + (field_varint(4, data_class) if data_class else b"")


def image_value(tag: str, encoded: bytes, height: int, width: int, channels: int) -> bytes:
    image = field_varint(1, height) + field_varint(2, width) + field_varint(3, channels) + field_bytes(4, encoded)
    return field_bytes(1, tag.encode()) + field_bytes(4, image)


def text_value(tag: str, text: str) -> bytes:
    """A text-plugin value: a scalar string tensor."""
    tensor = field_varint(1, 7) + field_bytes(2, b"") + field_bytes(8, text.encode())  # DT_STRING, shape []
    return field_bytes(1, tag.encode()) + field_bytes(9, _metadata("text", b"", 2)) + field_bytes(8, tensor)


def histogram_value(tag: str, low: float, high: float, count: float, total: float, squares: float,
                    limits: Sequence[float], counts: Sequence[float]) -> bytes:
    """A HistogramProto (bucket i holds values up to ``limits[i]``)."""
    histo = (field_double(1, low) + field_double(2, high) + field_double(3, count) + field_double(4, total)
             + field_double(5, squares)
             + field_bytes(6, np.asarray(limits, "<f8").tobytes()) + field_bytes(7, np.asarray(counts, "<f8").tobytes()))
    return field_bytes(1, tag.encode()) + field_bytes(5, histo)


def hparams_value(hparams: dict[str, float | str | bool], start_time: float, group: str) -> bytes:
    """The hparams plugin's session_start_info: this run's hyperparameters.

    Without an ``_hparams_/experiment`` summary the plugin builds the table from
    every run's session_start_info, with the run's scalar tags as metrics.
    """
    entries = b""
    for key, value in hparams.items():
        if isinstance(value, bool):
            proto_value = field_varint(4, int(value))
        elif isinstance(value, (int, float)):
            proto_value = field_double(2, float(value))
        else:
            proto_value = field_bytes(3, str(value).encode())
        entries += field_bytes(1, field_bytes(1, key.encode()) + field_bytes(2, proto_value))
    start_info = entries + field_bytes(4, group.encode()) + field_double(5, start_time)
    plugin_data = field_varint(1, 0) + field_bytes(3, start_info)  # version 0, session_start_info
    null_tensor = field_varint(1, 1) + field_bytes(2, field_bytes(2, field_varint(1, 0)))  # float, shape (0,)
    return (field_bytes(1, b"_hparams_/session_start_info") + field_bytes(9, _metadata("hparams", plugin_data))
            + field_bytes(8, null_tensor))


# -- scalars in bulk --------------------------------------------------------------


_VARINT_LIMITS = np.array([1 << (7 * k) for k in range(1, 10)], np.uint64)


def _varint_lengths(values: np.ndarray) -> np.ndarray:
    """Bytes each int64 takes as a varint (1..10; a negative one takes 10)."""
    return np.searchsorted(_VARINT_LIMITS, values.astype(np.uint64), side="right") + 1


def _varint_bytes(values: np.ndarray, width: int) -> np.ndarray:
    """(width, n) uint8: byte k of each value's varint in row k (all values take ``width`` bytes)."""
    u = values.astype(np.uint64)
    out = np.empty((width, len(u)), np.uint8)
    for k in range(width):
        chunk = (u >> np.uint64(7 * k)) & np.uint64(0x7F)
        if k < width - 1:
            chunk |= np.uint64(0x80)
        out[k] = chunk
    return out


def _masked_array(crc: np.ndarray) -> np.ndarray:
    return ((((crc >> np.uint32(15)) | (crc << np.uint32(17))) + np.uint32(0xA282EAD8)) & np.uint32(0xFFFFFFFF)).astype(
        np.uint32)


def scalar_records(
    tags: Sequence[str], steps: np.ndarray, wall: np.ndarray, values: np.ndarray, present: np.ndarray
) -> list[np.ndarray]:
    """Framed records, one Event per row, holding a simple_value for each present column.

    ``steps`` int64 (n,), ``wall`` float64 seconds (n,), ``values`` float32 (n, k),
    ``present`` bool (n, k); a row with nothing present gets no record.  The
    records of each column come out in row order.  Returns uint8 arrays to be
    written one after another (``os.writev``), so the bytes are never copied again.
    """
    n = len(steps)
    if n == 0 or not len(tags):
        return []
    keep = present.any(axis=1)
    if not keep.all():
        steps, wall, values, present = steps[keep], wall[keep], values[keep], present[keep]
        n = len(steps)
        if n == 0:
            return []
    step_len = _varint_lengths(steps)
    groups = _layout_groups(present, step_len)
    encoded_tags = [field_bytes(1, t.encode()) for t in tags]
    pieces: list[np.ndarray] = []
    for rows in groups:
        first = int(rows[0])
        columns = np.flatnonzero(present[first])
        if len(groups) == 1:  # the usual case: no copies
            chosen = values if len(columns) == values.shape[1] else values[:, columns]
            pieces.append(_scalar_block(encoded_tags, columns, steps, wall, chosen, int(step_len[0])))
        else:
            pieces.append(_scalar_block(encoded_tags, columns, steps[rows], wall[rows], values[rows][:, columns],
                                        int(step_len[first])))
    if len(groups) == 1 or _order_kept(groups, present):
        return [block.reshape(-1) for block in pieces]
    # Rows of several layouts interleave under one tag: put every record back at its row's place.
    lengths = np.empty(n, np.int64)
    for rows, block in zip(groups, pieces):
        lengths[rows] = block.shape[1]
    ends = np.cumsum(lengths)
    out = np.empty(int(ends[-1]), np.uint8)
    starts = ends - lengths
    for rows, block in zip(groups, pieces):
        index = starts[rows][:, None] + np.arange(block.shape[1])
        out[index.ravel()] = block.ravel()
    return [out]


def _layout_groups(present: np.ndarray, step_len: np.ndarray) -> list[np.ndarray]:
    """The rows of each layout (which values are present, how wide the step is), in order of first row."""
    n, k = present.shape
    if present.all():
        key = step_len
    elif k <= 56:
        key = (present.astype(np.int64) << np.arange(k, dtype=np.int64)).sum(axis=1) * 16 + step_len
    else:
        _, key = np.unique(np.concatenate([np.packbits(present, axis=1), step_len.astype(np.uint8)[:, None]], axis=1),
                           axis=0, return_inverse=True)
        key = key.reshape(-1)
    if (key == key[0]).all():
        return [np.arange(n)]
    changes = np.flatnonzero(key[1:] != key[:-1]) + 1
    if len(changes) < 64:
        # A few runs (the step grew a byte, a column appeared): each run is a group.
        bounds = [0, *changes.tolist(), n]
        runs = [np.arange(a, b) for a, b in zip(bounds, bounds[1:])]
        merged: dict[int, list[np.ndarray]] = {}
        for run in runs:
            merged.setdefault(int(key[run[0]]), []).append(run)
        return [np.concatenate(parts) for parts in merged.values()]
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    groups = np.split(order, np.flatnonzero(np.diff(inverse[order])) + 1)
    return [groups[i] for i in np.argsort(first)]


def _order_kept(groups: list[np.ndarray], present: np.ndarray) -> bool:
    """True if writing the groups one after another keeps each column's records in row order.

    That holds when, for every column, the groups holding it do not interleave
    (train rows and validation rows with other keys; a step that grew a byte).
    """
    spans = [(int(rows[0]), int(rows[-1]), present[int(rows[0])]) for rows in groups]
    for column in range(present.shape[1]):
        holding = sorted((lo, hi) for lo, hi, cols in spans if cols[column])
        if any(prev_hi > lo for (_, prev_hi), (lo, _) in zip(holding, holding[1:])):
            return False
    return True


def _scalar_block(
    encoded_tags: list[bytes], columns: np.ndarray, steps: np.ndarray, wall: np.ndarray, values: np.ndarray,
    step_width: int,
) -> np.ndarray:
    """(rows, record length) uint8: the framed records of rows sharing one layout."""
    rows = len(steps)
    # The layout, with zeros where each row's own bytes go.
    value_parts = [field_bytes(1, encoded_tags[c] + b"\x15\x00\x00\x00\x00") for c in columns]
    summary = b"".join(value_parts)
    data = b"\x09" + b"\x00" * 8 + b"\x10" + b"\x00" * step_width + field_bytes(5, summary)
    length = len(data)
    header = struct.pack("<Q", length)
    header += struct.pack("<I", masked(crc32c(header)))
    value_offsets = []
    pos = len(data) - len(summary)
    for part in value_parts:
        pos += len(part)
        value_offsets.append(pos - 4)
    wall_bytes = wall.astype("<f8").view(np.uint8).reshape(rows, 8)
    value_bytes = np.ascontiguousarray(values, "<f4").view(np.uint8).reshape(rows, -1)
    step_bytes = _varint_bytes(steps, step_width)
    block = np.empty((rows, 12 + length + 4), np.uint8)
    block[:, :12] = np.frombuffer(header, np.uint8)
    body = block[:, 12:12 + length]
    body[:] = np.frombuffer(data, np.uint8)
    body[:, 1:9] = wall_bytes
    body[:, 10:10 + step_width] = step_bytes.T
    for j, off in enumerate(value_offsets):
        body[:, off:off + 4] = value_bytes[:, 4 * j:4 * j + 4]
    # The CRC: the layout's, XOR each varying byte's contribution at its distance
    # from the end.  The bytes are read from contiguous rows (a transposed copy):
    # a look-up over a strided column costs three times as much.
    tables = _shift_tables(length)
    crc = np.full(rows, crc32c(data), np.uint32)
    scratch = np.empty(rows, np.uint32)
    by_position = [(1 + i, row) for i, row in enumerate(np.ascontiguousarray(wall_bytes.T))]
    by_position += [(10 + i, row) for i, row in enumerate(step_bytes)]
    value_rows = np.ascontiguousarray(value_bytes.T)
    by_position += [(off + i, value_rows[4 * j + i]) for j, off in enumerate(value_offsets) for i in range(4)]
    for p, byte_row in by_position:
        np.take(tables[length - 1 - p], byte_row, out=scratch)
        crc ^= scratch
    block[:, 12 + length:] = _masked_array(crc).astype("<u4").view(np.uint8).reshape(rows, 4)
    return block
