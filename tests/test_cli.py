"""The test-tube command, run in a subprocess on real runs: ls, show, plot, tail."""

from __future__ import annotations

import csv
import importlib
import io
import json
import os
import queue
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from test_tube._app import _plot, _table
from test_runs import build_per_rank, build_save_dir, snapshot

CLI = [sys.executable, "-m", "test_tube._app._cli"]
TIMEOUT = 120


def tt(*args: Any, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `test-tube ARGS` in a subprocess, stdout a pipe (not a terminal)."""
    proc = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=TIMEOUT)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def one_line_error(proc: subprocess.CompletedProcess[str], code: int = 2) -> str:
    """Assert the command failed with `code` and a single line on stderr; return that line."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def save_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Finished (with an image), failed, crashed, resumed and legacy runs."""
    return build_save_dir(tmp_path_factory.mktemp("cli") / "logs")


@pytest.fixture(scope="module")
def untouched(save_dir: Path) -> Any:
    """Checks, at the end of the module, that no command changed any file of the runs."""
    before = snapshot(save_dir)
    yield
    assert snapshot(save_dir) == before


# -- help ---------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["ls", "show", "plot", "tail", "serve"])
def test_every_subcommand_has_help_with_an_example(command: str) -> None:
    """--help exits 0 and shows an example invocation."""
    out = tt(command, "--help").stdout
    assert "example:" in out and f"test-tube {command} " in out


def test_no_subcommand_is_a_usage_error() -> None:
    """Without a subcommand the command exits 2 with its usage."""
    proc = tt(check=False)
    assert proc.returncode == 2 and "usage:" in proc.stderr


# -- ls -------------------------------------------------------------------------------


def test_ls_prints_an_aligned_table_of_every_run(save_dir: Path, untouched: None) -> None:
    """One header and one line per run, columns aligned, statuses shown."""
    lines = tt("ls", save_dir).stdout.splitlines()
    header, rows = lines[0], lines[1:]
    assert header.split()[:7] == ["name", "version", "status", "rows", "last_step", "lr", "optimizer"]
    assert header.index("loss.last") < header.index("created_at") < header.index("loss.min")  # results first
    assert len(rows) == 5 and len({len(line) for line in lines}) <= 2  # padded, last cell may be "-"
    start = header.index("status")
    assert [line[start:start + 8].strip() for line in rows] == ["finished", "failed", "crashed", "finished",
                                                                 "unknown"]
    assert [line[:4] for line in rows] == ["demo"] * 4 + ["lega"]


def test_ls_on_a_terminal_fits_the_width(save_dir: Path) -> None:
    """On a terminal of 70 columns, lines fit and a note names the columns left out."""
    import pty

    master, slave = pty.openpty()
    env = dict(os.environ, COLUMNS="70", LINES="40")
    with subprocess.Popen([*CLI, "ls", str(save_dir)], stdout=slave, stderr=subprocess.PIPE, env=env) as proc:
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # the pty is closed when the command exits
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait(timeout=TIMEOUT) == 0
    os.close(master)
    lines = b"".join(chunks).decode().replace("\r\n", "\n").splitlines()
    assert all(len(line) <= 70 for line in lines[:-1]), lines
    assert lines[0].split()[:3] == ["name", "version", "status"]
    assert "more columns" in lines[-1] and "--csv" in lines[-1]
    assert "baseline, with a long description to show" not in "\n".join(lines)


def test_ls_never_cuts_columns_when_not_a_terminal(save_dir: Path, untouched: None) -> None:
    """Through a pipe every column and the whole description are printed, however wide."""
    out = tt("ls", save_dir).stdout
    assert "baseline, with a long description to show" in out
    header = out.splitlines()[0]
    for column in ("lr", "optimizer", "tag:status", "loss.last", "loss.min", "loss.max", "val_loss.max", "acc.max"):
        assert column in header.split()
    assert "more columns" not in out


def test_ls_csv_has_every_column_at_full_precision(save_dir: Path, untouched: None) -> None:
    """--csv: a header and one record per run, floats round-trip, log_dir included."""
    rows = list(csv.DictReader(io.StringIO(tt("ls", save_dir, "--csv").stdout)))
    assert len(rows) == 5
    first = rows[0]
    assert first["log_dir"] == str(save_dir / "demo" / "version_0")
    assert float(first["loss.last"]) == 1 / 20 and first["layers"] == "[64, 64]"
    assert rows[4]["last_step"] == "" and rows[4]["status"] == "unknown"


def test_ls_json_is_valid_json(save_dir: Path, untouched: None) -> None:
    """--json: an array of objects; NaN becomes null."""
    rows = json.loads(tt("ls", save_dir, "--json").stdout)
    assert [r["version"] for r in rows] == [0, 1, 2, 3, 0]
    assert rows[1]["status"] == "failed" and rows[1]["loss.last"] is None
    assert rows[0]["created_at"].endswith("+00:00") and rows[0]["augment"] is True


def test_ls_shows_the_sort_column_early(save_dir: Path) -> None:
    """--sort val_loss puts val_loss.last right after the built-in columns of the text table."""
    header = tt("ls", save_dir, "--sort", "val_loss").stdout.splitlines()[0].split()
    assert header[5] == "val_loss.last"


def test_ls_sort_by_metric_and_where_on_tags(save_dir: Path, untouched: None) -> None:
    """--sort loss orders by loss.last, missing last; --where filters on typed tags."""
    rows = json.loads(tt("ls", save_dir, "--name", "demo", "--sort", "loss", "--json").stdout)
    assert [r["version"] for r in rows] == [0, 3, 2, 1]  # NaN sorts after numbers
    desc = json.loads(tt("ls", save_dir, "--name", "demo", "--sort", "lr", "--desc", "--json").stdout)
    assert [r["lr"] for r in desc] == [0.1, 0.1, 0.01, 0.001]
    adam = json.loads(tt("ls", save_dir, "--where", "optimizer=adam", "--where", "lr=1e-2", "--json").stdout)
    assert [(r["name"], r["version"]) for r in adam] == [("demo", 0)]
    not_adam = json.loads(tt("ls", save_dir, "--name", "demo", "--where", "optimizer!=adam", "--json").stdout)
    assert [r["version"] for r in not_adam] == [2, 3]


def test_ls_where_on_a_builtin_column(save_dir: Path, untouched: None) -> None:
    """--where status=crashed selects the built-in column, not the tag of the same name."""
    rows = json.loads(tt("ls", save_dir, "--where", "status=crashed", "--json").stdout)
    assert [r["version"] for r in rows] == [2]


def test_ls_errors_are_one_line(save_dir: Path, tmp_path: Path, untouched: None) -> None:
    """A wrong path, an unknown sort metric or tag: exit 2 and one line."""
    assert "is not a folder" in one_line_error(tt("ls", tmp_path / "nowhere", check=False))
    assert "unknown metric" in one_line_error(tt("ls", save_dir, "--sort", "nope", check=False))
    assert "unknown tag" in one_line_error(tt("ls", save_dir, "--where", "nope=1", check=False))
    assert "TAG=VALUE" in one_line_error(tt("ls", save_dir, "--where", "nope", check=False))
    assert "no experiment" in one_line_error(tt("ls", save_dir, "--name", "nope", check=False))


def test_ls_of_an_empty_folder_says_so(tmp_path: Path) -> None:
    """No runs: nothing on stdout, a note on stderr, exit 0."""
    proc = tt("ls", tmp_path)
    assert proc.stdout == "" and "no runs" in proc.stderr


def test_installed_console_script_runs() -> None:
    """The console script declared in pyproject.toml starts the same command."""
    script = Path(sys.executable).with_name("test-tube")
    if not script.exists():
        pytest.skip("test-tube console script not installed in this environment")
    proc = subprocess.run([str(script), "ls", "--help"], capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0 and "example:" in proc.stdout


# -- show -------------------------------------------------------------------------------


def test_show_prints_meta_tags_rows_and_media(save_dir: Path, untouched: None) -> None:
    """show: status, git line, tags as written, row count, the last rows, the media count."""
    out = tt("show", save_dir / "demo" / "version_0", "--rows", "3").stdout
    assert "status      finished" in out
    assert "git         not recorded" in out
    assert "  layers     [64, 64]" in out
    assert "rows        21 (steps 0..20)" in out
    assert "media       1 file in media/" in out
    last = out.split("last 3 rows\n", 1)[1].splitlines()
    assert len(last) == 4 and last[-1].split()[0] == "20" and "media/sample_20.png" in last[-1]


def test_show_of_a_crashed_and_a_legacy_run(save_dir: Path, untouched: None) -> None:
    """The crashed run says crashed; the 0.7.5 run shows its CSV rows."""
    assert "status      crashed" in tt("show", save_dir / "demo" / "version_2").stdout
    legacy = tt("show", save_dir / "legacy" / "version_0").stdout
    assert "status      unknown" in legacy and "rows        3\n" in legacy


def test_show_wrong_path_is_one_line(save_dir: Path, tmp_path: Path) -> None:
    """A missing folder or a folder that is not a run: exit 2, one line."""
    assert "is not a folder" in one_line_error(tt("show", tmp_path / "nope", check=False))
    assert "not a run folder" in one_line_error(tt("show", save_dir, check=False))


# -- plot -------------------------------------------------------------------------------


def test_plot_png_has_the_requested_size_and_is_not_blank(save_dir: Path, tmp_path: Path,
                                                            untouched: None) -> None:
    """A PNG of the requested pixel size, with drawn lines (many distinct colours)."""
    Image = pytest.importorskip("PIL.Image")
    out = tmp_path / "loss.png"
    proc = tt("plot", save_dir, "--metric", "loss", "--label", "lr", "--label", "optimizer",
              "--size", "640x400", "-o", out)
    assert "wrote" in proc.stdout and "4 runs" in proc.stdout
    assert "legacy/version_0" in proc.stderr  # left out: it has no 'loss'
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size == (640, 400)
        pixels = np.asarray(img.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20
    assert (pixels < 250).any(axis=2).mean() > 0.01  # not a white page


def test_plot_svg_by_extension_time_axis_and_log_scale(save_dir: Path, tmp_path: Path, untouched: None) -> None:
    """.svg writes SVG; --x time and --logy are accepted."""
    out = tmp_path / "loss.svg"
    tt("plot", save_dir / "demo" / "version_0", save_dir / "demo" / "version_3", "--metric", "loss",
       "--x", "time", "--logy", "--smooth", "0", "-o", out)
    text = out.read_text()
    assert "<svg" in text and "v0" in text and "v3" in text


def test_plot_unknown_metric_and_wrong_path_are_one_line(save_dir: Path, tmp_path: Path, untouched: None) -> None:
    """An unknown metric names the available ones; a missing path is named; exit 2."""
    line = one_line_error(tt("plot", save_dir, "--metric", "nope", "-o", tmp_path / "x.png", check=False))
    assert "unknown metric 'nope'" in line and "loss" in line
    line = one_line_error(tt("plot", tmp_path / "missing", "--metric", "loss", "-o", tmp_path / "x.png",
                             check=False))
    assert "missing is not a folder" in line
    line = one_line_error(tt("plot", save_dir, "--metric", "loss", "-o", tmp_path / "x.jpg", check=False))
    assert ".png or .svg" in line
    assert not (tmp_path / "x.png").exists()


def test_plot_without_matplotlib_says_how_to_install_it(save_dir: Path, tmp_path: Path) -> None:
    """With matplotlib unimportable: exit 1 and one line naming the plot extra."""
    code = ("import sys; sys.modules['matplotlib'] = None; from test_tube._app._cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", code, "plot", str(save_dir), "--metric", "loss",
                           "-o", str(tmp_path / "x.png")], capture_output=True, text=True, timeout=TIMEOUT)
    line = one_line_error(proc, code=1)
    assert ".venv/bin/pip install -e '.[plot]'" in line and "pip install 'test-tube[plot]'" in line


def test_render_keeps_every_column_without_a_width_and_fits_with_one() -> None:
    """No width: nothing cut; a width: columns dropped from the right, never the first `keep`."""
    headers = ["name", "text", "value"]
    rows = [["a", "x" * 60, 1.5], ["bb", "y", None]]
    lines, hidden = _table.render(headers, rows)
    assert hidden == [] and "x" * 60 in lines[1] and lines[2].endswith("-")
    lines, hidden = _table.render(headers, rows, width=30, keep=1)
    assert hidden == ["text", "value"] and lines == ["name", "a", "bb"]
    lines, hidden = _table.render(headers, rows, width=10, keep=2)
    assert hidden == ["value"] and lines[1] == "a     " + "x" * 39 + "…"  # shortened to 40


def test_smoothing_is_tensorboards_debiased_ema() -> None:
    """Weight 0.6 on 1, 2, 3 gives 1, 1.625, 2.2449; NaN passes through; 0 is the identity."""
    got = _plot.smooth(np.array([1.0, 2.0, float("nan"), 3.0]), 0.6)
    assert got[0] == pytest.approx(1.0) and got[1] == pytest.approx(1.04 / 0.64)
    assert np.isnan(got[2]) and got[3] == pytest.approx((1.04 * 0.6 + 0.4 * 3) / (1 - 0.6**3))
    assert list(_plot.smooth(np.array([5.0, 7.0]), 0.0)) == [5.0, 7.0]
    with pytest.raises(ValueError):
        _plot.smooth(np.array([1.0]), 1.0)


# -- tail -------------------------------------------------------------------------------

WRITER = textwrap.dedent("""
    import sys
    import test_tube
    exp = test_tube.Experiment(name="live", save_dir=sys.argv[1], record_git=False, flush_interval=0.2)
    for i in range(5):
        exp.log({"loss": 1.0 / (i + 1)})
    exp.save()
    print(exp.log_dir, flush=True)
    sys.stdin.readline()  # wait until the test has seen the first rows
    for i in range(5, 10):
        exp.log({"loss": 1.0 / (i + 1), "acc": i})
    exp.save()
    exp.close()
""")


def _lines(stream: Any) -> queue.Queue[str | None]:
    q: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in stream:
            q.put(line)
        q.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return q


def test_tail_follows_a_running_experiment_until_it_finishes(tmp_path: Path) -> None:
    """Rows flushed while tail runs are printed once each, then tail exits 0 when the run closes."""
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    tail = None
    try:
        assert writer.stdout is not None and writer.stdin is not None
        log_dir = writer.stdout.readline().strip()
        tail = subprocess.Popen([*CLI, "tail", log_dir, "--interval", "0.05"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        assert tail.stdout is not None
        lines = _lines(tail.stdout)
        seen: list[str] = []
        while not any(line.split()[:1] == ["4"] for line in seen):
            line = lines.get(timeout=TIMEOUT)
            assert line is not None, "".join(seen)
            seen.append(line)
        writer.stdin.write("go\n")
        writer.stdin.flush()
        assert writer.wait(timeout=TIMEOUT) == 0
        assert tail.wait(timeout=TIMEOUT) == 0
        while (line := lines.get(timeout=TIMEOUT)) is not None:
            seen.append(line)
    finally:
        for proc in (writer, tail):
            if proc is not None and proc.poll() is None:
                proc.kill()
    steps = [line.split()[0] for line in seen if line.split()[0].isdigit()]
    assert steps == [str(i) for i in range(10)]
    headers = [line for line in seen if line.split()[0] == "step"]
    assert len(headers) == 2 and "acc" in headers[1]  # a new column reprints the header
    assert tail.stderr is not None and "finished" in tail.stderr.read()


def test_tail_of_a_finished_run_prints_its_last_rows_and_exits(save_dir: Path, untouched: None) -> None:
    """A closed run: the last N rows, exit 0 at once."""
    proc = tt("tail", save_dir / "demo" / "version_0", "--rows", "2")
    assert [line.split()[0] for line in proc.stdout.splitlines()] == ["step", "19", "20"]


def test_tail_of_a_crashed_run_exits_1(save_dir: Path, untouched: None) -> None:
    """A run whose process is gone: its rows, then exit 1 saying it crashed."""
    proc = tt("tail", save_dir / "demo" / "version_2", check=False)
    assert proc.returncode == 1 and "crashed" in proc.stderr
    assert [line.split()[0] for line in proc.stdout.splitlines()] == ["step", "0", "1", "2", "3"]


def test_tail_wrong_path_is_one_line(tmp_path: Path) -> None:
    """A missing folder: exit 2, one line."""
    assert "is not a folder" in one_line_error(tt("tail", tmp_path / "nope", check=False))


def test_cli_runs_with_the_module_entry_point() -> None:
    """`python -m test_tube._app._cli` works without the console script (a fresh install)."""
    assert Path(importlib.import_module("test_tube._app._cli").__file__ or "").name == "_cli.py"
    assert "ls" in tt("--help").stdout


# -- per-rank runs -------------------------------------------------------------------


@pytest.fixture(scope="module")
def per_rank_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ddp/version_3/rank_0 and rank_1 (3 and 5 rows) and plain/version_0."""
    return build_per_rank(tmp_path_factory.mktemp("cli_per_rank") / "logs")


def test_ls_shows_one_line_per_rank_with_a_rank_column(per_rank_dir: Path) -> None:
    """ls: the rank column right after version, one line per rank, blank rank for an ordinary run."""
    lines = tt("ls", per_rank_dir).stdout.splitlines()
    assert lines[0].split()[:6] == ["name", "version", "rank", "status", "rows", "last_step"]
    assert [line.split()[:5] for line in lines[1:3]] == [["ddp", "3", "0", "finished", "3"],
                                                         ["ddp", "3", "1", "finished", "5"]]
    plain = lines[3].split()
    assert plain[:2] == ["plain", "0"] and plain[2] != "0" and "finished" in plain
    json_rows = json.loads(tt("ls", per_rank_dir, "--json").stdout)
    assert [(r["name"], r["rank"]) for r in json_rows] == [("ddp", 0), ("ddp", 1), ("plain", None)]
    where = tt("ls", per_rank_dir, "--where", "rank=1", "--csv").stdout
    assert [row["log_dir"] for row in csv.DictReader(io.StringIO(where))] == [
        str(per_rank_dir / "ddp" / "version_3" / "rank_1")]


def test_ls_of_ordinary_runs_has_no_rank_column(save_dir: Path) -> None:
    """Without per-rank runs the table is as it always was."""
    assert "rank" not in tt("ls", save_dir).stdout.splitlines()[0].split()
    assert "rank" not in tt("ls", save_dir, "--csv").stdout.splitlines()[0].split(",")


def test_show_and_tail_take_a_rank_folder(per_rank_dir: Path) -> None:
    """A rank folder is a run folder: show names the rank, tail prints its rows."""
    rank1 = per_rank_dir / "ddp" / "version_3" / "rank_1"
    out = tt("show", rank1).stdout
    assert "run         ddp/version_3/rank_1" in out and "status      finished" in out
    assert "rows        5 (steps 0..4)" in out and "media       1 file in media/" in out
    proc = tt("tail", rank1, "--rows", "2")
    assert [line.split()[0] for line in proc.stdout.splitlines()] == ["step", "3", "4"]


def test_show_of_a_per_rank_version_folder_names_a_rank_folder(per_rank_dir: Path) -> None:
    """The version folder of per-rank runs is not one run: the error says which folder to give."""
    line = one_line_error(tt("show", per_rank_dir / "ddp" / "version_3", check=False))
    assert "one run per rank" in line and str(per_rank_dir / "ddp" / "version_3" / "rank_0") in line


def test_plot_labels_each_rank(per_rank_dir: Path, tmp_path: Path) -> None:
    """plot of a rank folder, of a per-rank version folder and of a save_dir draws one line per rank."""
    out = tmp_path / "loss.svg"
    proc = tt("plot", per_rank_dir / "ddp" / "version_3" / "rank_1", "--metric", "loss", "--smooth", "0", "-o", out)
    assert "1 run" in proc.stdout and "v3 r1" in out.read_text()
    proc = tt("plot", per_rank_dir / "ddp" / "version_3", "--metric", "loss", "-o", out)
    assert "2 runs" in proc.stdout
    text = out.read_text()
    assert "v3 r0" in text and "v3 r1" in text
    proc = tt("plot", per_rank_dir, "--metric", "loss", "-o", out)
    assert "3 runs" in proc.stdout
    text = out.read_text()
    assert "ddp/v3 r0" in text and "ddp/v3 r1" in text and "plain/v0" in text
