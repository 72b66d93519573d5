"""``appliance demo``: a live transport demo across two processes, with latency figures.

A producer process publishes L2 update records into a shared-memory ring at a chosen rate; the
demo process (a second core where there is one) busy-polls it and measures, for every record,
origin -> receive and publish -> receive latency from the TSC stamps the records carry; then it
prints percentiles and what ``appliance shm ls`` would show. Runs on any Linux box.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import tempfile
import time

import numpy as np
from numba import njit

from appliance.actor import pin
from appliance.transport import cli as shm_cli
from appliance.transport import clock, ring
from appliance.transport import records as R
from appliance.transport.intrinsics import cpu_pause, rdtsc, rdtscp


@njit(cache=True, nogil=True)
def _produce(hdr, data, n, gap_ticks, seed):
    px = 6_000_000 + seed
    nxt = rdtsc()
    for i in range(n):
        while rdtsc() < nxt:
            pass
        nxt += gap_ticks
        slot = ring.begin_write(hdr, data)
        rec = data[slot].view(R.L2_UPDATE)
        rec[0].rtype = R.RT_L2_UPDATE
        rec[0].venue = R.VENUE_SIM
        rec[0].instrument = 0
        rec[0].origin_tsc = rdtsc()
        rec[0].price = px + (i * 7919) % 200 - 100
        rec[0].qty = 1 + i % 50
        rec[0].side = R.SIDE_BUY if i & 1 else R.SIDE_SELL
        rec[0].venue_seq = i
        ring.end_write(hdr, data, slot)


@njit(cache=True, nogil=True)
def _consume(hdr, data, cur, out, n, lat_origin, lat_publish):
    got = 0
    lost0 = cur[ring.CUR_LOST]
    w = out.view(np.uint64)
    while got + np.int64(cur[ring.CUR_LOST] - lost0) < n:
        if ring.poll(hdr, data, cur, out):
            now = np.int64(rdtscp())          # waits for the record's loads: never before them
            lat_origin[got] = now - np.int64(w[2])
            lat_publish[got] = now - np.int64(w[3])
            got += 1
        else:
            cpu_pause()
    return got


def _producer(shm_dir, core, n, rate, ready, go):
    os.environ["APPLIANCE_SHM_DIR"] = shm_dir
    pin(core)
    cal = clock.calibration()
    w = ring.RingWriter.create("md.demo", 64, 1 << 16)
    _produce(w.hdr, w.data, 0, 0, 0)
    ready.set()
    go.wait(60)
    _produce(w.hdr, w.data, n, int(cal[clock.C_HZ] / rate), 0)
    time.sleep(0.5)
    w.close()


def run(n: int, rate: float) -> int:
    cal = clock.calibration()
    cpus = sorted(os.sched_getaffinity(0))
    cores = (cpus[0], cpus[1]) if len(cpus) > 1 else (None, None)
    shm_dir = tempfile.mkdtemp(prefix="demo-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    os.environ["APPLIANCE_SHM_DIR"] = shm_dir
    ctx = mp.get_context("spawn")
    ready, go = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_producer, args=(shm_dir, cores[1], n, rate, ready, go))
    p.start()
    try:
        pin(cores[0])
        if not ready.wait(120):
            print("producer did not start")
            return 1
        r = ring.RingReader.attach("md.demo", "demo", start="latest")
        out = np.zeros(64, np.uint8)
        lo, lp = np.zeros(n, np.int64), np.zeros(n, np.int64)
        _consume(r.hdr, r.data, r.cur.copy(), out, 0, lo, lp)
        print(f"{clock.describe(cal)}; producer on core {cores[1]}, consumer on core {cores[0]}; "
              f"{n} L2 records at {rate:,.0f}/s through a shared-memory seqlock ring")
        t0 = time.time()
        go.set()
        got = _consume(r.hdr, r.data, r.cur, out, n, lo, lp)
        dt = time.time() - t0
        info = shm_cli.collect()
        print(f"received {got} records in {dt:.2f} s, lost to lapping: {r.lost}")
        for name, arr in (("origin -> consumer", lo[:got]), ("publish -> consumer", lp[:got])):
            ns = np.array([clock.tsc_to_ns_py(cal, int(x)) for x in np.percentile(arr, [50, 99, 99.9]).astype(np.int64)])
            print(f"  {name:<22} p50 {ns[0]:>8,} ns   p99 {ns[1]:>8,} ns   p99.9 {ns[2]:>10,} ns")
        for reg in info["regions"]:
            print(f"  region {reg['name']}: {reg['kind']} on {reg['backing']}, head {reg.get('head')}, "
                  f"writer pid {reg['writer_pid']}, consumers "
                  f"{[(c['name'], c['lag'], c['lost']) for c in reg.get('consumers', [])]}")
        r.close()
        return 0
    finally:
        p.join(30)
        shutil.rmtree(shm_dir, ignore_errors=True)
