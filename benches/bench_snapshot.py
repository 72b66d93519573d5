"""``appliance bench snapshot``: what the engine's durable snapshot costs its loop.

The engine actor's loop is ``step`` (compiled, returns about every millisecond), then Python:
heartbeat, and ``Snapshotter.maybe`` (appliance/engine/recovery.py), which copies the durable
state between two steps and hands it to a background thread that encodes, checksums and writes
it with fsync. This bench runs that loop on a real engine (two strategies, real shared-memory
order and exec rings, an exec record published before every step so the state always changed)
and measures the *gap*: from one ``step`` returning to the next one starting, i.e. the time the
loop spends outside compiled code, including any wait for the GIL the writer thread holds.

Scenarios, in one run: ``baseline`` (no snapshot), ``every_200ms`` (the default
``[engine] snapshot_ms``), ``every_10ms``, ``every_poll`` (as often as the writer keeps up).
Reported per scenario: gap p50 / p99 / p99.9 / max (ns) and their ratio to the baseline, the
snapshots written, the capture time in the loop (p50 of the whole ``maybe`` calls that captured,
mean / max of ``capture``), the write time in the thread (mean / max, fsync included), and where
the file went (the filesystem matters for fsync).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from appliance.engine import kernels, recovery
from appliance.engine import state as engine_state
from appliance.engine.state import EngineState
from appliance.transport import clock, records, ring, shm, wait

SYMBOLS = ["AAA", "BBB"]
GRID = {"instruments": {f"binance:{s}": {"tick_e8": 10**6, "lot_e8": 10**8} for s in SYMBOLS}}


def _engine(shm_dir: str, cal):
    tables = [{"kind": "avellaneda_stoikov", "venue": "binance", "symbol": s, "name": f"mm-{s}",
               "params": {"warmup_events": 0}} for s in SYMBOLS]
    es = EngineState({"binance": SYMBOLS}, tables, GRID, cal=cal, books_valid=True,
                     risk_table=engine_state.default_risk_table(["binance"]))
    ow = ring.RingWriter.create("orders", records.ORDER_RECORD_SIZE, 1 << 12, shm_dir)
    ew = ring.RingWriter.create("exec", records.EXEC_RECORD_SIZE, 1 << 12, shm_dir)
    er = ring.RingReader.attach("exec", "engine", "oldest", shm_dir)
    words = np.zeros(records.CONTROL_BLOCK.itemsize // 8, np.uint64)
    io = es.attach(ow.hdr, ow.data, words)
    mh, md = ring.local_ring(records.MD_RECORD_SIZE, 64)
    loop = es.loop([(mh, md, ring.local_cursor(mh))], [(er.hdr, er.data, er.cur)],
                   wait.make("spin"), wait.new_state())
    return es, io, loop, ow, ew, er


def _fill(k: int) -> np.ndarray:
    """A FILL of an order the engine does not know: booked to the ledger, so the state moves."""
    f = np.zeros(1, records.FILL)
    f[0]["rtype"] = records.RT_FILL
    f[0]["venue"] = records.VENUE_BINANCE
    f[0]["instrument"] = k % 2
    f[0]["clord_id"] = 1 << 40
    f[0]["side"] = records.SIDE_BUY if k % 3 else records.SIDE_SELL
    f[0]["last_price"], f[0]["last_qty"], f[0]["exec_id"] = 1000, 1, k + 1
    return f.view(np.uint8).reshape(-1)


def _scenario(name, period_s, n, shm_dir, state_dir, cal) -> dict:
    es, io, loop, ow, ew, er = _engine(tempfile.mkdtemp(prefix=name, dir=shm_dir), cal)
    snap = None
    if period_s is not None:
        snap = recovery.Snapshotter(es, Path(state_dir) / f"{name}.snapshot", period_s, ow,
                                    [("exec", er)], es.led.balances)
        snap.start()
    recs = [_fill(k) for k in range(n)]
    gaps = np.zeros(n, np.int64)
    caps = []                              # ns in the loop of each call of maybe() that captured
    kernels.step(loop, es.books, es.strats, es.gate, es.tel, io, 0, 1)
    t_end = time.perf_counter_ns()
    for k in range(n):
        ring.publish(ew.hdr, ew.data, recs[k])
        t0 = time.perf_counter_ns()
        gaps[k] = t0 - t_end
        kernels.step(loop, es.books, es.strats, es.gate, es.tel, io, 0, 4)
        t_end = time.perf_counter_ns()
        if snap is not None and snap.maybe(time.monotonic()):
            caps.append(time.perf_counter_ns() - t_end)
    out = {"scenario": name, "period_ms": None if period_s is None else period_s * 1e3,
           "iterations": n}
    q = np.percentile(gaps, [50, 99, 99.9])
    out.update(gap_p50_ns=int(q[0]), gap_p99_ns=int(q[1]), gap_p999_ns=int(q[2]),
               gap_max_ns=int(gaps.max()), fills_booked=int(es.stats[kernels.ST_ORPHAN_FILLS]))
    if snap is not None:
        snap.stop()
        st = snap.status()
        out.update(snapshots=st["writes"],
                   capture_us_p50=round(float(np.median(caps)) / 1e3, 1) if caps else None,
                   capture_us_mean=st["capture_us_mean"],
                   capture_us_max=st["capture_us_max"], write_ms_max=st["write_ms_max"],
                   bytes=st["bytes"], write_errors=st["errors"])
        out["write_ms_mean"] = round(snap.write_ns_total / snap.writes / 1e6, 3) if snap.writes \
            else None
    er.close()
    ew.close()
    ow.close()
    return out


def run(n: int = 20000) -> dict:
    cal = clock.calibration()
    shm_dir = tempfile.mkdtemp(prefix="appliance-bench-snap-", dir="/dev/shm"
                               if os.path.isdir("/dev/shm") else None)
    state_dir = tempfile.mkdtemp(prefix="appliance-bench-snap-state-",
                                 dir=os.environ.get("APPLIANCE_BENCH_STATE_DIR") or None)
    try:
        _scenario("warm", 0.0, 200, shm_dir, state_dir, cal)       # compile / load first
        rows = [_scenario(name, p, n, shm_dir, state_dir, cal)
                for name, p in (("baseline", None), ("every_200ms", 0.2), ("every_10ms", 0.01),
                                ("every_poll", 0.0))]
        fs = shm.mount_of(state_dir)
    finally:
        shutil.rmtree(shm_dir, ignore_errors=True)
        shutil.rmtree(state_dir, ignore_errors=True)
    base = rows[0]
    for r in rows:
        for k in ("gap_p50_ns", "gap_p99_ns", "gap_p999_ns"):
            r[k.replace("_ns", "_ratio")] = round(r[k] / base[k], 2) if base[k] else None
    return {"bench": "snapshot", "state_dir_fs": fs.fstype if fs else "?", "scenarios": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="appliance bench snapshot", description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    ap.add_argument("-n", type=int, default=20000, help="loop iterations per scenario")
    args = ap.parse_args(argv)
    res = run(args.n)
    if args.json:
        print(json.dumps(res))
        return 0
    print(f"engine loop gap (step returned -> next step), state dir on {res['state_dir_fs']}")
    print(f"{'scenario':<12} {'snaps':>6} {'p50 ns':>8} {'p99 ns':>9} {'p99.9 ns':>9} {'max ns':>10} "
          f"{'p50x':>5} {'p99x':>5} {'p99.9x':>6} {'capture us':>20} {'write ms':>14}")
    for r in res["scenarios"]:
        cap = (f"{r.get('capture_us_p50')}/{r.get('capture_us_mean')}/{r.get('capture_us_max')}"
               if "snapshots" in r else "-")
        wr = f"{r.get('write_ms_mean')}/{r.get('write_ms_max')}" if "snapshots" in r else "-"
        print(f"{r['scenario']:<12} {r.get('snapshots', 0):>6} {r['gap_p50_ns']:>8} "
              f"{r['gap_p99_ns']:>9} {r['gap_p999_ns']:>9} {r['gap_max_ns']:>10} "
              f"{r['gap_p50_ratio']:>5} {r['gap_p99_ratio']:>5} {r['gap_p999_ratio']:>6} "
              f"{cap:>20} {wr:>14}")
    print("capture: p50/mean/max in the loop (p50: the whole maybe() call); write: mean/max in "
          "the writer thread (fsync included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
