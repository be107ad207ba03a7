"""The event-file encoder: batches of scalar rows, parsed back record by record with TensorBoard's protobufs."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from test_tube._engine import _tfevents

pytest.importorskip("tensorboard")
from tensorboard.compat.proto import event_pb2  # noqa: E402


def parse(buffers: list[np.ndarray]) -> list[event_pb2.Event]:
    """Every record, its two checksums verified."""
    data = b"".join(b.tobytes() for b in buffers)
    out = []
    off = 0
    while off < len(data):
        (length,) = struct.unpack_from("<Q", data, off)
        assert struct.unpack_from("<I", data, off + 8)[0] == _tfevents.masked(_tfevents.crc32c(data[off:off + 8]))
        body = data[off + 12:off + 12 + length]
        assert struct.unpack_from("<I", data, off + 12 + length)[0] == _tfevents.masked(_tfevents.crc32c(body))
        out.append(event_pb2.Event.FromString(body))
        off += 16 + length
    assert off == len(data)
    return out


@st.composite
def batches(draw: st.DrawFn) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    k = draw(st.integers(1, 5))
    n = draw(st.integers(1, 200))
    tags = draw(st.lists(st.text(min_size=1, max_size=150), min_size=k, max_size=k, unique=True))
    steps = np.array(draw(st.lists(st.integers(-2**63, 2**63 - 1) | st.integers(0, 300), min_size=n, max_size=n)),
                     np.int64)
    if draw(st.booleans()):
        steps = np.sort(steps)
    wall = np.array(draw(st.lists(st.floats(0, 4e9), min_size=n, max_size=n)))
    values = np.array(draw(st.lists(st.lists(st.floats(width=32, allow_nan=False), min_size=k, max_size=k),
                                    min_size=n, max_size=n)), np.float32).reshape(n, k)
    layouts = draw(st.lists(st.lists(st.booleans(), min_size=k, max_size=k), min_size=1, max_size=4))
    present = np.array([layouts[draw(st.integers(0, len(layouts) - 1))] for _ in range(n)], bool).reshape(n, k)
    return tags, steps, wall, values, present


@settings(max_examples=80, deadline=None)
@given(batches())
def test_each_columns_records_come_back_in_row_order(batch: tuple[list[str], np.ndarray, np.ndarray, np.ndarray,
                                                                  np.ndarray]) -> None:
    """For every column: the (step, wall time, value) of each row that has it, in row order; one event per row with any."""
    tags, steps, wall, values, present = batch
    events = parse(_tfevents.scalar_records(tags, steps, wall, values, present))
    assert len(events) == int(present.any(axis=1).sum())
    got: dict[str, list[tuple[int, float, float]]] = {t: [] for t in tags}
    for event in events:
        for value in event.summary.value:
            got[value.tag].append((event.step, event.wall_time, value.simple_value))
    for j, tag in enumerate(tags):
        rows = np.flatnonzero(present[:, j])
        assert got[tag] == [(int(steps[r]), float(wall[r]), float(values[r, j])) for r in rows]


def test_many_alternating_layouts_that_share_a_column_keep_its_order() -> None:
    """1,000 rows alternating {a} and {a, b}, steps growing past one varint byte: a's records stay in step order."""
    n = 1000
    present = np.zeros((n, 2), bool)
    present[:, 0] = True
    present[1::2, 1] = True
    steps = np.arange(n, dtype=np.int64) * 3
    events = parse(_tfevents.scalar_records(["a", "b"], steps, np.zeros(n), np.ones((n, 2), np.float32), present))
    assert [e.step for e in events if e.summary.value[0].tag == "a"] == steps.tolist()
