"""Runs on object storage for the read-side tests, laid out as a writer on object storage leaves them.

A run is written on the local disk with ``Experiment`` and copied into a bucket
with ``pyarrow.fs``: every file as one object, except that ``_journal.arrows``
becomes ``_journal/<offset>.arrows`` segments cut at frame boundaries (found
with ``_journal``), as the S3 writer publishes one per flush; ``.lock`` and
``_ring.tt`` stay behind (they are local to the writing host).
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.fs as pafs

from test_tube._store import _journal, _layout

LOCAL_ONLY = {_layout.LOCK, "_ring.tt", _layout.JOURNAL}


def segments(journal: Path, frames_per_segment: int = 1) -> list[tuple[int, bytes]]:
    """``(offset, bytes)`` of each segment of a local journal: ``frames_per_segment`` whole frames each."""
    data = journal.read_bytes()
    ends = _journal.boundaries(journal)
    assert not ends or ends[-1] == len(data), "the journal has a torn tail"
    out = []
    start = 0
    for i in range(0, len(ends), frames_per_segment):
        end = ends[min(i + frames_per_segment, len(ends)) - 1]
        out.append((start, data[start:end]))
        start = end
    return out


def upload_run(log_dir: Path, fs: pafs.FileSystem, dest: str, *, frames_per_segment: int = 1,
               skip_segments: tuple[int, ...] = ()) -> list[str]:
    """Copy one run folder to ``dest`` (``bucket/prefix/name/version_N``); return the segment names written.

    The segments go first, the other files after them and ``meta.experiment``
    last, as a writer's last flush comes before the complete ``metrics.parquet``
    of ``close()``, and its final metadata after both.
    ``skip_segments``: indexes of segments left out (a gap, as a lost upload leaves).
    """
    names = []
    for i, (offset, data) in enumerate(segments(log_dir / _layout.JOURNAL, frames_per_segment)):
        if i in skip_segments:
            continue
        name = f"{_layout.JOURNAL_SEGMENTS}/{_layout.segment_name(offset)}"
        with fs.open_output_stream(f"{dest}/{name}") as out:
            out.write(data)
        names.append(name)
    paths = [Path(root) / file for root, _, files in os.walk(log_dir) for file in files
             if file not in LOCAL_ONLY and not file.startswith(".")]
    for path in sorted(paths, key=lambda p: p == log_dir / _layout.META):
        rel = path.relative_to(log_dir).as_posix()
        with fs.open_output_stream(f"{dest}/{rel}") as out:
            out.write(path.read_bytes())
    return names


def upload_save_dir(save_dir: Path, fs: pafs.FileSystem, dest: str, *, frames_per_segment: int = 1) -> None:
    """Copy every ``<name>/version_<N>[/rank_<r>]`` run under ``save_dir`` to ``dest``."""
    for meta in sorted(save_dir.rglob(_layout.META)):
        log_dir = meta.parent
        upload_run(log_dir, fs, f"{dest}/{log_dir.relative_to(save_dir).as_posix()}",
                   frames_per_segment=frames_per_segment)
