"""TSC clock: calibration to nanoseconds, invariant-TSC check, TSC -> UTC for protocol timestamps.

All hot-path timestamps are *ticks* read by :func:`now` (``rdtsc``). A calibration array ``cal``
(int64, see the C_* indices) says how ticks become nanoseconds::

    ns = (ticks >> 24) * mult + (((ticks & (2**24 - 1)) * mult) >> 24)

which is exact to < 1 ns per second of interval and never overflows int64 for a century.
``cal`` also anchors ticks to UTC (``C_TSC0`` <-> ``C_UTC0``) so a gateway can render SendingTime
from a tick count without a system call. The wall clock is not the TSC: NTP slews it, a step or a
paused VM moves it by seconds at once, and the rate measured at start is good to ~1e-4. So the anchor is kept current: :func:`reanchor_all` (every actor's
status tick, every 0.5 s) moves ``C_UTC0`` of every calibration this process handed out so that
the ticks of now map to the wall clock of now. It writes that one aligned 64-bit word, so a
compiled reader on another thread sees the old anchor or the new one, never half of each.

Invariant TSC: the CPU must report ``constant_tsc`` and ``nonstop_tsc`` (the TSC ticks at a fixed
rate in every P- and C-state). Without them the clock falls back, loudly, to CLOCK_MONOTONIC
nanoseconds read through ``clock_gettime`` (vDSO, ~20 ns instead of ~7 ns): ticks are then
nanoseconds (``mult`` = 2**24) and every conversion stays correct, only slower. The fallback is
also forced with ``APPLIANCE_CLOCK=monotonic``.

Event time (backtests): a calibration made by :func:`event_calibration` has ``C_MODE`` =
``MODE_EVENT``; :func:`now` then returns ``cal[C_EVENT_NOW]``, the time of the event being
processed, which the backtest driver writes before every event. Ticks are nanoseconds and UTC
nanoseconds at once (``mult`` = 2**24, anchor 0 <-> 0), so every compiled caller of ``now`` (the
engine's throttles, timers, breaker reset, ack timeouts) runs on event time unchanged.
"""
from __future__ import annotations

import logging
import os
import threading
import time
import weakref
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
C_EVENT_NOW = 5  # MODE_EVENT: the current event time (ns), written by the backtest driver
C_WORDS = 8

MODE_TSC = 1
MODE_MONOTONIC = 2
MODE_EVENT = 3

@njit(cache=True, nogil=True)
def now(cal):
    """Current ticks: ``rdtsc`` (MODE_TSC), CLOCK_MONOTONIC ns (MODE_MONOTONIC fallback) or the
    event time ``cal[C_EVENT_NOW]`` (MODE_EVENT, backtests)."""
    m = cal[C_MODE]
    if m == MODE_TSC:
        return np.int64(rdtsc())
    if m == MODE_EVENT:
        return cal[C_EVENT_NOW]
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


def _anchor(read_ticks, brackets: int = 64) -> tuple[int, int, int]:
    """(ticks, utc_ns, window): the tightest of ``brackets`` (ticks, time_ns, ticks) brackets."""
    best = None
    for _ in range(brackets):
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


def event_calibration(start_ns: int = 0) -> np.ndarray:
    """A calibration for event time (backtests): ticks are ns and UTC ns, ``now`` returns
    ``cal[C_EVENT_NOW]`` (starting at ``start_ns``)."""
    cal = np.zeros(C_WORDS, np.int64)
    cal[C_MODE] = MODE_EVENT
    cal[C_HZ] = 1_000_000_000
    cal[C_MULT] = 1 << SHIFT
    cal[C_EVENT_NOW] = start_ns
    return cal


_HANDED: list = []             # weak references to the copies calibration() handed out
_ANCHORED_AT = 0.0             # time.monotonic() of _CACHED's last anchor
REANCHOR_S = 1.0               # calibration() re-anchors a cached calibration older than this
_LOCK = threading.Lock()


def calibration() -> np.ndarray:
    """This process's calibration (measured once, ~50 ms), as a fresh copy for the caller; kept
    anchored to the wall clock by :func:`reanchor_all`."""
    global _CACHED, _ANCHORED_AT
    if _CACHED is None:
        _CACHED = calibrate()
        _ANCHORED_AT = time.monotonic()
    elif time.monotonic() - _ANCHORED_AT > REANCHOR_S:
        reanchor_all()
    with _LOCK:
        cal = _CACHED.copy()
        _HANDED.append(weakref.ref(cal))
    return cal


def reanchor(cal: np.ndarray, brackets: int = 4) -> int:
    """Move ``cal``'s UTC anchor so that the ticks of now map to the wall clock of now, keeping
    its rate and tick anchor: one store of ``cal[C_UTC0]``. Returns the step in ns (the wall
    clock minus what the old anchor said); event-time calibrations are left alone (0)."""
    mode = int(cal[C_MODE])
    if mode == MODE_TSC:
        read = rdtsc_py
    elif mode == MODE_MONOTONIC:
        read = time.monotonic_ns
    else:
        return 0
    ticks, utc, _ = _anchor(read, brackets)
    step = utc - int(tsc_to_utc_ns(cal, np.int64(ticks)))
    cal[C_UTC0] = int(cal[C_UTC0]) + step
    return step


def reanchor_all() -> int:
    """Re-anchor this process's calibration and every copy of it still in use (one
    measurement); returns the step in ns (0 before the first calibration)."""
    if _CACHED is None:
        return 0
    with _LOCK:
        return _reanchor_all()


def _reanchor_all() -> int:
    global _ANCHORED_AT
    step = reanchor(_CACHED)
    _ANCHORED_AT = time.monotonic()
    live = []
    for ref in _HANDED:
        cal = ref()
        if cal is None:
            continue
        live.append(ref)
        if cal[C_MODE] == _CACHED[C_MODE] and cal[C_TSC0] == _CACHED[C_TSC0] \
                and cal[C_MULT] == _CACHED[C_MULT]:
            cal[C_UTC0] = _CACHED[C_UTC0]
        else:
            reanchor(cal)
    _HANDED[:] = live
    return step


def now_tsc(cal: np.ndarray | None = None) -> int:
    """Current ticks from Python."""
    return int(now(cal if cal is not None else calibration()))


def tsc_to_ns_py(cal: np.ndarray, dticks: int) -> int:
    return int(tsc_to_ns(cal, np.int64(dticks)))


def describe(cal: np.ndarray) -> str:
    mode = {MODE_TSC: "tsc", MODE_EVENT: "event time"}.get(int(cal[C_MODE]), "monotonic (fallback)")
    return f"clock {mode}, {cal[C_HZ] / 1e9:.6f} GHz"
