"""Wait strategies for busy-polling actors: what a poll loop does when it found nothing to do.

=============  =====================================================================  ==========
strategy       behaviour when idle                                                    use on
=============  =====================================================================  ==========
spin           ``pause`` and poll again, forever: lowest latency, burns the core       isolated core
spin_yield     spin ``spin_iterations`` polls, then ``sched_yield`` between polls     shared core
backoff        spin, then sleep with exponential back-off (min..max ns), reset on work  idle hosts/tests
=============  =====================================================================  ==========

``auto`` (the default) spins only when the actor is pinned to an isolated core
(``/sys/devices/system/cpu/isolated``) and uses spin_yield elsewhere: busy-spinning on a shared
core steals it from the other actors. The strategy is configuration, never a code fork: every
actor calls ``idle(params, state)`` after an empty poll and ``reset(state)`` after work.

A consumer of rings sleeps on their doorbells instead (``sleep_bells``, via ``ring.idle_on`` or
the engine's ``kernels._idle``): the back-off's sleep becomes futex_waitv's timeout and the
producer's ``ring.notify`` ends it. Measured on this 2-vCPU VM (a record every 1 ms, back-off
20-200 us): publish -> read p50 137 us with nanosleep, 16-21 us with the doorbell (consumer on
the other vCPU), 8.4 us on the same vCPU.
"""
from __future__ import annotations

import os

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from appliance.transport.intrinsics import (EAGAIN, EINTR, ETIMEDOUT, cpu_pause, monotonic_ns,
                                            sys_errno, sys_futex_waitv)

SPIN = 0
SPIN_YIELD = 1
BACKOFF = 2
NAMES = {"spin": SPIN, "spin_yield": SPIN_YIELD, "backoff": BACKOFF}

# params
P_KIND, P_SPINS, P_MIN_NS, P_MAX_NS = range(4)
# state
S_IDLE, S_SLEEP_NS, S_YIELDS, S_SLEEPS, S_RUNG, S_NO_WAITV = range(6)
S_N = 6


@intrinsic
def _sched_yield(typingctx):
    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []),
                                            "sched_yield")
        builder.call(fn, [])
        return context.get_dummy_value()
    return types.void(), codegen


@intrinsic
def _nanosleep(typingctx, ns):
    def codegen(context, builder, sig, args):
        i64 = ir.IntType(64)
        ts_t = ir.LiteralStructType([i64, i64])
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.IntType(32), [ts_t.as_pointer(), ts_t.as_pointer()]),
            "nanosleep")
        ts = cgutils.alloca_once(builder, ts_t)
        billion = ir.Constant(i64, 1_000_000_000)
        builder.store(builder.sdiv(args[0], billion), cgutils.gep_inbounds(builder, ts, 0, 0))
        builder.store(builder.srem(args[0], billion), cgutils.gep_inbounds(builder, ts, 0, 1))
        builder.call(fn, [ts, ts.type(None)])
        return context.get_dummy_value()
    return types.void(types.int64), codegen


@njit(cache=True, nogil=True)
def idle(params, state):
    """Called after a poll that found nothing."""
    state[S_IDLE] += 1
    kind = params[P_KIND]
    if kind == SPIN or state[S_IDLE] <= params[P_SPINS]:
        cpu_pause()
    elif kind == SPIN_YIELD:
        state[S_YIELDS] += 1
        _sched_yield()
    else:
        _nanosleep(_next_sleep(params, state))


@njit(cache=True, nogil=True)
def _next_sleep(params, state):
    """The back-off's next sleep in ns (min, doubling up to max), counted."""
    ns = state[S_SLEEP_NS]
    ns = params[P_MIN_NS] if ns == 0 else min(ns * 2, params[P_MAX_NS])
    state[S_SLEEP_NS] = ns
    state[S_SLEEPS] += 1
    return ns


@njit(cache=True, nogil=True)
def will_sleep(params, state):
    """True when the next ``idle`` would sleep (back-off, past its spins)."""
    return params[P_KIND] == BACKOFF and state[S_IDLE] >= params[P_SPINS]


@njit(cache=True, nogil=True)
def sleep_bells(params, state, bells, n):
    """``idle``'s back-off sleep, on the doorbells of ``bells[:n]`` (ring.py: armed rows): it ends
    early when a producer rings one (``state[S_RUNG]`` counts those). Without futex_waitv (Linux
    < 5.16) or if the kernel refuses it, the plain sleep from then on (``state[S_NO_WAITV]``)."""
    state[S_IDLE] += 1
    ns = _next_sleep(params, state)
    if state[S_NO_WAITV] == 0:
        r = sys_futex_waitv(bells, n, monotonic_ns() + ns)
        if r >= 0:
            state[S_RUNG] += 1
            return
        e = sys_errno()
        if e == EAGAIN:                  # rung between the arming and the sleep
            state[S_RUNG] += 1
            return
        if e == ETIMEDOUT or e == EINTR:
            return                       # the back-off's sleep, or a signal (a kill's wake)
        state[S_NO_WAITV] = 1            # ENOSYS (Linux < 5.16) or refused: the plain sleep
    _nanosleep(ns)


@njit(cache=True, nogil=True)
def reset(state):
    """Called after a poll that did work: back to spinning."""
    state[S_IDLE] = 0
    state[S_SLEEP_NS] = 0


def isolated_cpus(path: str = "/sys/devices/system/cpu/isolated") -> set[int]:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return set()
    return parse_cpulist(text)


def parse_cpulist(text: str) -> set[int]:
    """'0-3,8,10-11' -> {0,1,2,3,8,10,11}."""
    out: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "-" in part:
            a, b = part.split("-", 1)
            out.update(range(int(a), int(b) + 1))
        else:
            out.add(int(part))
    return out


def choose(strategy: str, core: int | None) -> int:
    if strategy != "auto":
        if strategy not in NAMES:
            raise ValueError(f"wait strategy {strategy!r} is not one of auto, {', '.join(NAMES)}")
        return NAMES[strategy]
    if core is not None and core in isolated_cpus():
        return SPIN
    return SPIN_YIELD


def make(strategy: str = "auto", core: int | None = None, spin_iterations: int = 2000,
         backoff_min_ns: int = 1_000, backoff_max_ns: int = 1_000_000) -> np.ndarray:
    p = np.zeros(4, np.int64)
    p[P_KIND] = choose(strategy, core)
    p[P_SPINS] = spin_iterations
    p[P_MIN_NS] = backoff_min_ns
    p[P_MAX_NS] = backoff_max_ns
    return p


def from_config(wait_cfg, core: int | None = None) -> np.ndarray:
    """Params from a config.WaitSection; ``core`` is the actor's pinned core (None = unpinned)."""
    if core is None:
        aff = os.sched_getaffinity(0)
        core = next(iter(aff)) if len(aff) == 1 else None
    return make(wait_cfg.strategy, core, wait_cfg.spin_iterations, wait_cfg.backoff_min_ns,
                wait_cfg.backoff_max_ns)


def new_state() -> np.ndarray:
    return np.zeros(S_N, np.int64)


def counters(state: np.ndarray) -> dict:
    """A wait state's counters: yields, sleeps, sleeps a doorbell ended (transport/ring.py)."""
    return {"yields": int(state[S_YIELDS]), "sleeps": int(state[S_SLEEPS]),
            "rung": int(state[S_RUNG])}


def kind_name(params: np.ndarray) -> str:
    return {v: k for k, v in NAMES.items()}[int(params[P_KIND])]
