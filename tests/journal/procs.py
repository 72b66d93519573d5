"""Helpers for the journal tests: records whose payload is a function of their sequence, and a
ring producer process (run under the multiprocessing 'spawn' context)."""
from __future__ import annotations

import os
import time

import numpy as np
from numba import njit

from appliance.transport import records as R
from appliance.transport import ring

GOLD = np.uint64(0x9E3779B97F4A7C15)
PAYLOAD_WORDS = (2, 4, 5, 6, 7)     # word 0 is ver, 1 rtype/venue/flags/instrument, 3 publish_tsc


def word1(seq):
    """rtype TRADE, venue SIM, instrument seq % 7 (vectorised over seq arrays)."""
    seq = np.asarray(seq, np.uint64)
    return (np.uint64(R.RT_TRADE) | (np.uint64(R.VENUE_SIM) << np.uint64(8))
            | ((seq % np.uint64(7)) << np.uint64(32)))


def make_rows(first: int, n: int, record_size: int = 64) -> np.ndarray:
    """n published records with sequences first..first+n-1 (uint8[n, record_size])."""
    seq = np.arange(first, first + n, dtype=np.uint64)
    rows = np.zeros((n, record_size), np.uint8)
    w = rows.view(np.uint64)
    w[:, 0] = seq * np.uint64(2) + np.uint64(2)
    w[:, 1] = word1(seq)
    for k in PAYLOAD_WORDS:
        w[:, k] = seq * GOLD + np.uint64(k)
    return rows


def check_rows(rows: np.ndarray) -> np.ndarray:
    """Sequences of rows, after asserting each row's payload matches its sequence."""
    w = np.ascontiguousarray(rows).view(np.uint64)
    seq = w[:, 0] // np.uint64(2) - np.uint64(1)
    assert (w[:, 1] == word1(seq)).all(), "record header does not match its sequence"
    for k in PAYLOAD_WORDS:
        assert (w[:, k] == seq * GOLD + np.uint64(k)).all(), f"word {k} does not match its sequence"
    return seq


@njit(cache=True, nogil=True)
def produce(hdr, data, rec, start, stop):
    w = rec.view(np.uint64)
    for s in range(start, stop):
        q = np.uint64(s)
        w[1] = np.uint64(R.RT_TRADE) | (np.uint64(R.VENUE_SIM) << np.uint64(8)) | \
            ((q % np.uint64(7)) << np.uint64(32))
        w[2] = q * GOLD + np.uint64(2)
        w[4] = q * GOLD + np.uint64(4)
        w[5] = q * GOLD + np.uint64(5)
        w[6] = q * GOLD + np.uint64(6)
        w[7] = q * GOLD + np.uint64(7)
        ring.publish(hdr, data, rec)


def producer_main(name, shm_dir, capacity, n, burst, pause_s, ready, go):
    """Create ring ``name`` and publish records 0..n-1 in bursts of ``burst`` with ``pause_s``
    between bursts (pause_s = 0: flat out)."""
    os.environ["APPLIANCE_SHM_DIR"] = shm_dir
    w = ring.RingWriter.create(name, 64, capacity)
    rec = np.zeros(64, np.uint8)
    produce(w.hdr, w.data, rec, 0, 0)              # compile before the race
    ready.set()
    go.wait(120)
    s = 0
    while s < n:
        e = min(n, s + burst)
        produce(w.hdr, w.data, rec, s, e)
        s = e
        if pause_s:
            time.sleep(pause_s)
    w.close()
