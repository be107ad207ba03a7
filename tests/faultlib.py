"""Helpers for the fault suite: victim scripts in real processes, the rows they log, the invariant checks.

Every victim is a small script written to ``tmp_path`` and run with ``sys.executable``; it
logs the deterministic rows of :func:`row`, so the parent can check any read-back against
what was logged without talking to the victim.  The three invariants of the suite:

* *Prefix*: ``test_tube.read()`` returns exactly rows ``0 .. n-1`` (values and types);
* *Bound*: ``n`` is at least the rows covered by the last completed ``save()``;
* *Termination*: every subprocess call has a timeout; a victim that outlives it is a hang.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import re
import selectors
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pyarrow as pa

import test_tube

PY = sys.executable


def count(default: int, full: int) -> int:
    """``full`` under ``--full``/``TT_FULL=1``, else ``default``."""
    return full if os.environ.get("TT_FULL") == "1" else default


# The rows every victim logs: shared as source so the victim and the checks agree.
ROW_SOURCE = '''
def row(i, images=False):
    """Row i: every column kind, a sparse column, a new column every 500 rows, an image every 50."""
    r = {"i": i, "x": i * 0.25, "s": ('a,"b"%d' % i) if i % 7 == 0 else "s%d" % i, "flag": i % 3 == 0}
    if i % 2:
        r["odd"] = -i
    r["c%d" % min(i // 500, 20)] = float(i)
    if images and i % 50 == 25:
        import numpy as np
        r["png_img"] = np.full((8, 8, 3), i % 251, np.uint8)
    return r
'''
exec(ROW_SOURCE)  # defines row() here too

PRELUDE = (
    "import os, sys, time, json, signal, threading, random\n"
    "import numpy as np\n"
    "import test_tube\n"
    "from test_tube import Experiment\n"
    + ROW_SOURCE
    + "\ndef say(*a):\n    print(*a, flush=True)\n\n"
)


def expected(i: int, images: bool = False) -> dict[str, Any]:
    """Row ``i`` as ``test_tube.read()`` must return it (images become their media path)."""
    r = row(i, images)  # type: ignore[name-defined]  # noqa: F821
    if "png_img" in r:
        r["png_img"] = f"media/img_{i}.png"
    return r


def script(tmp_path: Path, body: str, name: str = "victim.py") -> Path:
    """Write a victim script (the prelude plus ``body``) and return its path."""
    path = tmp_path / name
    path.write_text(PRELUDE + textwrap.dedent(body))
    return path


def run(path: Path, *args: Any, timeout: float = 60, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a victim to its end; a victim still running after ``timeout`` seconds fails the test."""
    try:
        return subprocess.run(
            [PY, str(path), *map(str, args)], capture_output=True, text=True, timeout=timeout,
            env=_env(env), cwd=path.parent,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{path.name} hung: still running after {timeout} s\n{_text(exc.stdout)}\n{_text(exc.stderr)}") from None


def _text(b: Any) -> str:
    return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("TT_FULL", None)
    if extra:
        env.update(extra)
    return env


def released_together(script: Path, n: int, *, env: dict[str, str] | None = None, timeout: float = 120) -> list[str]:
    """Start ``n`` copies of ``script`` and let them go at the same instant; the last line each printed.

    Each copy prints ``ready``, then reads its stdin to the end: closing every
    stdin at once releases them together (the closest a test gets to a race).
    Every copy must exit 0 within ``timeout`` seconds.
    """
    procs = [subprocess.Popen([PY, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env=_env(env)) for _ in range(n)]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    for p in procs:
        assert p.stdin is not None
        p.stdin.close()
    for p in procs:
        assert p.wait(timeout=timeout) == 0
    return [p.stdout.read().strip().splitlines()[-1] for p in procs if p.stdout is not None]


_live: list[subprocess.Popen[bytes]] = []


@atexit.register
def _kill_leftovers() -> None:
    """A test that failed half way must not leave a victim running after pytest."""
    for proc in _live:
        if proc.poll() is None:
            proc.kill()


class Victim:
    """A running victim whose stdout is read line by line, with deadlines."""

    def __init__(self, path: Path, *args: Any, env: dict[str, str] | None = None) -> None:
        self.stderr_path = path.parent / f"{path.stem}.{time.monotonic_ns()}.stderr"
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [PY, str(path), *map(str, args)], stdout=subprocess.PIPE, stderr=self._stderr,
            env=_env(env), cwd=path.parent,
        )
        _live.append(self.proc)
        self.lines: list[str] = []
        self._buf = b""
        self._sel = selectors.DefaultSelector()
        assert self.proc.stdout is not None
        os.set_blocking(self.proc.stdout.fileno(), False)
        self._sel.register(self.proc.stdout, selectors.EVENT_READ)
        self._eof = False
        self._next = 0

    def _fill(self, deadline: float) -> bool:
        """Read what is available (waiting until ``deadline``); False at end of output."""
        if self._eof:
            return False
        left = deadline - time.monotonic()
        if left <= 0 or not self._sel.select(left):
            return True
        assert self.proc.stdout is not None
        data = os.read(self.proc.stdout.fileno(), 1 << 16)
        if not data:
            self._eof = True
            return False
        self._buf += data
        *done, self._buf = self._buf.split(b"\n")
        self.lines.extend(d.decode() for d in done)
        return True

    def next_line(self, timeout: float = 30) -> str:
        """The next unread line; fails if none comes within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while self._next >= len(self.lines):
            if not self._fill(deadline) and self._next >= len(self.lines):
                raise AssertionError(f"victim ended without the expected output; rc={self.proc.poll()}\n{self.stderr()}")
            if time.monotonic() >= deadline:
                self.kill()
                raise AssertionError(f"no output from the victim for {timeout} s\n{self.lines[-5:]}\n{self.stderr()}")
        self._next += 1
        return self.lines[self._next - 1]

    def expect(self, prefix: str, timeout: float = 30) -> str:
        """Read lines until one starts with ``prefix``; return it."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.next_line(max(deadline - time.monotonic(), 0.001))
            if line.startswith(prefix):
                return line

    def read_to_end(self, timeout: float = 60) -> None:
        """Read stdout until the victim closes it (it died); fails after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while self._fill(deadline):
            if time.monotonic() >= deadline:
                self.kill()
                raise AssertionError(f"victim still writing after {timeout} s\n{self.stderr()}")

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)

    def wait(self, timeout: float = 30) -> int:
        """Wait for the exit and read the rest of stdout; a victim still running is a hang."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"victim hung: still running after {timeout} s\n{self.stderr()}") from None
        deadline = time.monotonic() + 10
        while self._fill(deadline) and time.monotonic() < deadline:
            pass
        self._sel.close()
        self._stderr.close()
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return rc

    def find(self, prefix: str) -> str:
        """The last line read so far that starts with ``prefix``."""
        found = [line for line in self.lines if line.startswith(prefix)]
        assert found, f"no line starts with {prefix!r}: {self.lines[-5:]}\n{self.stderr()}"
        return found[-1]

    def stderr(self) -> str:
        if not self._stderr.closed:
            self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")[-4000:]


def same(a: Any, b: Any) -> bool:
    """Equal values of equal types (``1`` is not ``1.0``, ``True`` is not ``1``); NaN equals NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


def check_prefix(
    log_dir: str | os.PathLike[str], *, at_least: int = 0, at_most: int | None = None, images: bool = False,
    table: pa.Table | None = None, extra: dict[str, Any] | None = None,
) -> int:
    """Prefix and Bound: ``read()`` is exactly rows 0..n-1 of :func:`row`, with ``at_least <= n``; returns n."""
    table = test_tube.read(log_dir) if table is None else table
    n = table.num_rows
    assert n >= at_least, f"Bound: {n} rows read, but a completed save() covered {at_least}"
    if at_most is not None:
        assert n <= at_most, f"{n} rows read, but only {at_most} were logged"
    names = table.column_names
    assert names[:2] == ["step", "created_at"], names
    data = table.to_pydict()
    assert data["step"] == list(range(n)), "steps are not 0..n-1 (a duplicate or a gap)"
    rows = [expected(i, images) | (extra or {}) for i in range(n)]
    logged = set().union(*rows) if rows else set()
    assert set(names[2:]) >= logged, f"columns missing: {logged - set(names[2:])}"
    for name in names[2:]:
        for i, (got, want) in enumerate(zip(data[name], (r.get(name) for r in rows))):
            if name == "png_img" and want is not None:
                # A name already on disk (an image of a row lost in a crash) gets a _<n> suffix.
                assert re.fullmatch(rf"media/img_{i}(_\d+)?\.png", got or ""), f"row {i}: image path {got!r}"
                continue
            assert same(got, want), f"Prefix: row {i} column {name!r}: read {got!r}, logged {want!r}"
    return n


def check_images(log_dir: str | os.PathLike[str], required: Any = ()) -> None:
    """Every image file a row points to shows that row's pixels; the rows in ``required`` must have theirs.

    An image may be missing only when its row was journaled and a kill came before the
    image was written (a row no completed ``save()`` covered).
    """
    import imageio.v3 as iio

    table = test_tube.read(log_dir)
    if "png_img" not in table.column_names:
        return
    required = set(required)
    for i, path in enumerate(table.column("png_img").to_pylist()):
        if path is None:
            continue
        if not (Path(log_dir) / path).exists():
            assert i not in required, f"row {i}: {path} is missing although a save() covered it"
            continue
        pixels = iio.imread(Path(log_dir) / path)
        assert pixels.shape == (8, 8, 3) and (pixels == i % 251).all(), f"row {i}: {path} shows other pixels"


def check_readers(
    log_dir: str | os.PathLike[str], n: int, *, complete: bool = False, images: bool = False,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The published files open with pandas, pyarrow, Polars and DuckDB and hold a prefix of the rows.

    With ``complete`` (after a clean close) they must hold all ``n`` rows.  Returns what was seen.
    """
    import duckdb
    import pandas as pd
    import polars as pl
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    log_dir = Path(log_dir)
    seen: dict[str, Any] = {"csv_torn": False}
    meta = log_dir / "meta.experiment"
    if meta.exists():
        json.loads(meta.read_text())  # published whole: always valid JSON
    csv_path = log_dir / "metrics.csv"
    if csv_path.exists():
        raw = csv_path.read_bytes()
        torn = bool(raw) and not raw.endswith(b"\n")
        seen["csv_torn"] = torn
        df = pd.read_csv(csv_path)
        pl.read_csv(csv_path, infer_schema_length=None)
        pacsv.read_csv(csv_path)
        duckdb.sql(f"SELECT count(*) FROM read_csv('{csv_path}')").fetchall()
        whole = len(df) - (1 if torn else 0)
        assert whole <= n, f"the CSV has {whole} complete rows, the journal {n}"
        if complete:
            assert not torn and whole == n, f"after close the CSV has {whole} rows, expected {n}"
        assert list(df["step"][:whole]) == list(range(whole))
        assert list(df["i"][:whole]) == list(range(whole))
        assert list(df["x"][:whole]) == [i * 0.25 for i in range(whole)]
        assert list(df["s"][:whole]) == [expected(i)["s"] for i in range(whole)]
        seen["csv_rows"] = whole
    pq_path = log_dir / "metrics.parquet"
    if pq_path.exists():
        t = pq.read_table(pq_path)
        pl.read_parquet(pq_path)
        pd.read_parquet(pq_path)
        duckdb.sql(f"SELECT count(*) FROM read_parquet('{pq_path}')").fetchall()
        duckdb.sql(f"SELECT count(*) FROM read_parquet('{log_dir}/*.parquet', union_by_name=true)").fetchall()
        assert t.num_rows <= n
        if complete:
            assert t.num_rows == n, f"after close the Parquet file has {t.num_rows} rows, expected {n}"
        check_prefix(log_dir, table=t, images=images, extra=extra)
        seen["parquet_rows"] = t.num_rows
    media = log_dir / "media"
    if media.is_dir():
        import imageio.v3 as iio

        for f in media.iterdir():
            if not f.name.startswith("."):
                iio.imread(f)  # a published image is never half-written
    return seen


RSS_SOURCE = """import os

def rss_kib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
"""


def rss_helper(tmp_path: Path) -> None:
    """Put ``faultlib_rss.rss_kib()`` (resident memory in KiB) where victims in ``tmp_path`` import it."""
    (tmp_path / "faultlib_rss.py").write_text(RSS_SOURCE)
