"""``tf/events.out.tfevents.*``: the run as TensorBoard reads it, written by the writer thread.

A sink like the CSV and Parquet ones (``write`` / ``flush`` / ``close``, see
``_sinks``), so ``log()`` never encodes or writes anything for it.  What each
column becomes:

* float, int and bool columns: scalars (``simple_value``, a float32) at the
  row's step and wall time, one Event per row holding every value the row has;
* image columns (cells ``media/<file>`` under a key naming png/jpg/jpeg): image
  summaries of the encoded file; a column named ``<tag>.png`` (what
  ``add_image`` logs) shows as ``<tag>``;
* histogram cells (the JSON ``add_histogram`` logs) become histograms;
* every other string: text;
* the tags: the HParams plugin's hyperparameters of the run, rewritten when they change.

Records are appended whole with one ``write`` per batch, so a crash leaves the
file readable up to its last whole record.  A session of the run (a resume
after a crash, ``close`` then reopen) starts a new event file in the same
folder; TensorBoard reads them all as one run.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .._store import _layout
from . import _tfevents
from ._rows import image_extension

TF_DIR = "tf"

#: Rows encoded at once: bounds the memory of one encoding pass.
_CHUNK = 65_536

#: The text a histogram cell starts with (see ``_summary_writer.histogram_cell``).
HISTOGRAM_PREFIX = '{"histogram": '


def tensorboard_tag(column: str) -> str:
    """The TensorBoard tag of a column: an image column ``<tag>.png`` (or .jpg/.jpeg) shows as ``<tag>``."""
    stem, dot, ext = column.rpartition(".")
    if dot and stem and ext.lower() in ("png", "jpg", "jpeg"):
        return stem
    return column


class TensorBoardSink:
    """Appends the rows handed to it to an event file in ``tf_dir``.

    ``media_dir`` holds the image files that image cells name; an image is
    encoded into the event file at the next flush, when the writer has made
    sure every image logged so far is a complete file.  ``tags`` returns the
    run's tags (called on the writer thread, at flushes).
    """

    def __init__(self, tf_dir: str, media_dir: str, *, tags: Callable[[], Mapping[str, Any]], group: str) -> None:
        self.tf_dir = tf_dir
        self._media_dir = media_dir
        self._tags = tags
        self._group = group
        self.path: str | None = None  # created with the first record
        self._images: list[tuple[str, int, float, str]] = []  # (tag, step, wall, relpath) until the next flush
        self._hparams_written: dict[str, bool | int | float | str] | None = None
        self._start = time.time()

    # -- the Sink protocol --------------------------------------------------------

    def write(self, table: pa.Table) -> None:
        for offset in range(0, table.num_rows, _CHUNK):
            self._write_chunk(table.slice(offset, _CHUNK))

    def flush(self, wait: bool) -> None:
        parts = []
        if self._images:
            parts += [self._image_record(*image) for image in self._images]
        hparams = self._hparams_record()
        if hparams:
            parts.append(hparams)
        if parts:
            self._append(parts)
            self._images.clear()

    def close(self) -> None:
        self.flush(True)

    # -- encoding ------------------------------------------------------------------

    def _write_chunk(self, table: pa.Table) -> None:
        n = table.num_rows
        if n == 0:
            return
        steps = table.column("step").to_numpy().astype(np.int64, copy=False)
        micros = pc.cast(table.column("created_at").combine_chunks().cast(pa.timestamp("us")), pa.int64())
        if micros.null_count:  # rows carried over from a 0.7.5 CSV whose created_at did not parse
            micros = pc.fill_null(micros, 0)
        wall = micros.to_numpy(zero_copy_only=False).astype(np.float64) / 1e6
        numeric = [name for name in table.column_names if name not in ("step", "created_at")
                   and _is_numeric(table.schema.field(name).type)]
        extra: list[bytes] = []
        for name in table.column_names:
            t = table.schema.field(name).type
            if name not in ("step", "created_at") and (pa.types.is_string(t) or pa.types.is_large_string(t)):
                extra += self._string_column(name, table.column(name), steps, wall)
        records: list[Any] = []
        if numeric:
            values = np.empty((n, len(numeric)), np.float32)
            present = np.ones((n, len(numeric)), bool)
            with np.errstate(over="ignore", invalid="ignore"):
                for j, name in enumerate(numeric):
                    array = table.column(name).combine_chunks()
                    if array.null_count:
                        present[:, j] = array.is_valid().to_numpy(zero_copy_only=False)
                        array = pc.fill_null(array, pa.scalar(False if pa.types.is_boolean(array.type) else 0, array.type))
                    values[:, j] = array.to_numpy(zero_copy_only=False)
            records = _tfevents.scalar_records(numeric, steps, wall, values, present)
        if records or extra:
            self._append([*records, *extra])

    def _string_column(self, name: str, column: pa.ChunkedArray, steps: np.ndarray, wall: np.ndarray) -> list[bytes]:
        """Records for a text column, and image cells kept for the next flush."""
        out: list[bytes] = []
        array = column.combine_chunks()
        if array.null_count == len(array):
            return out
        is_image = image_extension(name) is not None
        tag = tensorboard_tag(name) if is_image else name
        for i in np.flatnonzero(array.is_valid().to_numpy(zero_copy_only=False)):
            text = array[int(i)].as_py()
            step, when = int(steps[i]), float(wall[i])
            if is_image and text.startswith("media/"):
                self._images.append((tag, step, when, text))
            elif text.startswith(HISTOGRAM_PREFIX):
                value = _histogram_value(name, text)
                out.append(_tfevents.record(_tfevents.event(when, step, [value])))
            else:
                out.append(_tfevents.record(_tfevents.event(when, step, [_tfevents.text_value(name, text)])))
        return out

    def _image_record(self, tag: str, step: int, wall: float, relpath: str) -> bytes:
        path = os.path.join(self._media_dir, os.path.basename(relpath))
        try:
            with open(path, "rb") as f:
                encoded = f.read()
        except FileNotFoundError:
            # The encoder failed on this image (its error reaches the user through the writer); nothing to show.
            return b""
        height, width, channels = image_size(encoded)
        value = _tfevents.image_value(tag, encoded, height, width, channels)
        return _tfevents.record(_tfevents.event(wall, step, [value]))

    def _hparams_record(self) -> bytes:
        values = {k: _hparam(v) for k, v in self._tags().items()}
        if not values or values == self._hparams_written:
            return b""
        self._hparams_written = values
        value = _tfevents.hparams_value(values, self._start, self._group)
        return _tfevents.record(_tfevents.event(time.time(), 0, [value]))

    def _append(self, parts: list[Any]) -> None:
        """Append whole records (bytes or uint8 arrays) with writev; a failed write is cut off again."""
        if self.path is None:
            os.makedirs(self.tf_dir, exist_ok=True)
            now_ns = time.time_ns()
            now = now_ns / 1e9
            # Readers pick files by the "tfevents" in the name and read a run's files in
            # name order: seconds, then nanoseconds, keep a resumed session's file after the first.
            seconds, nanos = divmod(now_ns, 10**9)
            self.path = os.path.join(self.tf_dir, f"events.out.tfevents.{seconds}.{nanos:09d}.{socket.gethostname()}"
                                                  f".{os.getpid()}")
            parts = [_tfevents.record(_tfevents.file_version_event(now)), *parts]
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            _layout.append_whole(fd, parts)  # a torn record is cut off again: later ones stay reachable
        finally:
            os.close(fd)



def _hparam(value: Any) -> bool | int | float | str:
    """A tag as the HParams plugin takes it: a number, a bool or text (anything else as its text)."""
    if getattr(value, "ndim", None) == 0 and callable(getattr(value, "item", None)):
        value = value.item()  # a numpy scalar or a 0-d tensor
    return value if isinstance(value, (bool, int, float, str)) else str(value)


def _is_numeric(t: pa.DataType) -> bool:
    return bool(pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_boolean(t))


def _histogram_value(name: str, text: str) -> bytes:
    h = json.loads(text)["histogram"]
    return _tfevents.histogram_value(name, h["min"], h["max"], h["num"], h["sum"], h["sum_squares"],
                                     h["bucket_limit"], h["bucket"])


def image_size(encoded: bytes) -> tuple[int, int, int]:
    """(height, width, channels) read from a PNG or JPEG header."""
    if encoded[:8] == b"\x89PNG\r\n\x1a\n":
        width, height = struct.unpack(">II", encoded[16:24])
        color_type = encoded[25]
        return height, width, {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}.get(color_type, 3)
    pos = 2
    while pos + 9 < len(encoded):
        if encoded[pos] != 0xFF:
            pos += 1
            continue
        marker = encoded[pos + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        size = struct.unpack(">H", encoded[pos + 2:pos + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", encoded[pos + 5:pos + 9])
            return height, width, encoded[pos + 9]
        pos += 2 + size
    raise ValueError("not a PNG or JPEG image")
