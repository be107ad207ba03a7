"""Downsampling a line for drawing: a min/max envelope per pixel bucket.

A chart W pixels wide cannot show more than W distinct x positions, but it
must not lose what a reader looks for: a spike, a divergence, the last value.
The x range is cut into ``buckets`` equal slices (one per pixel column) and,
of the points in each slice, the first, the last, the lowest and the highest
are kept, in x order.  Drawn as a line this looks exactly like the full line
at that width; every extreme survives, unlike reservoir sampling (which
TensorBoard uses) that keeps a random subset and drops most spikes.

The work is a few passes over the arrays (no Python loop over points, one
over buckets), so 10^7 points take a fraction of a second.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Points kept per bucket at most: first, last, min and max.
PER_BUCKET = 4

Array = np.ndarray[Any, Any]


def envelope(x: Array, y: Array, buckets: int) -> tuple[Array, Array]:
    """Return ``(x, y)`` reduced to at most ``4 * buckets`` points that draw like the input.

    ``x`` and ``y`` are equal-length 1-D arrays.  Points whose x or y is NaN
    or infinite are left out (a chart cannot place them).  Points are taken
    in x order (a stable sort when ``x`` is not already sorted).  When no more
    than ``4 * buckets`` points remain they are all returned unchanged;
    otherwise, within each of ``buckets`` equal slices of the x range, the
    first, last, minimum and maximum points are kept (each once), so no
    extreme value is lost.  The result is float64, sorted by x.
    """
    if buckets < 1:
        raise ValueError(f"buckets must be >= 1, got {buckets}")
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64)
    if xs.shape != ys.shape or xs.ndim != 1:
        raise ValueError(f"x and y must be 1-D arrays of one length, got shapes {xs.shape} and {ys.shape}")
    finite = np.isfinite(xs) & np.isfinite(ys)
    if not finite.all():
        xs, ys = xs[finite], ys[finite]
    if len(xs) > 1 and not (xs[1:] >= xs[:-1]).all():
        order = np.argsort(xs, kind="stable")
        xs, ys = xs[order], ys[order]
    n = len(xs)
    if n <= PER_BUCKET * buckets:
        return xs, ys
    lo, hi = xs[0], xs[-1]
    # x is sorted, so each bucket is a contiguous slice: its start is where x reaches the bucket's
    # left edge (a binary search per bucket, not a division per point).  Empty buckets are dropped.
    edges = lo + (hi - lo) * (np.arange(buckets, dtype=np.float64) / buckets)
    starts = np.unique(np.searchsorted(xs, edges, side="left"))
    starts = starts[starts < n]
    stops = np.append(starts[1:], n)
    # One argmin and one argmax per bucket: a loop over buckets (at most a few thousand), each a
    # single pass over its slice; no temporary arrays the size of the input.
    lows = np.empty(len(starts), dtype=np.int64)
    highs = np.empty(len(starts), dtype=np.int64)
    for i, (a, b) in enumerate(zip(starts.tolist(), stops.tolist())):
        part = ys[a:b]
        lows[i] = a + int(part.argmin())
        highs[i] = a + int(part.argmax())
    keep = np.unique(np.concatenate((starts, stops - 1, lows, highs)))  # sorted, each point once
    return xs[keep], ys[keep]


def window(x: Array, y: Array, x_min: float | None, x_max: float | None) -> tuple[Array, Array]:
    """The points with ``x_min <= x <= x_max`` (either bound may be None), plus one neighbour each side.

    The neighbours make a zoomed chart's line run to its edges instead of
    stopping at the first point inside.  Returns the points sorted by x.
    """
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64)
    if len(xs) > 1 and not (xs[1:] >= xs[:-1]).all():
        order = np.argsort(xs, kind="stable")
        xs, ys = xs[order], ys[order]
    start = 0 if x_min is None else max(int(np.searchsorted(xs, x_min, side="left")) - 1, 0)
    stop = len(xs) if x_max is None else min(int(np.searchsorted(xs, x_max, side="right")) + 1, len(xs))
    return xs[start:stop], ys[start:stop]
