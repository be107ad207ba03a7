"""Damaged files: a run whose bytes were changed or cut never loses a row a file still holds, never tracebacks."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import test_tube
from faultlib import count
from test_serve import Running, get, get_json, q
from test_tube import DamagedRunError, DamagedRunWarning
from test_tube._store import _journal
from test_tube._app._cli import main

FRAMES, PER_FRAME = 10, 100


def build(save_dir: Path, name: str = "run", *, frames: int = FRAMES, per_frame: int = PER_FRAME) -> Path:
    """A closed run of ``frames`` journal frames of ``per_frame`` rows (int, float, str, bool), tags and an image."""
    import numpy as np

    with test_tube.Experiment(name=name, save_dir=save_dir, record_git=False) as exp:
        exp.tag({"lr": 0.1, "note": "a,b"})
        for k in range(frames):
            for j in range(per_frame):
                i = k * per_frame + j
                row: dict[str, Any] = {"i": i, "x": i * 0.5, "s": f"r{i}", "b": i % 3 == 0}
                if i == 3:
                    row["img_png"] = np.full((4, 4), 7, np.uint8)
                exp.log(row)
            exp.save()
    return Path(exp.log_dir)


def frames_of(journal: Path) -> list[tuple[int, int, list[int]]]:
    """(start, end, values of i) of each frame, read by walking the journal's headers (this test's own reader)."""
    import struct
    import zlib

    data = journal.read_bytes()
    out, pos = [], 0
    while pos + 16 <= len(data):
        magic, length, crc = struct.unpack_from("<4sQI", data, pos)
        payload = data[pos + 16:pos + 16 + length]
        if magic != b"TTJ1" or len(payload) < length or zlib.crc32(payload) != crc:
            break
        table = pa.ipc.open_stream(pa.py_buffer(payload)).read_all()
        out.append((pos, pos + 16 + length, table.column("i").to_pylist()))
        pos += 16 + length
    return out


def rows_of(path: Path) -> int | None:
    """Rows a published file holds as its own readers see them, or None when it cannot be read."""
    try:
        if path.suffix == ".parquet":
            return int(pq.read_metadata(path).num_rows)
        import pandas as pd

        return len(pd.read_csv(path))
    except Exception:
        return None


def reopen(log_dir: Path) -> None:
    with test_tube.Experiment(name=log_dir.parent.name, save_dir=log_dir.parent.parent, version=0,
                              record_git=False):
        pass


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def cut(path: Path, size: int) -> None:
    os.truncate(path, size)


DAMAGE: dict[str, Callable[[Path, list[tuple[int, int, list[int]]]], None]] = {
    "byte_100_flipped": lambda j, f: flip(j, 100),
    "frame_3_flipped": lambda j, f: flip(j, f[3][0] + 200),
    "cut_mid_frame_5": lambda j, f: cut(j, f[5][0] + 300),
    "cut_at_frame_boundary": lambda j, f: cut(j, f[6][0]),
    "emptied": lambda j, f: cut(j, 0),
}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("damage") / "logs")


def copy_run(template: Path, dest: Path) -> Path:
    log_dir = dest / "run" / "version_0"
    shutil.copytree(template, log_dir)
    return log_dir


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_reopening_a_damaged_journal_keeps_every_published_row(template: Path, tmp_path: Path, damage: str) -> None:
    """A byte flipped or the journal cut: the reopen warns naming the damage and recovers all 1,000 rows."""
    log_dir = copy_run(template, tmp_path)
    journal = log_dir / "_journal.arrows"
    frames = frames_of(journal)
    assert len(frames) == FRAMES
    DAMAGE[damage](journal, frames)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        table = test_tube.read(log_dir)
    if table.num_rows < FRAMES * PER_FRAME:
        # read() returns the journal up to the damage, and says the files hold more
        said = [w.message for w in seen if isinstance(w.message, DamagedRunWarning)]
        assert said and said[0].path == str(journal) and said[0].rows == FRAMES * PER_FRAME, seen
    with pytest.warns(DamagedRunWarning) as caught:
        reopen(log_dir)
    warning = next(w.message for w in caught if isinstance(w.message, DamagedRunWarning))
    assert warning.path == str(journal) and warning.rows == FRAMES * PER_FRAME
    assert "_journal.arrows" in str(warning) and f"{warning.rows} rows can be read" in str(warning)
    if damage.endswith("flipped"):
        start, end = warning.damaged[0]
        assert start <= (100 if damage == "byte_100_flipped" else frames[3][0] + 200) < end
    assert test_tube.read(log_dir).column("i").to_pylist() == list(range(FRAMES * PER_FRAME))
    assert rows_of(log_dir / "metrics.parquet") == rows_of(log_dir / "metrics.csv") == FRAMES * PER_FRAME
    assert (log_dir / "_journal.arrows.damaged-1").is_file()  # the damaged bytes are kept, not destroyed


def test_the_damage_warnings_point_at_the_users_line(template: Path, tmp_path: Path) -> None:
    """The reopen's warnings (damaged journal, missing journal) and read()'s name this file, not test_tube's."""
    damaged = copy_run(template, tmp_path / "a")
    flip(damaged / "_journal.arrows", frames_of(damaged / "_journal.arrows")[3][0] + 200)
    missing = copy_run(template, tmp_path / "b")
    (missing / "_journal.arrows").unlink()
    for log_dir, call in ((damaged, test_tube.read), (damaged, reopen), (missing, reopen)):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            call(log_dir)
        said = [w for w in seen if isinstance(w.message, DamagedRunWarning)]
        assert said, (call, log_dir)
        assert {w.filename for w in said} == {__file__}, [(w.filename, w.lineno) for w in said]


def test_whole_frames_after_the_damage_come_back_without_the_published_files(template: Path, tmp_path: Path) -> None:
    """With no published file to recover from, a flipped frame 3 costs frame 3's rows only, in order."""
    log_dir = copy_run(template, tmp_path)
    (log_dir / "metrics.parquet").unlink()
    (log_dir / "metrics.csv").unlink()
    journal = log_dir / "_journal.arrows"
    frames = frames_of(journal)
    flip(journal, frames[3][0] + 200)
    with pytest.warns(DamagedRunWarning) as caught:
        reopen(log_dir)
    warning = next(w.message for w in caught if isinstance(w.message, DamagedRunWarning))
    assert warning.damaged == ((frames[3][0], frames[3][1]),) and warning.rows == 900 and warning.recovered == 0
    expected = [i for n, (_, _, values) in enumerate(frames) if n != 3 for i in values]
    assert test_tube.read(log_dir).column("i").to_pylist() == expected
    assert rows_of(log_dir / "metrics.parquet") == rows_of(log_dir / "metrics.csv") == 900


def test_rows_beyond_the_journal_come_back_from_the_csv_with_their_types(template: Path, tmp_path: Path) -> None:
    """metrics.parquet gone, the journal cut at frame 4: the reopen takes rows 400.. from metrics.csv, typed."""
    log_dir = copy_run(template, tmp_path)
    (log_dir / "metrics.parquet").unlink()
    journal = log_dir / "_journal.arrows"
    cut(journal, frames_of(journal)[4][0])
    with pytest.warns(DamagedRunWarning, match="recovered from metrics.csv"):
        reopen(log_dir)
    table = test_tube.read(log_dir)
    before = test_tube.read(template)
    assert table.schema.equals(before.schema)
    assert table.drop_columns(["created_at"]).equals(before.drop_columns(["created_at"]))
    assert table.column("created_at").to_pylist() == before.column("created_at").to_pylist()


def test_a_healthy_reopen_warns_nothing_and_keeps_the_journal(template: Path, tmp_path: Path) -> None:
    """A run without damage reopens silently: no warning, no copy, the same rows."""
    log_dir = copy_run(template, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DamagedRunWarning)
        reopen(log_dir)
        assert test_tube.read(log_dir).num_rows == FRAMES * PER_FRAME
    assert not (log_dir / "_journal.arrows.damaged-1").exists()


# -- damaged metadata and hand-made frames: listed as damaged, the other runs as usual ---------


def _deep(path: Path) -> None:
    path.write_text("[" * 100_000 + "]" * 100_000)


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:20])


def _conflicting_frame(path: Path) -> None:
    """Append a frame with a valid checksum in which ``i`` is text (earlier frames: int64)."""
    table = pa.table({"step": pa.array([999], pa.int64()),
                      "created_at": pa.array([0], pa.timestamp("us", tz="UTC")),
                      "i": pa.array(["text"], pa.large_string())})
    with open(path, "ab") as f:
        f.write(b"".join(bytes(memoryview(p)) for p in _journal.encode(table)))


def _frame_without_step(path: Path) -> None:
    with open(path, "ab") as f:
        f.write(b"".join(bytes(memoryview(p)) for p in _journal.encode(pa.table({"i": [1]}))))


BROKEN = {
    "meta_nested_100000_deep": ("meta.experiment", _deep),
    "meta_truncated": ("meta.experiment", _truncated),
    "tags_not_utf8": ("meta_tags.csv", lambda p: p.write_bytes(b"key,value\nlr,\xff\xfe\n")),
    "frame_with_conflicting_type": ("_journal.arrows", _conflicting_frame),
    "frame_without_step": ("_journal.arrows", _frame_without_step),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_damaged_run_is_listed_as_damaged_and_the_others_as_usual(tmp_path: Path, case: str,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """runs(), `test-tube ls` and /api/runs list it as damaged; read()/reopen/show raise our error naming the file."""
    save_dir = tmp_path / "logs"
    build(save_dir, "good", frames=2, per_frame=3)
    bad = build(save_dir, "bad", frames=2, per_frame=3)
    file, damage = BROKEN[case]
    damage(bad / file)
    with pytest.warns(RuntimeWarning, match=file.replace(".", r"\.")):
        table = test_tube.runs(save_dir)
    status = dict(zip(table.column("name").to_pylist(), table.column("status").to_pylist()))
    assert status == {"bad": "damaged", "good": "finished"}
    assert table.column("rows").to_pylist()[table.column("name").to_pylist().index("good")] == 6
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["ls", str(save_dir), "--csv"]) == 0
    out = capsys.readouterr()
    assert "damaged" in out.out and "finished" in out.out and "Traceback" not in out.err
    running = Running(save_dir)
    try:
        runs = {r["name"]: r for r in get_json(running.url + "api/runs")["runs"]}
        assert runs["bad"]["status"] == "damaged" and file in runs["bad"]["damage"]
        assert runs["good"]["status"] == "finished" and runs["good"]["rows"] == 6
        status_code, _, body = get(running.url + "api/run?" + q(name="bad", version=0))
        assert status_code in (200, 500) and b"Traceback" not in body
        if status_code == 500:
            assert file.encode() in body
    finally:
        running.stop()
    if file == "_journal.arrows":
        with pytest.raises(DamagedRunError) as info:
            test_tube.read(bad)
        assert info.value.path == str(bad / file)
    with pytest.raises(DamagedRunError) as info:
        reopen(bad)
    assert info.value.path == str(bad / file) and file in str(info.value)
    capsys.readouterr()
    assert main(["show", str(bad)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and file in err[0]


# -- the property: random damage to any file of a finished run ----------------------------


FILES = ["_journal.arrows", "metrics.parquet", "metrics.csv", "meta.experiment", "meta_tags.csv", "media/img_3.png"]


@contextlib.contextmanager
def _quiet() -> Iterator[io.StringIO]:
    err = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield err


@pytest.fixture(scope="module")
def small_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("small") / "logs", frames=5, per_frame=7)


@settings(max_examples=count(30, 300), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(file=st.sampled_from(FILES), how=st.sampled_from(["cut", "flip"]), where=st.floats(0, 1),
       bit=st.integers(0, 7))
def test_random_damage_never_tracebacks_never_shrinks_and_keeps_every_whole_frame(
        small_template: Path, file: str, how: str, where: float, bit: int) -> None:
    """Cut or flip any file anywhere: read, runs, ls, reopen and serve answer; published files keep their rows."""
    folder = Path(tempfile.mkdtemp(prefix="tt-dmg-"))
    try:
        log_dir = copy_run(small_template, folder)
        path = log_dir / file
        size = path.stat().st_size
        offset = min(int(where * size), size - 1)
        journal = log_dir / "_journal.arrows"
        original_frames = frames_of(journal)
        original = journal.read_bytes()
        if how == "cut":
            cut(path, offset)
        else:
            data = bytearray(path.read_bytes())
            data[offset] ^= 1 << bit
            path.write_bytes(bytes(data))
        damaged = journal.read_bytes()
        # A frame is whole when its bytes are still where they were.
        whole = [values for start, end, values in original_frames if damaged[start:end] == original[start:end]]
        published = {name: rows_of(log_dir / name) for name in ("metrics.parquet", "metrics.csv")}
        ours = (DamagedRunError, FileNotFoundError)
        with _quiet():
            try:
                test_tube.read(log_dir)
            except ours:
                pass
            table = test_tube.runs(folder)
            assert table.num_rows == 1
            assert main(["ls", str(folder)]) == 0
        running = Running(folder)
        try:
            with _quiet():
                assert get(running.url + "api/runs")[0] == 200
                status, _, body = get(running.url + "api/run?" + q(name="run", version=0))
            assert status in (200, 500) and b"Traceback" not in body
        finally:
            running.stop()
        with _quiet():
            try:
                reopen(log_dir)
            except DamagedRunError as exc:
                assert exc.path == str(path), exc  # refused naming the damaged file, which is left as it was
                return
            after = test_tube.read(log_dir).column("i").to_pylist()
        for name, rows in published.items():
            if rows is not None and name != file:
                assert rows_of(log_dir / name) >= rows, (name, rows_of(log_dir / name), rows)
        for values in whole:
            assert set(values) <= set(after), values
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_the_meta_file_of_a_run_is_json_we_can_damage(small_template: Path) -> None:
    """The property above damages real files: meta.experiment is JSON with a status, the image exists."""
    assert json.loads((small_template / "meta.experiment").read_text())["status"] == "finished"
    assert (small_template / "media" / "img_3.png").is_file()


def test_a_dead_ring_beside_a_damaged_journal_loses_no_published_or_returned_row(tmp_path: Path) -> None:
    """kill: rows still in the ring; then a frame of the journal damaged: the reopen keeps them all, in order.

    The damaged frame's rows come back from metrics.csv (published by save()), the rows
    the dead process left in its ring come back from the ring, and none is doubled.
    """
    from faultlib import run, script

    victim = script(tmp_path, """
        import os, sys
        import test_tube
        exp = test_tube.Experiment(name="run", save_dir=sys.argv[1], record_git=False, flush_interval=60)
        for i in range(2_000):
            exp.log({"i": i, "x": i / 7})
            if i % 500 == 499:
                exp.save()
        for i in range(2_000, 60_000):
            exp.log({"i": i, "x": i / 7})
        os._exit(0)  # no close(), no final flush: whatever the writer had not taken stays in the ring
    """)
    done = run(victim, tmp_path / "logs", timeout=120)
    assert done.returncode == 0, done.stderr
    log_dir = tmp_path / "logs" / "run" / "version_0"
    journal = log_dir / "_journal.arrows"
    frames = frames_of(journal)
    assert len(frames) >= 4 and (log_dir / "_ring.tt").exists()
    in_journal = sum(len(values) for _, _, values in frames)
    assert in_journal < 60_000, "the writer had journaled every row: nothing was left in the ring"
    flip(journal, frames[1][0] + 200)  # inside the rows 500..999, which metrics.csv holds
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        reopen(log_dir)
    assert any(isinstance(w.message, DamagedRunWarning) for w in seen), [str(w.message) for w in seen]
    everything = list(range(60_000))
    assert test_tube.read(log_dir).column("i").to_pylist() == everything
    assert rows_of(log_dir / "metrics.parquet") == rows_of(log_dir / "metrics.csv") == 60_000
