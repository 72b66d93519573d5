"""Log-linear latency histograms (HdrHistogram style), one int64 row per histogram.

A row is ``int64[ROW]``: ``BUCKETS`` counters, then the count, sum, max and min of every value
recorded. Bucket ``k`` counts values (ns) in ``[bucket_lo(k), bucket_lo(k + 1))``: buckets 0..7
are 0..7 exactly, above that 8 sub-buckets per power of two, so a bucket is at most 12.5% wide
and one ``lzcnt`` finds it. 512 buckets reach 2**66 ns: every int64 fits.

``record`` is the compiled writer (a handful of plain stores: one writer per row, readers
tolerate a row that is a few increments behind). ``percentiles`` is the reader: the value at
rank ``ceil(q * count)``, reported as the upper edge of its bucket clamped to the recorded
[min, max], so one sample reads back exactly and no percentile exceeds the max or undercuts the
min.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from appliance.transport.intrinsics import bit_length

SUB_BITS = 3
BUCKETS = 512
H_COUNT = BUCKETS
H_SUM = BUCKETS + 1
H_MAX = BUCKETS + 2
H_MIN = BUCKETS + 3          # min + 1 (0 = nothing recorded yet)
ROW = BUCKETS + 8            # one row, padded to a whole number of cache lines (4160 B)


@njit(cache=True, nogil=True, _nrt=False, inline='always')
def bucket(d):
    """Bucket of ``d`` >= 0 ns: one lzcnt, no loop (negative values count as 0)."""
    if d < 8:
        return d if d > 0 else 0
    e = bit_length(d)                        # >= 4
    return ((e - 3) << SUB_BITS) | ((d >> (e - 4)) & 7)


@njit(cache=True, nogil=True, _nrt=False, inline='always')
def record(row, d):
    """Add one value ``d`` (ns) to histogram ``row`` (int64[ROW])."""
    if d < 0:
        d = 0
    k = bucket(d)
    if k >= BUCKETS:
        k = BUCKETS - 1
    row[k] += 1
    row[H_COUNT] += 1
    row[H_SUM] += d
    if d > row[H_MAX]:
        row[H_MAX] = d
    m = row[H_MIN]
    if m == 0 or d + 1 < m:
        row[H_MIN] = d + 1


def bucket_lo(k: int) -> int:
    """Smallest value counted in bucket ``k``."""
    if k < 8:
        return k
    e, mant = k // 8 + 3, k % 8
    return (8 + mant) << (e - 4)


def new_row() -> np.ndarray:
    return np.zeros(ROW, np.int64)


def percentiles(row: np.ndarray, qs=(0.5, 0.99, 0.999)) -> dict:
    """q -> value (ns) at rank ceil(q * count), or None when nothing was recorded (see the
    module docstring for the bound it reports)."""
    row = np.asarray(row)
    total = int(row[H_COUNT])
    if total <= 0:
        return {q: None for q in qs}
    counts = row[:BUCKETS]
    c = np.cumsum(counts)
    total = int(c[-1]) or total            # a reader may see buckets a step ahead of the count
    lo_v = int(row[H_MIN]) - 1 if row[H_MIN] > 0 else 0
    hi_v = int(row[H_MAX])
    out = {}
    for q in qs:
        rank = max(1, math.ceil(q * total))
        k = int(np.searchsorted(c, rank))
        v = k if k < 8 else bucket_lo(k + 1) - 1
        out[q] = min(max(v, lo_v), hi_v)
    return out


def summary(row: np.ndarray, qs=(0.5, 0.99, 0.999)) -> dict:
    """count, mean, min, max and the percentiles as a JSON-able dict (ns; None when empty)."""
    row = np.asarray(row)
    n = int(row[H_COUNT])
    p = percentiles(row, qs)
    out = {"count": n, "mean": (int(row[H_SUM]) / n) if n else None,
           "min": int(row[H_MIN]) - 1 if row[H_MIN] > 0 else None,
           "max": int(row[H_MAX]) if n else None}
    for q in qs:
        out[f"p{_qname(q)}"] = p[q]
    return out


def _qname(q: float) -> str:
    s = f"{q * 100:.10g}"
    return s.replace(".", "")


def merge(rows) -> np.ndarray:
    """One row holding every value of ``rows`` (e.g. the same hop of several processes)."""
    out = new_row()
    for r in rows:
        r = np.asarray(r)
        out[:BUCKETS] += r[:BUCKETS]
        out[H_COUNT] += r[H_COUNT]
        out[H_SUM] += r[H_SUM]
        out[H_MAX] = max(out[H_MAX], r[H_MAX])
        if r[H_MIN] > 0 and (out[H_MIN] == 0 or r[H_MIN] < out[H_MIN]):
            out[H_MIN] = r[H_MIN]
    return out
