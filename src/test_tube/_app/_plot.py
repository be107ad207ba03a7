"""Line plots of one metric across runs (matplotlib, imported only here, only when plotting)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

MISSING_MATPLOTLIB = ("plotting needs matplotlib, which is not installed: from a clone, .venv/bin/pip install -e '.[plot]'; "
                      "once released, pip install 'test-tube[plot]'")
FORMATS = ("png", "svg")


class MissingMatplotlib(ImportError):
    """matplotlib, the ``plot`` extra, is not installed."""


@dataclass
class Series:
    """One run's line: x and y values and its legend label."""

    label: str
    x: np.ndarray[Any, Any]
    y: np.ndarray[Any, Any]


def require_matplotlib() -> None:
    """Raise :class:`MissingMatplotlib` unless matplotlib can be imported (imports it)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise MissingMatplotlib(MISSING_MATPLOTLIB) from exc


def smooth(values: np.ndarray[Any, Any], weight: float) -> np.ndarray[Any, Any]:
    """TensorBoard's smoothing: a debiased exponential moving average.

    ``weight`` is in ``[0, 1)``; 0 returns the values unchanged.  The average
    starts at zero and each value is divided by ``1 - weight**n`` (``n``
    finite values seen so far), so the start of the line is not pulled
    towards zero.  NaN and infinite values are passed through and do not
    enter the average.
    """
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
    out = np.array(values, dtype=np.float64)
    if weight == 0.0:
        return out
    average = 0.0
    n = 0
    for i, v in enumerate(out.tolist()):
        if not math.isfinite(v):
            continue
        average = average * weight + (1.0 - weight) * v
        n += 1
        out[i] = average / (1.0 - weight**n)
    return out


def series(table: pa.Table, metric: str, x: str) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """The points of ``metric`` in one run's rows: x (step, or seconds since the first row) and y."""
    column = table.column(metric)
    if x == "time":
        times = table.column("created_at")
        micros = pc.cast(pc.cast(times, pa.timestamp("us")), pa.int64()).to_numpy(zero_copy_only=False)
        xs = (micros - micros[0]) / 1e6 if len(micros) else micros.astype(np.float64)
    elif "step" in table.column_names:
        xs = table.column("step").to_numpy(zero_copy_only=False)
    else:  # a legacy run without a step column: the row number
        xs = np.arange(table.num_rows)
    ys = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
    xs = np.asarray(xs, dtype=np.float64)
    if column.null_count == 0:  # the common case: no mask to apply, no copies to make (10^7 rows in serve)
        return xs, ys
    mask = pc.is_valid(column).to_numpy(zero_copy_only=False)
    return xs[mask], ys[mask]


def plot(
    lines: Sequence[Series],
    out: str | os.PathLike[str],
    *,
    metric: str,
    x: str = "step",
    weight: float = 0.6,
    logy: bool = False,
    size: tuple[int, int] = (960, 540),
    title: str | None = None,
) -> None:
    """Draw one line per run into ``out`` (PNG or SVG, by extension), ``size`` pixels wide and high.

    With ``weight`` > 0 each line is smoothed (see :func:`smooth`) and the raw
    values are drawn faintly behind it in the same colour.  Raises
    :class:`MissingMatplotlib` when matplotlib is not installed.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise MissingMatplotlib(MISSING_MATPLOTLIB) from exc

    dpi = 100
    fig = Figure(figsize=(size[0] / dpi, size[1] / dpi), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    xs = [s.x for s in lines]
    unit, scale = ("step", 1.0)
    if x == "time":
        longest = max((float(v[-1]) for v in xs if len(v)), default=0.0)
        unit, scale = ("hours", 3600.0) if longest >= 3 * 3600 else ("minutes", 60.0) if longest >= 180 else (
            "seconds", 1.0)
    colors = _colors(len(lines))
    for s, color in zip(lines, colors):
        xv = s.x / scale
        if weight > 0:
            ax.plot(xv, s.y, color=color, alpha=0.25, linewidth=1.0)
            ax.plot(xv, smooth(s.y, weight), color=color, linewidth=1.6, label=s.label)
        else:
            ax.plot(xv, s.y, color=color, linewidth=1.4, label=s.label)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(unit if x == "time" else "step")
    ax.set_ylabel(metric)
    ax.set_title(title if title is not None else metric + (f" (smoothing {weight:g})" if weight > 0 else ""))
    ax.grid(True, alpha=0.3)
    if len(lines) <= 20:
        ax.legend(fontsize="small", loc="best")
    fig.savefig(os.fspath(out), dpi=dpi)


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    return [colormaps["viridis"](i / (n - 1)) for i in range(n)]
