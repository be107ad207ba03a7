"""The min/max envelope that `test-tube serve` draws long metrics with."""

from __future__ import annotations

import numpy as np
import pytest

from test_tube._store._downsample import PER_BUCKET, envelope


def test_a_single_spike_in_a_million_points_survives() -> None:
    """One high and one low outlier among 10^6 noisy points are both in the output."""
    rng = np.random.default_rng(1)
    x = np.arange(1_000_000, dtype=np.float64)
    y = rng.normal(size=x.size)
    y[123_457] = 1e6
    y[876_543] = -1e6
    xs, ys = envelope(x, y, 800)
    assert len(xs) <= PER_BUCKET * 800
    assert (xs[ys == 1e6] == 123_457).all() and (ys == 1e6).sum() == 1
    assert (xs[ys == -1e6] == 876_543).all() and (ys == -1e6).sum() == 1


def test_output_is_bounded_sorted_and_keeps_ends_and_extremes_of_each_bucket() -> None:
    """At most 4 points per bucket, in x order, with the first and last point and the global min and max."""
    rng = np.random.default_rng(2)
    x = np.sort(rng.uniform(0, 1000, size=200_000))
    y = np.cumsum(rng.normal(size=x.size))
    xs, ys = envelope(x, y, 300)
    assert 300 <= len(xs) <= PER_BUCKET * 300
    assert (np.diff(xs) >= 0).all()
    assert (xs[0], ys[0]) == (x[0], y[0]) and (xs[-1], ys[-1]) == (x[-1], y[-1])
    assert ys.min() == y.min() and ys.max() == y.max()
    # every output point is an input point
    index = np.searchsorted(x, xs)
    assert (x[index] == xs).all() and (y[index] == ys).all()
    # and each bucket's min and max are there
    bucket = np.minimum(((x - x[0]) * (300 / (x[-1] - x[0]))).astype(int), 299)
    out_bucket = np.minimum(((xs - x[0]) * (300 / (x[-1] - x[0]))).astype(int), 299)
    for b in (0, 17, 150, 299):
        assert ys[out_bucket == b].min() == y[bucket == b].min()
        assert ys[out_bucket == b].max() == y[bucket == b].max()


def test_short_lines_come_back_unchanged() -> None:
    """No more than 4 × buckets points: all of them, exactly."""
    x = np.arange(400.0)
    y = np.sin(x)
    xs, ys = envelope(x, y, 100)
    assert (xs == x).all() and (ys == y).all()


def test_nan_and_inf_are_left_out_and_unsorted_x_is_sorted() -> None:
    """Points a chart cannot place are dropped; x out of order is put in order."""
    x = np.array([3.0, 1.0, 2.0, 4.0, np.nan])
    y = np.array([30.0, 10.0, np.inf, np.nan, 5.0])
    xs, ys = envelope(x, y, 10)
    assert xs.tolist() == [1.0, 3.0] and ys.tolist() == [10.0, 30.0]


def test_constant_x_and_constant_y() -> None:
    """Degenerate lines (one x, one y) give a few points, not an error."""
    xs, ys = envelope(np.zeros(10_000), np.arange(10_000.0), 50)
    assert len(xs) <= PER_BUCKET and ys.min() == 0 and ys.max() == 9_999
    xs, ys = envelope(np.arange(10_000.0), np.ones(10_000), 50)
    assert len(xs) <= PER_BUCKET * 50 and (ys == 1).all() and xs[-1] == 9_999


def test_bad_arguments() -> None:
    """Zero buckets or mismatched shapes raise ValueError."""
    with pytest.raises(ValueError, match="buckets"):
        envelope(np.arange(3.0), np.arange(3.0), 0)
    with pytest.raises(ValueError, match="shapes"):
        envelope(np.arange(3.0), np.arange(4.0), 5)


def test_window_keeps_the_range_and_one_neighbour_each_side() -> None:
    """A zoomed chart gets the points in its x range and the nearest one outside on each side."""
    from test_tube._store._downsample import window

    x = np.arange(10.0)
    xs, ys = window(x, x * 2, 3.5, 6.0)
    assert xs.tolist() == [3.0, 4.0, 5.0, 6.0, 7.0] and ys.tolist() == [6.0, 8.0, 10.0, 12.0, 14.0]
    assert window(x, x, None, 1.0)[0].tolist() == [0.0, 1.0, 2.0]
    assert window(x, x, 8.5, None)[0].tolist() == [8.0, 9.0]
