"""Processes for the cross-process ring tests (run under the multiprocessing 'spawn' context)."""
from __future__ import annotations

import os
import signal
import time

import numpy as np
from numba import njit

from appliance.transport import ring
from appliance.transport.intrinsics import cpu_pause, rdtsc

GOLD = np.uint64(0x9E3779B97F4A7C15)
CHECKED_WORDS = (1, 2, 4, 5, 6, 7)   # word 3 is publish_tsc, stamped by the ring

# consumer result indices
R_READ, R_TORN, R_GAPS, R_JUMPS, R_LAST, R_BACKWARDS, R_TIMEOUT = range(7)


@njit(cache=True, nogil=True)
def fill(rec, seq):
    w = rec.view(np.uint64)
    for k in range(1, 8):
        w[k] = np.uint64(seq) * GOLD + np.uint64(k)


@njit(cache=True, nogil=True)
def produce(hdr, data, n, rec):
    for s in range(n):
        fill(rec, s)
        ring.publish(hdr, data, rec)


@njit(cache=True, nogil=True)
def consume(hdr, data, cur, out, n_total, slow_every, slow_spins, timeout_ticks):
    res = np.zeros(8, np.int64)
    expected = np.int64(cur[ring.CUR_POS])
    w = out.view(np.uint64)
    t0 = rdtsc()
    while True:
        if ring.poll(hdr, data, cur, out) == 0:
            if rdtsc() - t0 > timeout_ticks:
                res[R_TIMEOUT] = 1
                break
            continue
        seq = np.int64(w[0] // np.uint64(2)) - 1
        for k in (1, 2, 4, 5, 6, 7):
            if w[k] != np.uint64(seq) * GOLD + np.uint64(k):
                res[R_TORN] += 1
                break
        if seq < expected:
            res[R_BACKWARDS] += 1
        elif seq > expected:
            res[R_GAPS] += seq - expected
            res[R_JUMPS] += 1
        expected = seq + 1
        res[R_READ] += 1
        res[R_LAST] = seq
        if slow_every > 0 and res[R_READ] % slow_every == 0:
            for _ in range(slow_spins):
                cpu_pause()
        if seq == n_total - 1:
            break
    return res


def producer_main(name, shm_dir, capacity, n, ready, go):
    os.environ["APPLIANCE_SHM_DIR"] = shm_dir
    w = ring.RingWriter.create(name, 64, capacity)
    rec = np.zeros(64, np.uint8)
    produce(w.hdr, w.data, 1, rec)          # compile before the race starts (one record, seq 0)
    ready.set()
    go.wait(60)
    produce_from(w.hdr, w.data, 1, n, rec)
    w.close()


@njit(cache=True, nogil=True)
def produce_from(hdr, data, start, n, rec):
    for s in range(start, n):
        fill(rec, s)
        ring.publish(hdr, data, rec)


def consumer_main(name, shm_dir, n_total, slow_every, slow_spins, ready, go, results, key):
    os.environ["APPLIANCE_SHM_DIR"] = shm_dir
    r = ring.RingReader.attach(name, consumer=f"fuzz{key}", start="oldest")
    out = np.zeros(64, np.uint8)
    lost0 = r.lost
    consume(r.hdr, r.data, r.cur.copy(), out, 0, 0, 0, 1)   # compile on a throwaway cursor
    ready.set()
    go.wait(60)
    res = consume(r.hdr, r.data, r.cur, out, n_total, slow_every, slow_spins, int(30 * 3e9))
    results[key] = [int(x) for x in res] + [r.lost - lost0, r.position]
    r.close()


def writer_then_die(name, shm_dir, capacity, n, published, mode):
    """Publish n records, report, then die by SIGKILL (mode 'kill') or stay alive ('hold')."""
    os.environ["APPLIANCE_SHM_DIR"] = shm_dir
    w = ring.RingWriter.create(name, 64, capacity)
    rec = np.zeros(64, np.uint8)
    produce(w.hdr, w.data, n, rec)
    published.set()
    if mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(120)
