"""What the TensorBoard sink costs, and how its event records are best encoded.

Two measurements, each with its baseline in the same process run, repeated in
alternation; medians and ratios are printed.

1. ``encode``: framed event records for R rows of 5 scalars, by
   * ``numpy``: ours (``test_tube._engine._tfevents.scalar_records``: one layout per
     group of rows, CRC32C as the layout's CRC XOR a table look-up per varying byte);
   * ``numpy+crc32c``: our byte layout, but each record's CRC from the ``crc32c`` package;
   * ``tensorboard-pb``: TensorBoard's own ``Event`` protobuf per row, framed with ``crc32c``;
   * ``tensorboardX``: tensorboardX's ``summary.scalar`` + ``Event`` per value (what
     ``add_scalar`` builds), framed by its own record writer code.
   The last three need ``pip install tensorboard tensorboardX crc32c``; missing ones are skipped.

2. ``end-to-end``: N steps of ``exp.log({5 floats})`` then ``close()``, with
   ``formats=("csv", "parquet")`` and with ``"tensorboard"`` added: wall time and ratio.

    python benchmarks/bench_tensorboard.py                 # 10^6 steps, 3 runs of each
    python benchmarks/bench_tensorboard.py --steps 100000 --repeats 5
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

import test_tube  # noqa: E402
from test_tube._engine import _tfevents  # noqa: E402

TAGS = ["loss", "acc", "lr", "grad_norm", "throughput"]


def _inputs(rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    steps = np.arange(rows, dtype=np.int64)
    wall = 1.7e9 + np.arange(rows) * 1e-3
    values = rng.random((rows, len(TAGS))).astype(np.float32)
    return steps, wall, values, np.ones((rows, len(TAGS)), bool)


def encode_numpy(steps: np.ndarray, wall: np.ndarray, values: np.ndarray, present: np.ndarray) -> list[np.ndarray]:
    # The buffers the sink hands to os.writev as they are.
    return _tfevents.scalar_records(TAGS, steps, wall, values, present)


def _encoders() -> dict[str, Callable[..., Any]]:
    found: dict[str, Callable[..., Any]] = {"numpy": encode_numpy}
    try:
        import crc32c
    except ImportError:
        return found

    def mask(c: int) -> int:
        return ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF

    def frame(data: bytes) -> bytes:
        header = struct.pack("<Q", len(data))
        return header + struct.pack("<I", mask(crc32c.crc32c(header))) + data + struct.pack("<I", mask(crc32c.crc32c(data)))

    def numpy_crc32c(steps: np.ndarray, wall: np.ndarray, values: np.ndarray, present: np.ndarray) -> bytes:
        # Our layout, then a CRC per record from the C library (the records are re-cut from the buffer).
        raw = b"".join(a.tobytes() for a in _tfevents.scalar_records(TAGS, steps, wall, values, present))
        view = memoryview(raw)
        out = bytearray(raw)
        off = 0
        while off < len(raw):
            length = struct.unpack_from("<Q", raw, off)[0]
            struct.pack_into("<I", out, off + 12 + length, mask(crc32c.crc32c(view[off + 12:off + 12 + length])))
            off += 16 + length
        return bytes(out)

    found["numpy+crc32c"] = numpy_crc32c
    try:
        from tensorboard.compat.proto import event_pb2, summary_pb2

        def tensorboard_pb(steps: np.ndarray, wall: np.ndarray, values: np.ndarray, present: np.ndarray) -> bytes:
            parts = []
            for s, w, row in zip(steps.tolist(), wall.tolist(), values.tolist()):
                summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=t, simple_value=v)
                                                     for t, v in zip(TAGS, row)])
                parts.append(frame(event_pb2.Event(wall_time=w, step=s, summary=summary).SerializeToString()))
            return b"".join(parts)

        found["tensorboard-pb"] = tensorboard_pb
    except ImportError:
        pass
    try:
        from tensorboardX.proto import event_pb2 as x_event_pb2
        from tensorboardX.record_writer import RecordWriter  # noqa: F401  (proves the package is whole)
        from tensorboardX.summary import scalar

        def tensorboardx(steps: np.ndarray, wall: np.ndarray, values: np.ndarray, present: np.ndarray) -> bytes:
            parts = []
            for s, w, row in zip(steps.tolist(), wall.tolist(), values.tolist()):
                for t, v in zip(TAGS, row):
                    event = x_event_pb2.Event(wall_time=w, step=s, summary=scalar(t, v))
                    parts.append(frame(event.SerializeToString()))
            return b"".join(parts)

        found["tensorboardX"] = tensorboardx
    except ImportError:
        pass
    return found


def bench_encode(rows: int, repeats: int) -> None:
    inputs = _inputs(rows)
    encoders = _encoders()
    times: dict[str, list[float]] = {name: [] for name in encoders}
    sizes: dict[str, int] = {}
    for _ in range(repeats):
        for name, encode in encoders.items():
            gc.collect()
            start = time.perf_counter()
            data = encode(*inputs)
            times[name].append(time.perf_counter() - start)
            sizes[name] = sum(len(memoryview(p).cast("B")) for p in data) if isinstance(data, list) else len(data)
    base = statistics.median(times["numpy"])
    print(f"encode: {rows:,} rows x {len(TAGS)} scalars, median of {repeats}")
    for name, t in times.items():
        med = statistics.median(t)
        print(f"  {name:15s} {med * 1e3:9.1f} ms  {med / rows * 1e6:7.3f} us/row  x{med / base:6.1f}  "
              f"{sizes[name] / rows:6.1f} bytes/row")


def _run(steps: int, formats: tuple[str, ...], root: str) -> tuple[float, float]:
    rng = np.random.default_rng(1)
    values = rng.random((1024, 5)).tolist()
    gc.collect()
    start = time.perf_counter()
    cpu = time.process_time()
    exp = test_tube.Experiment(save_dir=root, name="bench", formats=formats, record_git=False)
    log = exp.log
    for i in range(steps):
        a, b, c, d, e = values[i & 1023]
        log({"loss": a, "acc": b, "lr": c, "grad_norm": d, "throughput": e})
    exp.close()
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu
    if "tensorboard" in formats:
        # the sink wrote every row: one record per step after the file-version record
        tf = os.path.join(exp.log_dir, "tf")
        size = sum(os.path.getsize(os.path.join(tf, f)) for f in os.listdir(tf))
        assert size > steps * 50, size
    shutil.rmtree(root, ignore_errors=True)
    return elapsed, cpu


def bench_end_to_end(steps: int, repeats: int) -> None:
    wall: dict[str, list[float]] = {"plain": [], "tb": []}
    cpu: dict[str, list[float]] = {"plain": [], "tb": []}
    for r in range(repeats):
        root = tempfile.mkdtemp(prefix="tt_bench_tb_")
        order = [("plain", ("csv", "parquet")), ("tb", ("csv", "parquet", "tensorboard"))]
        if r % 2:
            order.reverse()
        for label, formats in order:
            w, c = _run(steps, formats, os.path.join(root, label))
            wall[label].append(w)
            cpu[label].append(c)
        shutil.rmtree(root, ignore_errors=True)
    print(f"end to end: {steps:,} steps of 5 scalars, log() loop + close(), median of {repeats} (alternating order)")
    for what, data in (("wall", wall), ("CPU, all threads", cpu)):
        p, t = statistics.median(data["plain"]), statistics.median(data["tb"])
        print(f"  {what}:")
        print(f"    csv+parquet              {p:7.2f} s  ({p / steps * 1e6:.2f} us/step)  "
              f"runs {[round(x, 2) for x in data['plain']]}")
        print(f"    csv+parquet+tensorboard  {t:7.2f} s  ({t / steps * 1e6:.2f} us/step)  "
              f"runs {[round(x, 2) for x in data['tb']]}")
        print(f"    ratio                    {t / p:7.3f}  (the bound: 1.25)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--encode-rows", type=int, default=100_000)
    parser.add_argument("--skip-encode", action="store_true")
    parser.add_argument("--skip-end-to-end", action="store_true")
    args = parser.parse_args()
    if not args.skip_encode:
        bench_encode(args.encode_rows, args.repeats)
    if not args.skip_end_to_end:
        bench_end_to_end(args.steps, args.repeats)


if __name__ == "__main__":
    main()
