"""Prefetch hints over arrays, for compiled code: bring cache lines in for writing ahead of the
hot path that writes them (``prefetchw``: never faults, nothing waits on it, nothing changes).
Used by the engine's order path (``kernels._warm_order_path``), the FIX gateway's
(``fix.gateway.warm_path``) and the one-process loop."""
from __future__ import annotations

from numba import njit

from appliance import jit
from appliance.transport.intrinsics import prefetch_write


@njit(**jit.HELPER)
def lines(arr, off, end):
    """The cache lines of arr's bytes [off, end), clipped to the array."""
    size = arr.size * arr.itemsize
    if end > size:
        end = size
    off -= off & 63
    while off < end:
        prefetch_write(arr, off)
        off += 64


@njit(**jit.HELPER)
def row(arr, i):
    """The cache lines of row ``i`` of a record / 2-D array (nothing for a row out of range)."""
    if 0 <= i < arr.shape[0]:
        lines(arr, i * arr.strides[0], (i + 1) * arr.strides[0])
