"""``appliance bench clock``: what a timestamp costs, and how good the TSC calibration is.

Measured inside compiled loops (the loop cost is included and reported as its own line):
rdtsc, rdtscp, clock.now (TSC mode), clock_gettime(CLOCK_MONOTONIC) as the fallback, tick -> ns
and tick -> UTC conversions; from Python, time.perf_counter_ns as the baseline. Calibration:
two independent calibrations are compared, and the TSC is checked against CLOCK_MONOTONIC over a
measured interval (drift in parts per million).
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
from numba import njit

from appliance.transport import clock
from appliance.transport.intrinsics import monotonic_ns, rdtsc, rdtscp


@njit(cache=True, nogil=True)
def _loop(kind, n, cal):
    acc = np.int64(0)
    t0 = rdtscp()
    for i in range(n):
        if kind == 0:
            acc += i
        elif kind == 1:
            acc += np.int64(rdtsc())
        elif kind == 2:
            acc += np.int64(rdtscp())
        elif kind == 3:
            acc += clock.now(cal)
        elif kind == 4:
            acc += monotonic_ns()
        elif kind == 5:
            acc += clock.tsc_to_ns(cal, np.int64(i) * 977)
        else:
            acc += clock.tsc_to_utc_ns(cal, np.int64(i) * 977)
    return rdtscp() - t0, acc


KINDS = ["loop", "rdtsc", "rdtscp", "clock.now", "clock_gettime", "tsc_to_ns", "tsc_to_utc_ns"]


def run(n: int = 2_000_000, interval_s: float = 1.0) -> dict:
    cal = clock.calibration()
    for k in range(len(KINDS)):
        _loop(k, 10, cal)
    per_call = {}
    for k, name in enumerate(KINDS):
        best = min(int(_loop(k, n, cal)[0]) for _ in range(3))
        per_call[name] = clock.tsc_to_ns_py(cal, best) / n
    t0 = time.perf_counter_ns()
    for _ in range(n // 10):
        time.perf_counter_ns()
    py_ns = (time.perf_counter_ns() - t0) / (n // 10)
    cal2 = clock.calibrate()
    a, m0 = clock.now_tsc(cal), time.monotonic_ns()
    time.sleep(interval_s)
    b, m1 = clock.now_tsc(cal), time.monotonic_ns()
    drift_ppm = (clock.tsc_to_ns_py(cal, b - a) - (m1 - m0)) / (m1 - m0) * 1e6
    info = clock.tsc_info()
    loop = per_call["loop"]
    res = {f"{k.replace('.', '_')}_ns": v - (loop if k != "loop" else 0) for k, v in per_call.items()}
    res.update({
        "python_perf_counter_ns": py_ns,
        "tsc_hz": int(cal[clock.C_HZ]), "recalibration_diff_ppm": (int(cal2[clock.C_HZ]) - int(cal[clock.C_HZ])) / cal[clock.C_HZ] * 1e6,
        "drift_vs_monotonic_ppm": drift_ppm, "invariant_tsc": info.invariant,
        "clocksource": info.clocksource, "mode": "tsc" if cal[clock.C_MODE] == clock.MODE_TSC else "monotonic",
        "python_vs_rdtsc": py_ns / max(res["rdtsc_ns"], 0.1),
    })
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="appliance bench clock", description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--calls", type=int, default=2_000_000)
    a = ap.parse_args(argv)
    r = run(a.calls)
    if a.json:
        json.dump(r, sys.stdout)
        print()
        return 0
    print(f"clock benchmark  mode={r['mode']}  invariant_tsc={r['invariant_tsc']}  "
          f"clocksource={r['clocksource']}  tsc={r['tsc_hz'] / 1e9:.6f} GHz")
    print(f"{'per call (ns, loop cost removed)':<36}{'ns':>8}")
    for k in KINDS[1:]:
        print(f"{k:<36}{r[k.replace('.', '_') + '_ns']:>8.2f}")
    print(f"{'time.perf_counter_ns (Python)':<36}{r['python_perf_counter_ns']:>8.2f}   "
          f"({r['python_vs_rdtsc']:.0f}x rdtsc)")
    print(f"recalibration difference {r['recalibration_diff_ppm']:+.1f} ppm; "
          f"drift vs CLOCK_MONOTONIC over 1 s {r['drift_vs_monotonic_ppm']:+.1f} ppm")
    return 0


if __name__ == "__main__":
    sys.exit(main())
