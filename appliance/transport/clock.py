"""TSC clock: calibration to nanoseconds, invariant-TSC check, TSC -> UTC for protocol timestamps.

All hot-path timestamps are *ticks* read by :func:`now` (``rdtsc``). A calibration array ``cal``
(int64, see the C_* indices) says how ticks become nanoseconds::

    ns = (ticks >> 24) * mult + (((ticks & (2**24 - 1)) * mult) >> 24)

which is exact to < 1 ns per second of interval and never overflows int64 for a century.
``cal`` also anchors ticks to UTC (``C_TSC0`` <-> ``C_UTC0``) so a gateway can render SendingTime
from a tick count without a system call.

Invariant TSC: the CPU must report ``constant_tsc`` and ``nonstop_tsc`` (the TSC ticks at a fixed
rate in every P- and C-state). Without them the clock falls back, loudly, to CLOCK_MONOTONIC
nanoseconds read through ``clock_gettime`` (vDSO, ~20 ns instead of ~7 ns): ticks are then
nanoseconds (``mult`` = 2**24) and every conversion stays correct, only slower. The fallback is
also forced with ``APPLIANCE_CLOCK=monotonic``.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

import numpy as np
from numba import njit

from appliance.transport.intrinsics import monotonic_ns, rdtsc

log = logging.getLogger(__name__)

SHIFT = 24
_MASK = (1 << SHIFT) - 1

# indices into the calibration array
C_MODE = 0       # MODE_TSC or MODE_MONOTONIC
C_MULT = 1       # ns per tick * 2**24
C_HZ = 2         # ticks per second
C_TSC0 = 3       # anchor: ticks ...
C_UTC0 = 4       # ... at this UTC ns since the epoch
C_WORDS = 8

MODE_TSC = 1
MODE_MONOTONIC = 2

@njit(cache=True, nogil=True)
def now(cal):
    """Current ticks: ``rdtsc`` (MODE_TSC) or CLOCK_MONOTONIC ns (MODE_MONOTONIC fallback)."""
    if cal[C_MODE] == MODE_TSC:
        return np.int64(rdtsc())
    return monotonic_ns()


@njit(cache=True, nogil=True)
def tsc_to_ns(cal, dticks):
    """Tick interval -> ns (int64). Negative intervals convert symmetrically."""
    m = cal[C_MULT]
    if dticks < 0:
        d = -dticks
        return -((d >> SHIFT) * m + (((d & _MASK) * m) >> SHIFT))
    return (dticks >> SHIFT) * m + (((dticks & _MASK) * m) >> SHIFT)


@njit(cache=True, nogil=True)
def tsc_to_utc_ns(cal, ticks):
    """Absolute ticks -> UTC ns since the Unix epoch (for protocol timestamps)."""
    return cal[C_UTC0] + tsc_to_ns(cal, np.int64(ticks) - cal[C_TSC0])


@dataclass(frozen=True)
class TscInfo:
    invariant: bool
    flags: tuple
    clocksource: str
    reason: str


def tsc_info(cpuinfo: str = "/proc/cpuinfo",
             clocksource: str = "/sys/devices/system/clocksource/clocksource0/current_clocksource") -> TscInfo:
    """Does this CPU have an invariant TSC (constant_tsc + nonstop_tsc)? Read-only."""
    flags: set[str] = set()
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    try:
        with open(clocksource) as f:
            cs = f.read().strip()
    except OSError:
        cs = "unknown"
    want = ("tsc", "constant_tsc", "nonstop_tsc")
    missing = [w for w in want if w not in flags]
    reason = "invariant TSC" if not missing else f"missing CPU flags: {' '.join(missing)}"
    return TscInfo(not missing, tuple(sorted(f for f in flags if "tsc" in f)), cs, reason)


def _anchor(read_ticks) -> tuple[int, int, int]:
    """(ticks, utc_ns, window): the tightest of several (ticks, time_ns, ticks) brackets."""
    best = None
    for _ in range(64):
        a = read_ticks()
        u = time.time_ns()
        b = read_ticks()
        if best is None or b - a < best[2]:
            best = ((a + b) // 2, u, b - a)
    return best


def _measure_hz(seconds: float) -> float:
    """TSC ticks per second against CLOCK_MONOTONIC_RAW over ``seconds``."""
    def bracket():
        best = None
        for _ in range(32):
            a = int(rdtsc_py())
            t = time.clock_gettime_ns(time.CLOCK_MONOTONIC_RAW)
            b = int(rdtsc_py())
            if best is None or b - a < best[2]:
                best = ((a + b) // 2, t, b - a)
        return best
    t0, n0, _ = bracket()
    time.sleep(seconds)
    t1, n1, _ = bracket()
    return (t1 - t0) * 1e9 / (n1 - n0)


@njit(cache=True, nogil=True)
def _rdtsc_nb():
    return rdtsc()


def rdtsc_py() -> int:
    """rdtsc from Python (through a compiled call: ~100 ns of call overhead)."""
    return int(_rdtsc_nb())


_CACHED: np.ndarray | None = None


def calibrate(seconds: float = 0.05, force_mode: str | None = None) -> np.ndarray:
    """Measure the TSC rate and anchor it to UTC; returns a new calibration array."""
    mode = force_mode or os.environ.get("APPLIANCE_CLOCK", "")
    info = tsc_info()
    cal = np.zeros(C_WORDS, np.int64)
    if mode != "monotonic" and info.invariant:
        hz = _measure_hz(seconds)
        cal[C_MODE] = MODE_TSC
        cal[C_HZ] = int(round(hz))
        cal[C_MULT] = int(round((1e9 / hz) * (1 << SHIFT)))
        tsc0, utc0, _ = _anchor(rdtsc_py)
    else:
        if mode != "monotonic":
            log.warning("TSC is not invariant (%s): falling back to CLOCK_MONOTONIC for hot-path "
                        "timestamps (slower, still correct)", info.reason)
        cal[C_MODE] = MODE_MONOTONIC
        cal[C_HZ] = 1_000_000_000
        cal[C_MULT] = 1 << SHIFT
        tsc0, utc0, _ = _anchor(time.monotonic_ns)
    cal[C_TSC0] = tsc0
    cal[C_UTC0] = utc0
    return cal


def calibration() -> np.ndarray:
    """This process's calibration (measured once, ~50 ms), as a fresh copy for the caller."""
    global _CACHED
    if _CACHED is None:
        _CACHED = calibrate()
    return _CACHED.copy()


def now_tsc(cal: np.ndarray | None = None) -> int:
    """Current ticks from Python."""
    return int(now(cal if cal is not None else calibration()))


def tsc_to_ns_py(cal: np.ndarray, dticks: int) -> int:
    return int(tsc_to_ns(cal, np.int64(dticks)))


def describe(cal: np.ndarray) -> str:
    mode = "tsc" if cal[C_MODE] == MODE_TSC else "monotonic (fallback)"
    return f"clock {mode}, {cal[C_HZ] / 1e9:.6f} GHz"
