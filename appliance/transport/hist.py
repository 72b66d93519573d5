"""Log-linear latency histograms (HdrHistogram style) on a plain int64 array.

Buckets: values 0..7 ns have a bucket each; above that every power of two is split into
``2**SUB_BITS`` = 8 equal sub-buckets, so a bucket is at most 12.5% wide::

    bucket(d) = d                                   d < 8
              = (e - 3) * 8 + ((d >> (e - 4)) & 7)  e = bit_length(d) >= 4

    k:      0 1 ... 7 | 8  9 ... 15 | 16 17 ... 23 | ...
    lo(k):  0 1 ... 7 | 8  9 ... 15 | 16 18 ... 30 | 32 36 ...

``BUCKETS`` = 512 covers every non-negative int64. A histogram is ``np.zeros(BUCKETS, np.int64)``
(or a row of a larger array in shared memory); writers call :func:`add` (compiled, one ``lzcnt``,
no loop), readers call :func:`percentiles`.

Percentiles use the nearest rank: the q-quantile of n samples is the ``ceil(q * n)``-th smallest
(at least the first), so it is a value that was really observed up to the bucket width. The
reported value is the upper edge of that sample's bucket (never below the sample, at most 12.5%
above it), clipped to the largest value recorded when the caller knows it (``max_value``): with
one sample every percentile is that sample exactly; the top percentile of any set is its exact
maximum.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from appliance.transport.intrinsics import bit_length

SUB_BITS = 3
BUCKETS = 512


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def bucket(d):
    """Bucket of value ``d`` (>= 0)."""
    if d < 8:
        return d if d > 0 else 0
    e = bit_length(d)                        # >= 4
    return ((e - 3) << SUB_BITS) | ((d >> (e - 4)) & 7)


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def add(hist, d):
    """Count value ``d`` (negative counts as 0) in ``hist``; returns its bucket."""
    if d < 0:
        d = 0
    k = bucket(d)
    if k >= hist.shape[0]:
        k = hist.shape[0] - 1
    hist[k] += 1
    return k


def bucket_lo(k: int) -> int:
    """Smallest value counted in bucket ``k``."""
    if k < 8:
        return k
    e, mant = k // 8 + 3, k % 8
    return (8 + mant) << (e - 4)


def bucket_hi(k: int) -> int:
    """Largest value counted in bucket ``k``."""
    return k if k < 8 else bucket_lo(k + 1) - 1


def rank(q: float, n: int) -> int:
    """Nearest rank (1-based) of quantile ``q`` in ``n`` samples: ``ceil(q * n)``, at least 1."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile {q} is not in [0, 1]")
    return min(n, max(1, math.ceil(round(q * n, 9))))


def percentiles(hist: np.ndarray, qs=(0.5, 0.99), max_value: int | None = None) -> dict:
    """``{q: value}`` for each quantile ``q`` (see the module docstring); every value is None
    when the histogram is empty. ``max_value``: the largest value recorded, if known."""
    counts = np.asarray(hist, dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        return {q: None for q in qs}
    c = np.cumsum(counts)
    out = {}
    for q in qs:
        k = int(np.searchsorted(c, rank(q, total), side="left"))
        v = bucket_hi(k)
        if max_value is not None and 0 <= max_value < v:
            v = int(max_value)
        out[q] = v
    return out
