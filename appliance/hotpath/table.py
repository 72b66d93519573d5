"""Seqlock slot table: the latest value per key (e.g. desired quotes per strategy and instrument).

Unlike a ring there is no history: a writer overwrites a key's slot, a reader gets the newest
complete value or retries. Each slot is ``8 + value_size`` bytes rounded up to whole cache lines,
so two keys never share a line::

    slot k:  word 0  ver: 2n+1 while the n-th write of key k is in progress, 2n+2 when done
             bytes 8..  the value

One writer per key (different keys may have different writers). ``read`` returns the version it
read (0 = never written), so a reader can tell an update from a re-read of the same value.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from appliance.hotpath import shm
from appliance.hotpath.intrinsics import (fence_acquire, fence_release, load_acquire,
                                          load_relaxed, store_relaxed, store_release)

DATA_OFFSET = 4096
MAX_SPINS = 1 << 20


def slot_size(value_size: int) -> int:
    return (8 + value_size + 63) // 64 * 64


@njit(cache=True, nogil=True)
def write(arr, key, val):
    """Store ``val`` (uint8[n], n <= slot size - 8, multiple of 8) as key's latest value."""
    ss = np.uint64(arr.shape[1])
    off = np.uint64(key) * ss
    v = load_relaxed(arr, off)
    store_relaxed(arr, off, v + np.uint64(1))
    fence_release()
    w = np.uint64(0)
    n = np.uint64(val.shape[0])
    while w < n:
        store_relaxed(arr, off + np.uint64(8) + w, load_relaxed(val, w))
        w += np.uint64(8)
    store_release(arr, off, v + np.uint64(2))
    return v + np.uint64(2)


@njit(cache=True, nogil=True)
def read(arr, key, out):
    """Copy key's latest complete value into ``out``; returns its version (0 = never written,
    or the writer stayed mid-write for MAX_SPINS retries, i.e. it died mid-write)."""
    ss = np.uint64(arr.shape[1])
    off = np.uint64(key) * ss
    n = np.uint64(out.shape[0])
    for _ in range(MAX_SPINS):
        v1 = load_acquire(arr, off)
        if v1 & np.uint64(1):
            continue
        w = np.uint64(0)
        while w < n:
            store_relaxed(out, w, load_relaxed(arr, off + np.uint64(8) + w))
            w += np.uint64(8)
        fence_acquire()
        if load_relaxed(arr, off) == v1:
            return v1
    return np.uint64(0)


@njit(cache=True, nogil=True)
def version(arr, key):
    """Current version of a key without reading it (cheap change detection)."""
    return load_acquire(arr, np.uint64(key) * np.uint64(arr.shape[1]))


class SlotTable:
    """A slot table region. ``arr`` is uint8 (n_slots, slot_size) for the numba functions."""

    def __init__(self, region: shm.Region):
        self.region = region
        self.arr = region.data_view()
        self.value_size = int(self.arr.shape[1]) - 8

    @classmethod
    def create(cls, name: str, value_size: int, n_slots: int, shm_dir=None) -> "SlotTable":
        if value_size <= 0 or value_size % 8 or n_slots <= 0:
            raise ValueError("value_size must be a positive multiple of 8 and n_slots positive")
        return cls(shm.create(name, shm.KIND_TABLE, slot_size(value_size), n_slots, DATA_OFFSET, shm_dir))

    @classmethod
    def attach(cls, name: str, shm_dir=None) -> "SlotTable":
        return cls(shm.attach(name, shm.KIND_TABLE, shm_dir))

    @staticmethod
    def local(value_size: int, n_slots: int) -> np.ndarray:
        """A table in process memory: the ``arr`` to pass to read/write."""
        return np.zeros((n_slots, slot_size(value_size)), np.uint8)

    def close(self) -> None:
        self.arr = None
        self.region.close()
