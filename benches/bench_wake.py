"""``appliance bench wake [--json]``: what a ring hop costs when its consumer sleeps between
records (the ``backoff`` wait of a shared host, as ``appliance sim`` runs), with the rings'
doorbell (transport/ring.py: the producer's notify ends the consumer's futex_waitv) against the
plain back-off nanosleep, in the same run.

A producer thread publishes one record every ``--pace-us`` and notifies; a consumer thread polls
the ring with the back-off wait (``--spins``, ``--min-us`` .. ``--max-us``, the sim's defaults)
and, for every record, takes publish TSC -> read TSC. Four runs: doorbell and nanosleep, with the
consumer on the other core and on the producer's core. Both loops are compiled (nogil threads);
the cores' TSCs are one clock.
"""
from __future__ import annotations

import argparse
import json
import os
import threading
import time

import numpy as np
from numba import njit

from appliance.actor import pin
from appliance.transport import clock, records, ring, wait
from appliance.transport.intrinsics import load_relaxed, rdtsc


@njit(cache=True, nogil=True)
def _consume(hdr, data, cur, out, params, state, bells, n, use_bells, hops, deadline):
    k = 0
    while k < n:
        if ring.poll(hdr, data, cur, out) == 1:
            t = np.int64(rdtsc())
            hops[k] = t - np.int64(load_relaxed(out, np.uint64(records.PUBLISH_TSC_OFF)))
            k += 1
            wait.reset(state)
        elif np.int64(rdtsc()) > deadline:
            return k
        elif use_bells:
            ring.idle_on(params, state, hdr, cur, bells)
        else:
            wait.idle(params, state)
    return k


@njit(cache=True, nogil=True)
def _produce(hdr, data, rec, n, pace):
    nxt = np.int64(rdtsc()) + pace
    for _ in range(n):
        while np.int64(rdtsc()) < nxt:
            pass
        ring.publish(hdr, data, rec)
        ring.notify(hdr)
        nxt += pace


def hop(cal, use_bells: bool, n: int, pace_us: float, spins: int, min_us: float, max_us: float,
        producer_core, consumer_core) -> dict:
    """One run: p50 / p99 of publish -> read (ns) and the consumer's wait counters."""
    hdr, data = ring.local_ring(records.MD_RECORD_SIZE, 1024)
    cur = ring.local_cursor(hdr)
    out = np.zeros(records.MD_RECORD_SIZE, np.uint8)
    rec = np.zeros(records.MD_RECORD_SIZE, np.uint8)
    params = wait.make("backoff", None, spins, int(min_us * 1e3), int(max_us * 1e3))
    state = wait.new_state()
    bells = ring.bell_rows([hdr])
    hops = np.zeros(n, np.int64)
    hz = float(cal[clock.C_HZ])
    deadline = int(clock.now_tsc(cal)) + int((n * pace_us * 1e-6 + 30.0) * hz)
    got = []

    def consumer():
        pin(consumer_core)
        got.append(_consume(hdr, data, cur, out, params, state, bells, n, use_bells, hops,
                            deadline))

    before = os.sched_getaffinity(0)
    t = threading.Thread(target=consumer, daemon=True, name="wake-consumer")
    t.start()
    pin(producer_core)
    time.sleep(0.05)
    try:
        _produce(hdr, data, rec, n, int(pace_us * 1e-6 * hz))
    finally:
        os.sched_setaffinity(0, before)
        t.join(60)
    k = got[0] if got else 0
    if k < n:
        raise SystemExit(f"bench wake: the consumer read {k} of {n} records")
    ns = hops[n // 20:] * 1e9 / hz                  # the first 5%: the threads settling
    return {"p50_ns": round(float(np.percentile(ns, 50)), 1),
            "p99_ns": round(float(np.percentile(ns, 99)), 1), **wait.counters(state)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="appliance bench wake", description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--records", type=int, default=2000, help="records per run")
    ap.add_argument("--pace-us", type=float, default=1000.0, help="time between records")
    ap.add_argument("--spins", type=int, default=200, help="back-off: polls before sleeping")
    ap.add_argument("--min-us", type=float, default=20.0, help="back-off: first sleep")
    ap.add_argument("--max-us", type=float, default=200.0, help="back-off: longest sleep")
    a = ap.parse_args(argv)
    if a.records < 100 or a.pace_us <= 0 or a.min_us <= 0 or a.max_us < a.min_us or a.spins < 0:
        ap.error("need --records >= 100, --pace-us > 0, 0 < --min-us <= --max-us, --spins >= 0")
    cal = clock.calibration()
    cores = sorted(os.sched_getaffinity(0))
    other = (cores[0], cores[1]) if len(cores) > 1 else (None, None)
    same = (cores[0], cores[0])
    # compiled before anything is timed
    hop(cal, True, 100, 100.0, a.spins, a.min_us, a.max_us, None, None)
    hop(cal, False, 100, 100.0, a.spins, a.min_us, a.max_us, None, None)
    res = {"records": a.records, "pace_us": a.pace_us, "spins": a.spins, "min_us": a.min_us,
           "max_us": a.max_us, "cores": cores}
    for where, (pc, cc) in (("other_core", other), ("same_core", same)):
        if where == "other_core" and pc is None:
            continue
        for kind, bells in (("doorbell", True), ("nanosleep", False)):
            r = hop(cal, bells, a.records, a.pace_us, a.spins, a.min_us, a.max_us, pc, cc)
            for k, v in r.items():
                res[f"{kind}_{where}_{k}"] = v
        res[f"nanosleep_vs_doorbell_{where}"] = round(
            res[f"nanosleep_{where}_p50_ns"] / res[f"doorbell_{where}_p50_ns"], 1)
    if a.json:
        print(json.dumps(res))
        return 0
    print(f"appliance bench wake  (a record every {a.pace_us:g} us; back-off {a.spins} spins, "
          f"{a.min_us:g}-{a.max_us:g} us; cores {cores})\n")
    print(f"{'publish -> read (ns)':<28}{'p50':>10}{'p99':>12}{'sleeps':>9}{'rung':>7}")
    for where in ("other_core", "same_core"):
        for kind in ("doorbell", "nanosleep"):
            key = f"{kind}_{where}"
            if f"{key}_p50_ns" not in res:
                continue
            print(f"{kind + ', ' + where.replace('_', ' '):<28}{res[key + '_p50_ns']:>10,.0f}"
                  f"{res[key + '_p99_ns']:>12,.0f}{res[key + '_sleeps']:>9}{res[key + '_rung']:>7}")
        if f"nanosleep_vs_doorbell_{where}" in res:
            print(f"  nanosleep / doorbell p50 ({where.replace('_', ' ')}): "
                  f"{res['nanosleep_vs_doorbell_' + where]}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
