"""The ``test-tube`` command: ``ls``, ``show``, ``plot``, ``tail`` and ``serve``.

Every subcommand only reads: it takes no lock and writes nothing into a run.
Exit status: 0 on success; 2 for a wrong path, an unknown column or metric, or
bad arguments; 1 when ``tail`` saw its run fail or crash, when matplotlib is
missing, when a file cannot be read, or when ``serve`` cannot listen on its
port.  Errors are one line on standard error.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import shutil
import sys
import time
import warnings
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TextIO

import pyarrow as pa
import pyarrow.compute as pc

from .._store import _layout, _runs

from . import _table
from .._errors import TestTubeError
from .._experiment import DEFAULT_SAVE_DIR
from .._store._location import Location, resolve
from .._store._read import read_run
from .._store._reader import Store, StoredRun, run_id
from .._store._runs import run_status, runs
from ._serve import DEFAULT_PORT
from .._store._schema import concat

PROG = "test-tube"
# Left out of the aligned ls table (still in --csv and --json): the path is name/version_<N>[/rank_<r>].
_LS_HIDDEN = ("log_dir",)


class CliError(Exception):
    """A problem to report in one line, with the exit status to use."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``test-tube`` command with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    warnings.showwarning = _show_warning
    try:
        return int(args.func(args))
    except CliError as exc:
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`test-tube ls | head`): not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except (OSError, pa.ArrowException, TestTubeError) as exc:  # an unreadable or damaged file
        print(f"{PROG} {args.command}: error: {type(exc).__name__}: {exc}".splitlines()[0], file=sys.stderr)
        return 1


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: TextIO | None = None, line: str | None = None) -> None:
    print(f"{PROG}: warning: {message}", file=sys.stderr)


# -- arguments ------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Look at test_tube runs: list them, show one, plot a metric, follow a running one, "
                    "or browse them in a web page.",
        epilog="Run 'test-tube COMMAND --help' for a command's options and an example. Exit status: 0 ok; "
               "2 wrong path, unknown metric or column, bad arguments; 1 a run that failed or crashed "
               "(tail), matplotlib missing, an unreadable file.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, summary: str, example: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name, help=summary, description=summary, epilog="example:\n  " + example,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    ls = command("ls", "List runs as a table: tags, status, and last/min/max of every numeric metric.",
                 "test-tube ls test_tube_logs --name mnist --where optimizer=adam --sort val_loss")
    ls.add_argument("save_dir", nargs="?", default=DEFAULT_SAVE_DIR, metavar="SAVE_DIR",
                    help=f"folder holding experiments, or one experiment's folder, or a URI such as "
                         f"s3://bucket/logs?endpoint_override=host:port (default: ./{DEFAULT_SAVE_DIR})")
    ls.add_argument("--name", help="only this experiment")
    ls.add_argument("--sort", metavar="COLUMN",
                    help="sort by a column; a metric name means <metric>.last (ascending, missing last)")
    ls.add_argument("--desc", action="store_true", help="sort in descending order")
    ls.add_argument("--where", action="append", default=[], metavar="TAG=VALUE",
                    help="keep runs whose column equals VALUE (TAG!=VALUE: differs); repeat to combine")
    fmt = ls.add_mutually_exclusive_group()
    fmt.add_argument("--csv", action="store_true", help="write CSV (every column, full precision)")
    fmt.add_argument("--json", action="store_true", help="write a JSON array of objects (NaN and inf as null)")
    ls.set_defaults(func=cmd_ls)

    show = command("show", "Show one run: metadata, git snapshot, tags, row count, last rows, media.",
                   "test-tube show test_tube_logs/mnist/version_3 --rows 10")
    show.add_argument("log_dir", metavar="LOG_DIR", help="a run's folder or URI (<save_dir>/<name>/version_<N>, or .../version_<N>/rank_<r> for "
                           "per_rank=True)")
    show.add_argument("--rows", type=_non_negative, default=5, metavar="N", help="last rows to print (default 5)")
    show.set_defaults(func=cmd_show)

    plot = command("plot", "Plot one metric, one line per run, smoothed as in TensorBoard (PNG or SVG).",
                   "test-tube plot test_tube_logs/mnist --metric val_loss --label lr --smooth 0.6 -o loss.png")
    plot.add_argument("paths", nargs="+", metavar="PATH",
                      help="run folders or URIs (LOG_DIR), or a SAVE_DIR / experiment folder for all its runs")
    plot.add_argument("--metric", required=True, help="the column to plot")
    plot.add_argument("--x", choices=("step", "time"), default="step",
                      help="x axis: step, or time since the run's first row (default step)")
    plot.add_argument("--smooth", type=_weight, default=0.6, metavar="W",
                      help="smoothing weight in [0, 1), 0 for none (default 0.6, TensorBoard's)")
    plot.add_argument("--label", action="append", default=[], metavar="TAG",
                      help="add this tag's value to each run's legend label; repeatable")
    plot.add_argument("--logy", action="store_true", help="logarithmic y axis")
    plot.add_argument("--size", type=_size, default=(960, 540), metavar="WxH",
                      help="image size in pixels (default 960x540)")
    plot.add_argument("--title", help="title (default: the metric)")
    plot.add_argument("-o", "--output", required=True, metavar="FILE", help="output file, .png or .svg")
    plot.set_defaults(func=cmd_plot)

    tail = command("tail", "Follow a running experiment: print rows as they are flushed, until it ends.",
                   "test-tube tail test_tube_logs/mnist/version_3")
    tail.add_argument("log_dir", metavar="LOG_DIR", help="a run's folder or URI")
    tail.add_argument("--rows", type=_non_negative, default=10, metavar="N",
                      help="rows already written to print first (default 10)")
    tail.add_argument("--interval", type=_positive, default=0.5, metavar="S",
                      help="seconds between looks at the journal (default 0.5)")
    tail.set_defaults(func=cmd_tail)

    serve = command("serve", "Show the runs in a web browser: table, live charts, images, metadata.",
                    f"test-tube serve test_tube_logs   # then open http://127.0.0.1:{DEFAULT_PORT}/")
    serve.add_argument("save_dir", nargs="?", default=DEFAULT_SAVE_DIR, metavar="SAVE_DIR",
                       help=f"folder holding experiments, or one experiment's folder, or a URI "
                            f"(default: ./{DEFAULT_SAVE_DIR})")
    serve.add_argument("--port", type=_port, default=DEFAULT_PORT, metavar="N",
                       help=f"port to listen on (default {DEFAULT_PORT}; 0 picks a free one)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1: this machine only)")
    serve.set_defaults(func=cmd_serve)
    return parser


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0..65535, got {text}")
    return value


def _weight(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(p) for p in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT in pixels, like 960x540; got {text!r}") from None
    if not (16 <= w <= 20000 and 16 <= h <= 20000):
        raise argparse.ArgumentTypeError(f"width and height must be 16..20000 pixels, got {text}")
    return w, h


# -- ls ---------------------------------------------------------------------------


def cmd_ls(args: argparse.Namespace) -> int:
    """``test-tube ls``: the runs table."""
    location = _location(args.save_dir)
    try:
        table = runs(args.save_dir, args.name)
    except FileNotFoundError as exc:
        raise CliError(str(exc)) from None
    for condition in args.where:
        table = _where(table, condition)
    if args.sort:
        table = _sort(table, args.sort, descending=args.desc)
    out = sys.stdout
    if args.csv:
        _write_csv(table, out)
    elif args.json:
        json.dump([{k: _json_value(v) for k, v in row.items()} for row in table.to_pylist()], out, indent=1,
                  ensure_ascii=False, allow_nan=False)
        out.write("\n")
    else:
        if table.num_rows == 0:
            print(f"no runs in {location.shown}" + (f" matching {' '.join(args.where)}" if args.where else ""),
                  file=sys.stderr)
            return 0
        names = _text_columns(table, first=_column(table, args.sort, metric=True) if args.sort else None)
        rows = [[row[n] for n in names] for row in table.select(names).to_pylist()]
        width = shutil.get_terminal_size().columns if out.isatty() else None
        lines, hidden = _table.render(names, rows, width=width, keep=3)
        out.write("\n".join(lines) + "\n")
        if hidden:
            out.write(f"({len(hidden)} more columns: {', '.join(hidden[:6])}{', …' if len(hidden) > 6 else ''}; "
                      f"widen the terminal or use --csv/--json)\n")
    return 0


def _text_columns(table: pa.Table, first: str | None) -> list[str]:
    """Columns of the aligned table, most telling first, so that a narrow terminal keeps them.

    name, version, rank (when the table has per-rank runs), status, rows,
    last_step, the sort column, the tags, every
    ``.last``, created_at, description, then the ``.min``/``.max`` columns;
    ``log_dir`` and an all-empty description are left out (``--csv`` has them).
    """
    names = [n for n in table.column_names if n not in _LS_HIDDEN]
    if table.column("description").null_count == table.num_rows:
        names.remove("description")
    head = [n for n in ("name", "version", _runs.RANK_COLUMN, "status", "rows", "last_step") if n in names]
    metric_parts = [n for n in names if n.endswith((".last", ".min", ".max")) and not n.startswith("tag:")
                    and n not in _runs.BUILTIN_COLUMNS]
    tail = [n for n in ("created_at", "description") if n in names]
    tags = [n for n in names if n not in head and n not in tail and n not in metric_parts]
    lasts = [n for n in metric_parts if n.endswith(".last")]
    bounds = [n for n in metric_parts if not n.endswith(".last")]
    order = head + ([first] if first and first in names else []) + tags + lasts + tail + bounds
    return list(dict.fromkeys(order))


def _column(table: pa.Table, key: str, *, metric: bool) -> str:
    """The column a user means by ``key``: itself, ``<key>.last`` for a metric, or ``tag:<key>``."""
    for candidate in (key, f"{key}.last" if metric else None, f"tag:{key}"):
        if candidate is not None and candidate in table.column_names:
            return candidate
    if table.num_rows == 0:
        return key
    metrics = sorted({n.rsplit(".", 1)[0] for n in table.column_names if n.endswith(".last")})
    what = "metric or column" if metric else "tag or column"
    raise CliError(f"unknown {what} {key!r}; metrics: {', '.join(metrics) or 'none'}")


def _where(table: pa.Table, condition: str) -> pa.Table:
    key, op, text = _split_condition(condition)
    name = _column(table, key, metric=False)
    if name not in table.column_names:
        return table
    column = table.column(name)
    wanted = _layout.parse_tag(text)
    keep = [(_matches(v, text, wanted, column.type)) == (op == "=") for v in column.to_pylist()]
    return table.filter(pa.array(keep, pa.bool_()))


def _split_condition(condition: str) -> tuple[str, str, str]:
    if "!=" in condition:
        key, text = condition.split("!=", 1)
        op = "!="
    elif "=" in condition:
        key, text = condition.split("=", 1)
        op = "="
    else:
        raise CliError(f"--where takes TAG=VALUE or TAG!=VALUE, got {condition!r}")
    if not key:
        raise CliError(f"--where {condition!r}: the tag name is empty")
    return key, op, text


def _matches(value: Any, text: str, wanted: Any, typ: pa.DataType) -> bool:
    if value is None:
        return text in ("", "None", _table.MISSING)
    if pa.types.is_boolean(typ) or pa.types.is_integer(typ) or pa.types.is_floating(typ):
        if isinstance(wanted, (int, float)) and (isinstance(wanted, bool) == isinstance(value, bool)):
            return bool(value == wanted)
        return False
    return str(value) == text or _table.cell(value) == text


def _sort(table: pa.Table, key: str, *, descending: bool) -> pa.Table:
    """Rows ordered by one column; NaN after every number and missing values last, either way."""
    name = _column(table, key, metric=True)
    if name not in table.column_names:
        return table
    values = table.column(name).to_pylist()

    def rank(i: int) -> tuple[int, Any]:
        v = values[i]
        if v is None:
            return 2, 0
        if isinstance(v, float) and math.isnan(v):
            return 1, 0
        return 0, v

    present = sorted((i for i in range(len(values)) if rank(i)[0] == 0), key=lambda i: rank(i)[1],
                     reverse=descending)  # sorted() is stable: ties keep name, version order
    rest = sorted((i for i in range(len(values)) if rank(i)[0] != 0), key=lambda i: rank(i)[0])
    return table.take(pa.array(present + rest, pa.int64()))


def _write_csv(table: pa.Table, out: TextIO) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(table.column_names)
    for row in table.to_pylist():
        writer.writerow([_csv_value(v) for v in row.values()])


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    return repr(value) if isinstance(value, float) else str(value)


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    return value


# -- show -------------------------------------------------------------------------


def _location(text: str) -> Location:
    """Where a path or URI argument points; a URI pyarrow cannot open is a usage error naming it."""
    try:
        return resolve(text)
    except ValueError as exc:
        raise CliError(str(exc)) from None


def _run_dir(path: str) -> StoredRun:
    """The run a LOG_DIR argument names (a folder, or a URI), or a usage error saying why it is none."""
    run = StoredRun(_location(path))
    if not run.exists():
        raise CliError(f"{run.shown} is not a folder")
    if not run.is_run():
        ranks = run.rank_folders()
        if ranks:
            raise CliError(f"{run.shown} holds one run per rank (per_rank=True); name one of them, "
                           f"like {ranks[0][1].shown}")
        raise CliError(f"{run.shown} is not a run folder (no {_layout.META}, {_layout.JOURNAL} or {_layout.CSV}); "
                       f"run folders look like <save_dir>/<name>/version_<N> or <save_dir>/<name>/version_<N>/rank_<r>")
    return run


def cmd_show(args: argparse.Namespace) -> int:
    """``test-tube show``: one run in detail."""
    run = _run_dir(args.log_dir)
    meta = run.meta()
    out = sys.stdout
    name, version, rank = _run_name(run)
    fields: list[tuple[str, Any]] = [
        ("run", run_id(meta.get("name", name), meta.get("version", version), rank)),
        ("log_dir", run.shown),
        ("status", run_status(meta)),
        ("description", meta.get("description")),
        ("created_at", _utc(meta.get("created_at"))),
        ("updated_at", _utc(meta.get("updated_at"))),
        ("ended_at", _utc(meta.get("ended_at"))),
        ("host", meta.get("host")),
        ("pid", meta.get("pid")),
        ("format", meta.get("format", "test-tube 0.7 (no format key)")),
        ("git", _git_line(meta.get("git"))),
    ]
    _print_fields(out, fields)
    tags = run.tag_texts()
    out.write(f"tags ({len(tags)})\n")
    if tags:
        wide = max(len(k) for k in tags)
        for key, text in tags.items():
            out.write(f"  {key.ljust(wide)}  {text}\n")
    table = read_run(run)
    columns = [f"{n} ({t})" for n, t in zip(table.column_names, table.schema.types) if n not in ("step", "created_at")]
    steps = ""
    if table.num_rows and "step" in table.column_names:
        bounds = pc.min_max(table.column("step"))
        steps = f" (steps {bounds['min'].as_py()}..{bounds['max'].as_py()})"
    _print_fields(out, [("rows", f"{table.num_rows}{steps}"), ("columns", ", ".join(columns) or "none"),
                        ("media", _media_line(run))])
    if args.rows and table.num_rows:
        last = table.slice(max(0, table.num_rows - args.rows))
        out.write(f"last {last.num_rows} rows\n")
        _print_rows(out, last, indent="  ")
    return 0


def _print_fields(out: TextIO, fields: list[tuple[str, Any]]) -> None:
    for key, value in fields:
        if value is not None:
            out.write(f"{key.ljust(12)}{value}\n")


def _utc(text: Any) -> str | None:
    return f"{text} UTC" if isinstance(text, str) else None


def _git_line(git: Any) -> str | None:
    if not isinstance(git, dict):
        return None
    if not git.get("ok"):
        return f"not recorded ({git.get('error', 'unknown reason')})"
    head = str(git.get("head") or "?")[:12]
    where = "detached" if git.get("detached") else (git.get("branch") or "?")
    parts = [f"{where} @ {head}", "dirty" if git.get("dirty") else "clean"]
    if git.get("tag"):
        parts.append(f"tag {git['tag']}")
    if git.get("snapshot"):
        parts.append(f"snapshot {str(git['snapshot'])[:12]}")
    if git.get("root"):
        parts.append(f"in {git['root']}")
    return ", ".join(parts)


def _media_line(run: StoredRun) -> str:
    files = run.media()
    if not files and _layout.MEDIA not in run.names():
        return "none"
    return f"{len(files)} file{'s' if len(files) != 1 else ''} in {_layout.MEDIA}/"


def _print_rows(out: TextIO, table: pa.Table, indent: str = "") -> None:
    rows = [list(r.values()) for r in table.to_pylist()]
    lines, _ = _table.render(table.column_names, rows)
    out.write("".join(f"{indent}{line}\n" for line in lines))


# -- plot -------------------------------------------------------------------------


def cmd_plot(args: argparse.Namespace) -> int:
    """``test-tube plot``: one metric of several runs in one image."""
    from . import _plot

    try:
        _plot.require_matplotlib()  # before any work: the answer would be the same after it
    except _plot.MissingMatplotlib as exc:
        raise CliError(str(exc), code=1) from None
    ext = os.path.splitext(args.output)[1].lower().lstrip(".")
    if ext not in _plot.FORMATS:
        raise CliError(f"-o {args.output}: the extension picks the format; use .png or .svg")
    folder = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(folder):
        raise CliError(f"-o {args.output}: the folder {folder} does not exist")
    found = _plot_runs(args.paths)
    experiments = {_run_name(d)[0] for d in found}
    ranked = any(_run_name(d)[2] is not None for d in found)
    lines: list[_plot.Series] = []
    skipped: list[str] = []
    available: set[str] = set()
    for run in found:
        table = read_run(run)
        name, version, rank = _run_name(run)
        available.update(n for n, t in zip(table.column_names, table.schema.types)
                         if n not in ("step", "created_at") and _plottable(t))
        if args.metric not in table.column_names:
            skipped.append(run_id(name, version, rank))
            continue
        if not _plottable(table.schema.field(args.metric).type):
            raise CliError(f"metric {args.metric!r} is not numeric in {run.shown} "
                           f"({table.schema.field(args.metric).type})")
        x, y = _plot.series(table, args.metric, args.x)
        label = f"{name}/v{version}" if len(experiments) > 1 else f"v{version}"
        if ranked:
            label += f" r{rank}" if rank is not None else ""
        tags = run.tag_texts()
        label += "".join(f" {t}={tags[t]}" for t in args.label if t in tags)
        lines.append(_plot.Series(label, x, y))
    if not lines:
        raise CliError(f"unknown metric {args.metric!r}: no run has it; "
                       f"numeric metrics: {', '.join(sorted(available)) or 'none'}")
    if skipped:
        print(f"{PROG} plot: {len(skipped)} run(s) without {args.metric!r} left out: {', '.join(skipped)}",
              file=sys.stderr)
    try:
        _plot.plot(lines, args.output, metric=args.metric, x=args.x, weight=args.smooth, logy=args.logy,
                   size=args.size, title=args.title)
    except _plot.MissingMatplotlib as exc:
        raise CliError(str(exc), code=1) from None
    if len(lines) > 20:
        print(f"{PROG} plot: {len(lines)} runs: the legend is left out above 20", file=sys.stderr)
    print(f"wrote {args.output} ({len(lines)} run{'s' if len(lines) != 1 else ''})")
    return 0


def _plottable(typ: pa.DataType) -> bool:
    return bool(pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_boolean(typ))


def _plot_runs(paths: Sequence[str]) -> list[StoredRun]:
    found: list[StoredRun] = []
    for path in paths:
        location = _location(path)
        run = StoredRun(location)
        if not run.exists():
            raise CliError(f"{location.shown} is not a folder")
        if run.is_run():
            found.append(run)
            continue
        ranks = run.rank_folders()  # a version folder of per-rank runs: all its ranks
        runs_in = [f for _, f in ranks] if ranks else [r.folder for r in Store(location).runs()]
        if not runs_in:
            raise CliError(f"{location.shown} holds no runs (expected a run folder or a save_dir)")
        found.extend(runs_in)
    return found


def _run_name(run: StoredRun) -> tuple[str, str, int | None]:
    """Experiment name, version (as text: a folder named otherwise gives its name) and rank of a run folder."""
    name, version, rank = run.identity()
    return name, str(version) if version is not None else run.path.rstrip("/").replace(os.sep, "/").rsplit("/", 1)[-1], rank


# -- tail -------------------------------------------------------------------------


def cmd_tail(args: argparse.Namespace) -> int:
    """``test-tube tail``: print rows as the writer flushes them, until the run ends."""
    run = _run_dir(args.log_dir)
    out = sys.stdout
    printer = _RowPrinter(out)
    names = run.names()
    if _layout.JOURNAL not in names and _layout.JOURNAL_SEGMENTS not in names and _layout.CSV in names:
        # written by test-tube 0.7: nothing to follow
        table = read_run(run)
        printer.print(table.slice(max(0, table.num_rows - args.rows)))
        return 0
    offset = 0
    first = True
    while True:
        status = _status(run)
        frames, offset = run.frames(offset)
        if frames:
            table = concat(frames)
            if first:
                table = table.slice(max(0, table.num_rows - args.rows))
            printer.print(table)
        first = False
        if status != "running":
            # A run that died without closing: the rows its ring still holds come last.
            left = run.ring_table()
            if left is not None:
                printer.print(left)
            break
        time.sleep(args.interval)
        run = StoredRun(run.location)  # on object storage: list the new segments
    if status in ("finished", "unknown"):
        print(f"{PROG} tail: the run {'finished' if status == 'finished' else 'is not running'}", file=sys.stderr)
        return 0
    print(f"{PROG} tail: the run {status}" + (" (its process is gone)" if status == "crashed" else ""),
          file=sys.stderr)
    return 1


def _status(run: StoredRun) -> str:
    meta = run.meta()
    return run_status(meta) if meta else "running"  # no meta yet: the run is starting


class _RowPrinter:
    """Prints rows under a header, repeating the header when the columns change."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.columns: list[str] | None = None
        self.widths: list[int] = []

    def print(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        names = table.column_names
        texts = [[_table.cell(v) for v in table.column(n).to_pylist()] for n in names]
        if names != self.columns:
            self.columns = names
            self.widths = [max(len(n), 10, *(len(t) for t in col)) for n, col in zip(names, texts)]
            self.out.write("  ".join(n.rjust(w) for n, w in zip(names, self.widths)) + "\n")
        buf = io.StringIO()
        for r in range(table.num_rows):
            buf.write("  ".join(col[r].rjust(w) for col, w in zip(texts, self.widths)) + "\n")
        self.out.write(buf.getvalue())
        self.out.flush()


# -- serve ------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    """``test-tube serve``: the web page, until Ctrl-C."""
    from . import _serve

    location = _location(args.save_dir)
    if not StoredRun(location).exists():
        raise CliError(f"{location.shown} is not a folder")
    try:
        server = _serve.Server(args.save_dir, args.host, args.port)
    except OSError as exc:
        raise CliError(f"cannot listen on {args.host} port {args.port}: {exc.strerror or exc}"
                       + ("; pick another with --port (0: any free port)" if args.port else ""), code=1) from None
    with server:
        if not server.loopback:
            print(f"{PROG} serve: warning: listening on {args.host}: anyone who can reach this address can read "
                  f"these runs", file=sys.stderr)
        print(f"serving {location.shown} at {server.url} (Ctrl-C to stop)", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
