"""Compiled L2 order books: plain arrays, best level at the end, O(1) best bid/offer.

Layout for ``B`` books of capacity ``CAP`` levels per side (all int64)::

    px[B, 2, CAP]    price of each level, in ticks
    qty[B, 2, CAP]   quantity of each level, in lots (always > 0 for a live level)
    n[B, 2]          number of live levels of each side

Side index 0 = bids, 1 = asks. Each side is sorted from the WORST level at index 0 to the BEST
level at index ``n[b, s] - 1``::

    bids:  px[b, 0, 0] < px[b, 0, 1] < ... < px[b, 0, n-1]  (= best bid, the highest)
    asks:  px[b, 1, 0] > px[b, 1, 1] > ... > px[b, 1, n-1]  (= best ask, the lowest)

Most updates land near the top of the book, so inserting or removing a level there moves only
the few levels above it. The search for a price starts at the top end: a linear scan over the
best ``LINEAR_LEVELS`` levels, then a binary search over the rest.

A full side has defined behaviour: a new level worse than the worst level is dropped
(``DROPPED_FULL``, the book stays a correct top-``CAP`` view), a new level better than the worst
evicts the worst level (``EVICTED``). A consumer that cares about deep levels sizes ``CAP`` for
them; the book never silently corrupts its order.

Return codes of ``update`` (compiled code never raises; ``check_update`` turns codes into
exceptions for Python callers)::

    OK            an existing level's quantity changed
    ADDED         a new level was inserted
    REMOVED       q == 0 removed an existing level
    MISSING       q == 0 for a level that is not in the book (nothing changed)
    DROPPED_FULL  side full, the new level is worse than the worst: not stored
    EVICTED       side full, the new level was stored and the worst level evicted
    BAD_ARG       negative quantity, non-positive price, bad side or book index: nothing changed

All kernels are ``@njit(cache=True, nogil=True)`` free functions over the arrays, allocate
nothing and are compiled without NRT (no reference counting on the hot path). ``update`` (and its
search) is ``forceinline=True``: LLVM inlines it into the md handlers that call it once per
level update, where a call would pass the three arrays as ~30 argument words. Levels move with
``memmove`` (``intrinsics.move_bytes``; the arrays are C-contiguous, as ``new_books`` makes them).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from appliance import jit
from appliance.transport.intrinsics import move_bytes

BIDS = 0
ASKS = 1

OK = 0
ADDED = 1
REMOVED = 2
MISSING = 3
DROPPED_FULL = 4
EVICTED = 5
BAD_ARG = -1

RC_NAMES = {OK: "OK", ADDED: "ADDED", REMOVED: "REMOVED", MISSING: "MISSING",
            DROPPED_FULL: "DROPPED_FULL", EVICTED: "EVICTED", BAD_ARG: "BAD_ARG"}

# levels scanned linearly from the top before switching to a binary search
LINEAR_LEVELS = 8


class BookError(ValueError):
    """An update was rejected by the book (bad argument)."""


def new_books(n_books: int, cap: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Allocate ``n_books`` empty books of ``cap`` levels per side: ``(px, qty, n)``."""
    if n_books < 1 or cap < 1:
        raise ValueError(f"new_books: need n_books >= 1 and cap >= 1, got {n_books}, {cap}")
    px = np.zeros((n_books, 2, cap), dtype=np.int64)
    qty = np.zeros((n_books, 2, cap), dtype=np.int64)
    n = np.zeros((n_books, 2), dtype=np.int64)
    return px, qty, n


@njit(cache=True, nogil=True, _nrt=False)
def clear(px, qty, n, b):
    """Empty both sides of book ``b`` (levels beyond ``n`` are never read, so only n is reset)."""
    n[b, 0] = 0
    n[b, 1] = 0


@njit(**jit.HELPER)
def _lower(px, b, s, cnt, price):
    """Index of the first level whose price is not worse than ``price`` ("key" >= price's key,
    key = price for bids, -price for asks), searching from the top end. Returns ``cnt`` if every
    level is worse."""
    sgn = 1 if s == 0 else -1
    k = sgn * price
    i = cnt - 1
    stop = cnt - LINEAR_LEVELS
    if stop < 0:
        stop = 0
    # linear scan over the best levels: find the first from the top whose key < k
    while i >= stop:
        if sgn * px[b, s, i] < k:
            return i + 1
        i -= 1
    if i < 0:
        return 0
    # binary search over [0, i] (all keys there are <= the scanned ones); lower bound of k
    lo = 0
    hi = i + 1
    while lo < hi:
        mid = (lo + hi) >> 1
        if sgn * px[b, s, mid] < k:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(**jit.HELPER)
def _shift(px, qty, b, s, cap, src, dst, count):
    """Move ``count`` levels of side ``s`` of book ``b`` from index ``src`` to ``dst`` (ranges
    may overlap) in both arrays: one memmove each (a deep insert moves the whole side)."""
    if count <= 0:
        return
    row = (b * 2 + s) * cap
    move_bytes(px, (row + dst) * 8, (row + src) * 8, count * 8)
    move_bytes(qty, (row + dst) * 8, (row + src) * 8, count * 8)


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def update(px, qty, n, b, side_idx, price, q):
    """Set the quantity at ``price`` on side ``side_idx`` of book ``b`` (``q == 0`` deletes).

    Returns one of OK, ADDED, REMOVED, MISSING, DROPPED_FULL, EVICTED, BAD_ARG."""
    if side_idx < 0 or side_idx > 1 or b < 0 or b >= n.shape[0] or q < 0 or price <= 0:
        return BAD_ARG
    s = side_idx
    cap = px.shape[2]
    cnt = n[b, s]
    pos = _lower(px, b, s, cnt, price)
    if pos < cnt and px[b, s, pos] == price:
        if q != 0:
            qty[b, s, pos] = q
            return OK
        # remove: levels above pos move down one
        _shift(px, qty, b, s, cap, pos + 1, pos, cnt - 1 - pos)
        n[b, s] = cnt - 1
        return REMOVED
    if q == 0:
        return MISSING
    if cnt < cap:
        # insert at pos: levels from pos up move up one
        _shift(px, qty, b, s, cap, pos, pos + 1, cnt - pos)
        px[b, s, pos] = price
        qty[b, s, pos] = q
        n[b, s] = cnt + 1
        return ADDED
    if pos == 0:
        return DROPPED_FULL
    # full and better than the worst: drop index 0, shift [1, pos) down, store at pos - 1
    _shift(px, qty, b, s, cap, np.int64(1), np.int64(0), pos - 1)
    px[b, s, pos - 1] = price
    qty[b, s, pos - 1] = q
    return EVICTED


@njit(cache=True, nogil=True, _nrt=False)
def best(px, qty, n, b, side_idx):
    """``(price, qty)`` of the best level of a side, ``(0, 0)`` if the side is empty."""
    cnt = n[b, side_idx]
    if cnt <= 0:
        return 0, 0
    return px[b, side_idx, cnt - 1], qty[b, side_idx, cnt - 1]


@njit(cache=True, nogil=True, _nrt=False)
def level(px, qty, n, b, side_idx, k):
    """``(price, qty)`` of the k-th level from the top (k = 0 is the best), ``(0, 0)`` if the
    side has no such level."""
    cnt = n[b, side_idx]
    if k < 0 or k >= cnt:
        return 0, 0
    i = cnt - 1 - k
    return px[b, side_idx, i], qty[b, side_idx, i]


@njit(cache=True, nogil=True, _nrt=False)
def depth(n, b, side_idx):
    """Number of live levels on a side."""
    return n[b, side_idx]


@njit(cache=True, nogil=True, _nrt=False)
def is_crossed(px, n, b):
    """True when both sides are non-empty and the best bid >= the best ask."""
    nb = n[b, 0]
    na = n[b, 1]
    if nb <= 0 or na <= 0:
        return False
    return px[b, 0, nb - 1] >= px[b, 1, na - 1]


@njit(cache=True, nogil=True, _nrt=False)
def qty_at(px, qty, n, b, side_idx, price):
    """Quantity at ``price`` on a side, 0 if there is no such level."""
    cnt = n[b, side_idx]
    pos = _lower(px, b, side_idx, cnt, price)
    if pos < cnt and px[b, side_idx, pos] == price:
        return qty[b, side_idx, pos]
    return 0


@njit(cache=True, nogil=True, _nrt=False)
def top(px, qty, n, b, side_idx, out_px, out_qty):
    """Copy up to ``len(out_px)`` levels of a side, best first; returns how many were copied."""
    cnt = n[b, side_idx]
    m = out_px.shape[0]
    if cnt < m:
        m = cnt
    for k in range(m):
        out_px[k] = px[b, side_idx, cnt - 1 - k]
        out_qty[k] = qty[b, side_idx, cnt - 1 - k]
    return m


def check_update(px, qty, n, b: int, side_idx: int, price: int, q: int) -> int:
    """Python wrapper around ``update`` that raises ``BookError`` on a bad argument."""
    rc = update(px, qty, n, b, side_idx, price, q)
    if rc == BAD_ARG:
        raise BookError(f"book {b}: rejected update side={side_idx} price={price} qty={q} "
                        f"(need side 0/1, 0 <= book < {n.shape[0]}, price > 0, qty >= 0)")
    return rc


def side_levels(px, qty, n, b: int, side_idx: int) -> list[tuple[int, int]]:
    """All levels of a side as Python ``(price, qty)`` tuples, best first (tests, tools)."""
    cnt = int(n[b, side_idx])
    return [(int(px[b, side_idx, i]), int(qty[b, side_idx, i])) for i in range(cnt - 1, -1, -1)]
