"""The one-process layout: an md gateway, the engine and a FIX gateway in one process, one busy
loop, one core (``appliance group --venue NAME --session NAME``), for hosts with few cores.

The same actors as the one-process-per-actor layout, configured, not reimplemented: an
:class:`ActorGroup` holds a :class:`~appliance.venues.gateway.MdGateway`, an
:class:`~appliance.engine.run.Engine` and a :class:`~appliance.fix.gateway.FixGatewayActor` built
from the same config, and runs their lifecycles together::

    warm     every member's warm(), then the group's kernel for the venue (before anything is live)
    open     the members' open() at once (threads: each creates its outputs, then waits for its
             inputs, so the engine <-> FIX gateway rings come up as in separate processes)
    register each member registers itself (its own control-block line, heartbeat, telemetry
             region and status file, under its own name): ``appliance status`` / ``top`` see the
             three actors, with the same pid
    start    engine, FIX gateway, md gateway; then the md gateway's connection loop is the loop
    close    md gateway; engine (its cancels go on the order ring); the FIX gateway sends them
             out before it logs out

The rings stay what they are (md ring, order ring, exec ring in shared memory: the recorder, ``top``
and a second process can attach as usual), and so do the records and their TSC stamps.

The hot loop. The md gateway's loop (``venues.gateway.Gateway``) calls ``pump_fn`` where it
would call its venue's compiled pump, and ``idle_fn`` where it would wait. ``pump_fn`` is one
compiled call, :func:`run_loop` (one cacheable copy per venue, ``STEPS``), that spins for up to
``budget_us`` or until Python is needed::

    at each call                 prefetch hints for what the next frame's path writes (the md
                                 ring's next slots, each quoted book's order path, the FIX
                                 gateway's tables): the Python work between calls evicts them
    venue pump, one frame        recv() on the raw socket, deframe, handle_frame, md ring publish
                                 (frame_to_publish telemetry); then fixgw.warm_path prefetches
                                 the FIX gateway's lines for the orders the frame may cause.
                                 A pump call that finds the socket empty and quiet for the
                                 venue's ack_after_us sends the socket's ACK (wsframe.ack_now;
                                 the frame's orders are out by then), not the frame's recv()
    engine, every new md record  kernels.check_kill + kernels.handle_md (book, strategies, risk
                                 gate, order records on the order ring)
    FIX gateway, new orders      gw_step (encode into the send buffer), the next sender number
                                 written into the store's mapped seqnums file, send() on the
                                 session's socket, gw_sent (order_to_wire, tick_to_trade)
    engine step                  whenever exec records are waiting, the strategy timer is due, the
                                 kill flag is set, and every IDLE_STEP_EVERY spins (heartbeat)
    FIX input                    every FIX_PEEK_EVERY spins and before the wait strategy
                                 yields or sleeps, fixgw.gw_rx: recv() on the FIX
                                 socket, the in-sequence execution reports through gw_receive
                                 (exec records on the exec ring, read by the engine's step in
                                 the next spin), the next target number written into the store's
                                 mapped seqnums file; a message for the session layer, the end of
                                 the stream or unknown working orders -> back to Python; the
                                 socket's ACK of them once the loop is idle (ack_reads). While
                                 the session is not on its fast path (Gateway.fast_rx), a
                                 MSG_PEEK recv instead: bytes waiting -> back to Python
    nothing to do                the [wait] strategy (spin / spin_yield / backoff); a spinning
                                 loop first keeps the kernel's TCP path warm every
                                 [wait] net_warm_us (transport.netwarm: a 64-byte send and
                                 read-back on a private loopback connection), and on the next
                                 spin runs the FIX gateway's order path dry: gw_step on a
                                 private copy of its arrays (fixgw.dry_bundle), through the
                                 call site live orders take, nothing sent

Python (``pump_fn`` around the kernel, ``idle_fn`` between calls) does what is rare: the md
gateway's actions, control frames and reconnects; the FIX session layer (logon, heartbeats,
resend, reconciliation, the kill switch's cancels), the FIX input off its fast path; persisting a
halt the engine acknowledged. Compiled code sends on the FIX socket only while ``Gateway.fast_fd`` allows
it (plain TCP, logged on and reconciled, nothing queued); otherwise order records stay on the
ring for the FIX gateway's Python step, exactly as in its own process.

Codes. :func:`run_loop` returns the venue pump's wsframe.P_* code for the md gateway's loop, and
says in ``g[G_NEED]`` (NEED_* bits) what else needs Python.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections import namedtuple

import numba
import numpy as np
from numba import njit

from appliance import jit
from appliance.jit.bound import Bound
from appliance.actor import Actor, ActorError
from appliance.engine import kernels, oms
from appliance.fix import gateway as fixgw
from appliance.transport import clock, control, netwarm, records, ring, wait
from appliance.transport.intrinsics import (EAGAIN, load_acquire, rdtsc, sys_errno, sys_peek,
                                            sys_send)
from appliance.venues import (binance, bitfinex, bitstamp, coinbase, coinbase_advanced, common,
                              kraken, registry, wsframe)

log = logging.getLogger("appliance.group")

NAME = "group"
NO_SOCKET = -2            # fd argument: the md gateway has no connection (engine and FIX only)
FIX_PEEK_EVERY = 8        # spins between MSG_PEEK polls of the FIX socket
IDLE_STEP_EVERY = 64      # spins between engine steps when nothing else asks for one
DEFAULT_BUDGET_US = 1000  # a kernel call returns to Python at least this often

# group words (int64[G_N], ``g``)
G_FIX_FD = 0        # FIX socket compiled code may send on (Gateway.fast_fd), -1: not now
G_MAX_BATCH = 1     # orders encoded per send at most
G_ENGINE_IDX = 2    # the engine's actor index (heartbeat)
G_BUDGET = 3        # ticks a call may spin before it returns
G_NEED = 4          # NEED_* bits: what the last call leaves to Python
G_ENGINE_RC = 5     # the most important STEP_* of the last call
G_SEND_LEN = 6      # NEED_SEND: bytes of the batch that did not go out whole ...
G_SENT = 7          # ... and what send() returned for it (bytes, or -errno)
G_BATCHES = 8       # batches sent by compiled code, total
G_ORDERS = 9        # orders in them, total
G_LAST_SEND = 10    # TSC when the last batch was handed to send()
G_CALLS = 11        # kernel calls, total
G_FRAMES = 12       # md frames handled by the kernel, total
G_MD_RING = 13      # index of this venue's md ring in the engine's Loop
G_FIX_RX = 14       # 1: compiled code may read the FIX socket itself (Gateway.fast_rx)
G_RX_READS = 15     # FIX socket reads taken by compiled code, total
G_FIX_ACK = 16      # 1: ACK what gw_rx read once the loop is idle (the session's ack_reads)
G_FIX_ACK_DUE = 17  # gw_rx read bytes not ACKed yet
G_PATH_WARM = 18    # 1: the next spin runs the FIX gateway's order path dry (after a net warm-up)
G_PATH_WARMS = 19   # dry runs of it, total
G_WARM_AB = 20      # > 0: warm-ups only while bit G_WARM_AB of the TSC is 0 (benchmarks: the warm
                    # and the cold periods of one run compared; ``appliance group --warm-ab``)
G_N = 24

NEED_FIX_RX = 1     # bytes are waiting on the FIX socket
NEED_ORDERS = 2     # order records are waiting and compiled code may not send them
NEED_SEND = 4       # a batch went out in part or not at all (G_SEND_LEN / G_SENT)
NEED_ENGINE = 8     # the engine's step returned something for Python (G_ENGINE_RC)
NEED_FIX_SLOW = 16  # gw_step stopped at a record only Python handles (mass cancel, reconcile)
_NEED_NAMES = {NEED_FIX_RX: "fix_rx", NEED_ORDERS: "orders", NEED_SEND: "send",
               NEED_ENGINE: "engine", NEED_FIX_SLOW: "fix_slow"}

_U64 = np.uint64

Eng = namedtuple("Eng", ["loop", "books", "strats", "gate", "tel", "io"])
Eng.__doc__ = "The engine's bundles (appliance.engine.state), as its step takes them."
Fix = fixgw.Fix


# ------------------------------------------------------------------------------------------------
# the kernel
# ------------------------------------------------------------------------------------------------
@njit(**jit.HELPER)
def _behind(hdr, cur):
    """Records published on a ring and not yet read by cursor ``cur``."""
    return np.int64(load_acquire(hdr, _U64(ring.HEAD_OFF)) - cur[ring.CUR_POS])


@njit(**jit.HELPER)
def _others_waiting(loop):
    """Most records waiting on any exec ring or md ring (another venue's, read by ``step``)."""
    n = 0
    for r in range(loop.settings[kernels.LP_N_EX]):
        d = _behind(loop.ex_hdrs[r], loop.ex_curs[r])
        if d > n:
            n = d
    for r in range(loop.settings[kernels.LP_N_MD]):
        d = _behind(loop.md_hdrs[r], loop.md_curs[r])
        if d > n:
            n = d
    return n


@njit(**jit.HELPER)
def _send_orders(fx, g, live):
    """Encode the waiting order records (gw_step) and send them; NEED_* bits for Python. Not
    ``live``: ``fx`` is the dry bundle (fixgw.dry_bundle) and nothing is sent."""
    need = 0
    n = fixgw.gw_step(fx, g[G_MAX_BATCH])
    if fx.gst[fixgw.G_MASS_PENDING] != 0 or fx.gst[fixgw.G_RECONCILE_REQ] != 0:
        need |= NEED_FIX_SLOW
    if n > 0 and live:
        ln = fx.gst[fixgw.G_SEND_LEN]
        fixgw.put_seq(fx.seq, fx.gst[fixgw.G_NEXT_SEQ])       # on disk before the batch leaves
        t = np.int64(rdtsc())
        k = sys_send(g[G_FIX_FD], fx.sbuf, 0, ln)
        fixgw.gw_sent(fx.batch, n, t, fx.cal, fx.ot, fx.hists, fx.hidx)
        g[G_BATCHES] += 1
        g[G_ORDERS] += n
        g[G_LAST_SEND] = t
        if k != ln:
            g[G_SEND_LEN] = ln
            g[G_SENT] = k if k >= 0 else -sys_errno()
            g[G_FIX_FD] = -1                              # the rest goes out from Python
            need |= NEED_SEND
    return need


@njit(**jit.INTERNAL)
def _warm_after_python(md_hdr, md_data, books, strats, gate, io, fx):
    """At each kernel call, prefetch the lines the next frame's path writes: the md ring's slots
    after the next (as the pump does after each frame), every quoted book's order path (engine)
    and the FIX gateway's tables. The Python work between calls (FIX input, session timers,
    status) evicts them from L2; the first frame after it would otherwise take its misses on the
    hot path. Hints only."""
    common.prefetch_slots(md_hdr, md_data, common.PREFETCH_SLOTS)
    for b in range(books.n.shape[0]):
        if books.bstate[b, kernels.BS_NSTRAT] != 0:
            kernels._warm_order_path(b, books, strats, gate, io)
    fixgw.warm_path(fx, gate.oms.ctr[oms.C_NEXT_ID], 2)


@njit(**jit.HELPER)
def run_loop(pump, md, cal, en, fx, frx, g, wait_):
    """The group's loop body (module docstring): spin until Python is needed or ``g[G_BUDGET]``
    ticks passed; returns the md pump's P_* code (P_IDLE when the md socket had nothing).
    ``md`` is the md gateway's pump arguments ``(fd, rx, ws, st, hdr, data, lat)``, ``en`` the
    engine's bundles (:data:`Eng`), ``fx`` the FIX gateway's (:data:`Fix`), ``frx`` its receive
    side (:data:`fixgw.Rx`), ``g`` the loop's words, ``wait_`` the wait strategy and the
    warm-ups ``(params, state, net warm words, net warm buffer, dry bundle, dry order record)``
    (transport.netwarm; fixgw.dry_bundle: a dry record whose rtype is 0 turns the dry runs
    off)."""
    fd, rx, ws, st, hdr, data, lat = md
    wparams, wstate, nwarm, nbuf, dry, dry_rec = wait_
    loop = en.loop
    books = en.books
    strats = en.strats
    gate = en.gate
    tel = en.tel
    io = en.io
    stats = tel.stats
    settings = loop.settings
    mi = g[G_MD_RING]
    md_hdr = loop.md_hdrs[mi]
    md_data = loop.md_datas[mi]
    md_cur = loop.md_curs[mi]
    g[G_CALLS] += 1
    g[G_NEED] = 0
    g[G_ENGINE_RC] = 0
    t0 = np.int64(rdtsc())
    budget = g[G_BUDGET]
    if g[G_FIX_FD] >= 0:
        _warm_after_python(md_hdr, md_data, books, strats, gate, io, fx)
    need = 0
    erc = 0
    r = wsframe.P_IDLE
    it = 0
    while True:
        it += 1
        work = False
        if fd != NO_SOCKET:
            r = pump(fd, rx, ws, st, hdr, data, 1, lat, cal)
            if r == wsframe.P_BUDGET:
                g[G_FRAMES] += 1
                work = True
                if g[G_FIX_FD] >= 0 and _behind(md_hdr, md_cur) > 0:
                    # the FIX gateway's lines for the orders this frame may cause, fetched while
                    # the engine decides
                    fixgw.warm_path(fx, gate.oms.ctr[oms.C_NEXT_ID], 2)
        # the engine: every new md record of this venue through the decision path
        while ring.poll(md_hdr, md_data, md_cur, io.md_buf) == 1:
            work = True
            c = kernels.check_kill(books, strats, gate, tel, io)
            if c > erc:
                erc = c
            c = kernels.handle_md(io.md_buf, books, strats, gate, tel, io)
            if c > erc:
                erc = c
        # the FIX gateway: orders out. Or, on the spin after a net warm-up, while no order waits:
        # the same code on the dry bundle, so that the machine code a live order runs (inlined
        # here, and nowhere else) and its branch history are warm when the next order comes
        f = fx
        live = True
        if g[G_PATH_WARM] != 0:
            g[G_PATH_WARM] = 0
            if not work and g[G_FIX_FD] >= 0 and _behind(fx.ohdr, fx.ocur) == 0:
                ring.publish(dry.ohdr, dry.odata, dry_rec)
                f = dry
                live = False
        if _behind(f.ohdr, f.ocur) > 0:
            if g[G_FIX_FD] >= 0:
                need |= _send_orders(f, g, live)
            else:
                need |= NEED_ORDERS
            if live:
                work = True
            else:
                fixgw.ot_delete(dry.ot, dry.gst, fixgw.DRY_CLORD)
                g[G_PATH_WARMS] += 1
        # the rest of the engine's step: exec reports, the timer, the kill switch, heartbeat
        now = np.int64(rdtsc())
        nex = _others_waiting(loop)
        if (nex > 0 or now - stats[kernels.ST_LAST_TIMER] >= settings[kernels.LP_TIMER_TSC]
                or control.kill_requested(io.words) or stats[kernels.ST_HALTED] != 0
                or it % IDLE_STEP_EVERY == 1):
            c = kernels.step(loop, books, strats, gate, tel, io, g[G_ENGINE_IDX], max(nex, 1))
            if c > erc:
                erc = c
            if nex > 0:
                work = True
                if _behind(fx.ohdr, fx.ocur) > 0:       # an exec report released a quote
                    if g[G_FIX_FD] >= 0:
                        need |= _send_orders(fx, g, True)
                    else:
                        need |= NEED_ORDERS
        if erc != 0:
            need |= NEED_ENGINE
        if g[G_FIX_FD] >= 0 and (it % FIX_PEEK_EVERY == 0 or (
                not work and wparams[wait.P_KIND] != wait.SPIN
                and wstate[wait.S_IDLE] >= wparams[wait.P_SPINS])):
            # every FIX_PEEK_EVERY spins, and before each yield or sleep of the wait strategy
            if g[G_FIX_RX] != 0:
                c = fixgw.gw_rx(fx, frx, g[G_FIX_FD])   # execution reports in, exec records out
                if c == fixgw.RX_DONE:
                    g[G_RX_READS] += 1
                    g[G_FIX_ACK_DUE] = g[G_FIX_ACK]
                    work = True
                elif c == fixgw.RX_PYTHON:
                    g[G_RX_READS] += 1
                    g[G_FIX_ACK_DUE] = g[G_FIX_ACK]
                    g[G_FIX_RX] = 0
                    need |= NEED_FIX_RX                 # the session layer, or the socket ended
            elif sys_peek(g[G_FIX_FD], fx.scratch[1], 0, 1) >= 0 or sys_errno() != EAGAIN:
                need |= NEED_FIX_RX                     # data, end of stream or an error
        if not work and g[G_FIX_ACK_DUE] != 0 and g[G_FIX_FD] >= 0:
            # what the venue sent, ACKed now that the loop is idle: on the next order's segment
            # the ACK's processing at the venue's end would delay the order's bytes
            g[G_FIX_ACK_DUE] = 0
            wsframe.ack_now(g[G_FIX_FD])
        if need != 0 or (r != wsframe.P_IDLE and r != wsframe.P_BUDGET):
            break                       # P_NEED (TLS: Python fills rx), actions, control frames...
        if now - t0 >= budget:
            break
        if work:
            wait.reset(wstate)
        else:
            if g[G_WARM_AB] == 0 or ((now >> g[G_WARM_AB]) & 1) == 0:
                if netwarm.tick(nwarm, nbuf, now) == 1 and dry_rec[records.RTYPE_OFF] != 0:
                    g[G_PATH_WARM] = 1
            wait.idle(wparams, wstate)
    g[G_NEED] = need
    g[G_ENGINE_RC] = erc
    if r == wsframe.P_BUDGET:
        return wsframe.P_IDLE
    return r


_SIG = dict(cache=True, nogil=True, _nrt=False)


@njit(**_SIG)
def step_binance(md, cal, en, fx, frx, g, wait_):
    return run_loop(binance.pump, md, cal, en, fx, frx, g, wait_)


@njit(**_SIG)
def step_coinbase(md, cal, en, fx, frx, g, wait_):
    return run_loop(coinbase.pump, md, cal, en, fx, frx, g, wait_)


@njit(**_SIG)
def step_coinbase_advanced(md, cal, en, fx, frx, g, wait_):
    return run_loop(coinbase_advanced.pump, md, cal, en, fx, frx, g, wait_)


@njit(**_SIG)
def step_kraken(md, cal, en, fx, frx, g, wait_):
    return run_loop(kraken.pump, md, cal, en, fx, frx, g, wait_)


@njit(**_SIG)
def step_bitstamp(md, cal, en, fx, frx, g, wait_):
    return run_loop(bitstamp.pump, md, cal, en, fx, frx, g, wait_)


@njit(**_SIG)
def step_bitfinex(md, cal, en, fx, frx, g, wait_):
    return run_loop(bitfinex.pump, md, cal, en, fx, frx, g, wait_)


# one compiled loop per venue of the registry: each a module-level function of its own (the numba
# cache keys a function by its module and name; a loop made by a factory would not be cached)
STEPS = {"binance": step_binance, "coinbase": step_coinbase,
         "coinbase_advanced": step_coinbase_advanced, "kraken": step_kraken,
         "bitstamp": step_bitstamp, "bitfinex": step_bitfinex}
assert set(STEPS) == set(registry.VENUES), "a venue of the registry has no group loop"


def fix_arrays(gw: "fixgw.Gateway") -> Fix:
    """A FIX gateway's arrays in the kernel's bundle (its own, :data:`fixgw.Fix`); the loop
    writes the sender sequence itself, so the store must map it."""
    if gw.seq_view is None:
        raise ValueError("the one-process loop needs a FIX store that maps its sender sequence")
    return gw.fx


def scratch_args(venue: str) -> tuple:
    """The group loop's arguments ``(md, cal, en, fx, frx, g, wait)`` of ``venue`` with the live
    types,
    on private rings and a scratch engine and FIX gateway (no socket: ``NO_SOCKET``)."""
    from appliance.engine import warm as engine_warm
    from appliance.engine.state import EngineState
    from appliance.fix import codec as C
    from appliance.transport import hist
    from appliance.venues import common
    mod = registry.module(venue)
    cal = clock.calibration()
    feed = mod.Feed([common.Instrument.make("AAAUSDT", "AAA-USDT", "0.01", "0.1")],
                    common.RecordWriter.local(64))
    rx, ws = wsframe.new_state(1 << 10)
    es = EngineState(engine_warm._VENUES, engine_warm._STRATEGIES, cal=cal, clord_base=1)
    oh, od = ring.local_ring(records.ORDER_RECORD_SIZE, 64)
    words = np.zeros(records.CONTROL_BLOCK.itemsize // 8, np.uint64)
    io = es.attach(oh, od, words)
    eh, ed = ring.local_ring(records.EXEC_RECORD_SIZE, 64)
    loop = es.loop([(feed.hdr, feed.data, ring.local_cursor(feed.hdr))],
                   [(eh, ed, ring.local_cursor(eh))], wait.make("spin"), wait.new_state())
    en = Eng(loop, es.books, es.strats, es.gate, es.tel, io)
    instr, syms = C.instrument_tables([("AAAUSDT", "0.01", "0.1")])
    begin, comp = C.session_constants("FIX.4.4", "A", "B")
    consts = np.concatenate([np.array([len(begin), len(comp)], np.uint8), begin, comp])
    fx = Fix(oh, od, ring.local_cursor(oh), eh, ed, np.zeros((3, records.ORDER_RECORD_SIZE), np.uint8),
             np.zeros((C.MAX_MSG + len(begin) + len(comp)) * 2, np.uint8),
             np.zeros(fixgw.G_SIZE, np.int64), consts, instr, syms,
             np.zeros((16, fixgw.OT_COLS), np.int64), cal, words,
             np.zeros((16, fixgw.SM_COLS), np.int64), np.zeros((4, 3), np.int64),
             np.zeros((len(fixgw.HOPS), hist.ROW), np.int64), np.arange(len(fixgw.HOPS), dtype=np.int64),
             np.zeros(20, np.uint8))
    frx = fixgw.Rx(np.zeros(fixgw.RECV_CAP, np.uint8), np.zeros(fixgw.RX_N, np.int64),
                   C.new_parser_state(1, 0, 0), np.zeros((256, records.EXEC_RECORD_SIZE), np.uint8),
                   np.zeros((fixgw.UNKNOWN_CAP, 4), np.int64), np.zeros(20, np.uint8))
    g = new_words(1, 0, 0.0, cal)
    dry, dry_rec = fixgw.dry_bundle(fx)
    return ((NO_SOCKET, rx, ws, feed.st, feed.hdr, feed.data, hist.new_row()), cal, en, fx, frx,
            g, (wait.make("spin"), wait.new_state(), netwarm.off(), np.zeros(netwarm.BUF, np.uint8),
                dry, dry_rec))


def warm_venue(venue: str) -> int:
    """Compile (or load) the group loop of ``venue`` with the live argument types
    (:func:`scratch_args`): one call that handles nothing. Returns the number of compiled
    signatures of the loop (1 once warm)."""
    STEPS[venue](*scratch_args(venue))
    return len(STEPS[venue].signatures)


PAGE = 4096


def prefault(*objs) -> int:
    """Touch every page of the given arrays (namedtuples of arrays are walked) by writing each
    page's first byte back: a page first written on the hot path costs a page fault (several
    microseconds). Only for memory this process alone writes (its private arrays, the data of
    the rings it produces, its telemetry rows): a ring header or the control block is shared
    with other writers and must not be rewritten. Returns the pages touched."""
    n = 0
    for o in objs:
        if isinstance(o, tuple):
            n += prefault(*o)
            continue
        if not isinstance(o, np.ndarray) or not o.flags.writeable or o.size == 0:
            continue
        if not o.flags.c_contiguous:
            continue
        b = o.reshape(-1).view(np.uint8)
        b[::PAGE] = b[::PAGE]
        n += (b.size + PAGE - 1) // PAGE
    return n


def new_words(max_batch: int, engine_idx: int, budget_us: float, cal) -> np.ndarray:
    g = np.zeros(G_N, np.int64)
    g[G_FIX_FD] = -1
    g[G_MAX_BATCH] = max_batch
    g[G_ENGINE_IDX] = engine_idx
    g[G_BUDGET] = int(budget_us * 1e3 * float(cal[clock.C_HZ]) / 1e9)
    return g


# ------------------------------------------------------------------------------------------------
# the actor
# ------------------------------------------------------------------------------------------------
class ActorGroup(Actor):
    """Several actors, one process, one loop (module docstring)."""

    kind = control.ACTOR_OTHER

    def __init__(self, cfg, venue: str, session: str, name: str = NAME,
                 seconds: float | None = None, budget_us: float = DEFAULT_BUDGET_US,
                 warm_ab: int = 0):
        from appliance.engine.run import Engine
        from appliance.venues.gateway import GatewayError, MdGateway
        super().__init__(cfg, name, log)
        if not 0 <= warm_ab <= 62:
            raise ActorError(f"--warm-ab {warm_ab}: a TSC bit, 1 to 62 (0: off)")
        if venue not in STEPS:
            raise ActorError(f"group: no compiled loop for venue {venue!r} (have: "
                             f"{', '.join(STEPS)})")
        try:
            self.md = MdGateway(cfg, venue, seconds=seconds)
        except GatewayError as e:
            raise ActorError(f"group: {e}") from None
        self.engine = Engine(cfg)
        self.fix = fixgw.FixGatewayActor(cfg, session)
        self.members = (self.md, self.engine, self.fix)
        for m in self.members:
            m.core = None                    # the group is pinned (cores.actors.<group name>)
        self.venue = venue
        self.kernel = STEPS[venue]
        self._call = Bound(self.kernel)      # the loop's arguments are the same objects each call
        self.budget_us = budget_us
        self.warm_ab = warm_ab
        self.wparams = wait.from_config(cfg.wait, self.core)
        self.wstate = wait.new_state()
        self.net_warm_us = netwarm.every_us(cfg.wait, self.wparams)
        self.netwarm = None
        self._wait = None
        self.g = None
        self._fx = self._en = self._frx = None
        self._compiled = 0                   # kernel calls that compiled (logged: none should)
        self.rounds: dict[str, int] = {}     # kernel returns by what they left to Python

    # -- lifecycle ------------------------------------------------------------------------
    def request_stop(self, *_args) -> None:
        self.stopping = True
        for m in self.members:
            m.stopping = True

    def warm(self) -> None:
        for m in self.members:
            m.warm()
            if self.stopping:
                return
        t = time.monotonic()
        warm_venue(self.venue)
        self.log.info("%s: %s loop compiled or loaded in %.1f s", self.name, self.venue,
                      time.monotonic() - t)

    def open(self) -> None:
        errors: list[BaseException] = []

        def run(m):
            try:
                m.open()
            except BaseException as e:  # noqa: BLE001 - handed to the group's thread
                errors.append(e)
                self.request_stop()

        threads = [threading.Thread(target=run, args=(m,), name=f"open-{m.name}", daemon=True)
                   for m in self.members]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            first = next((e for e in errors if not isinstance(e, ActorError)
                          or "stopped while waiting" not in str(e)), errors[0])
            raise first

    def _register(self) -> None:
        for m in self.members:
            m._register()

    def start(self) -> None:
        # the kernel spins on its own terms ([wait] strategy of the group); the members' own
        # waits must not sleep inside it
        self.engine.wparams = wait.make("spin")
        self.engine.start()
        self.fix.start()
        self.md.start()
        fgw = self.fix.gw
        fgw.wparams = wait.make("spin")
        mgw = self.md.gw
        mgw.pump_fn = self._pump
        mgw.idle_fn = self._idle
        mgw.heartbeat = self.tick
        es = self.engine.es
        self._en = Eng(self.engine._loop, es.books, es.strats, es.gate, es.tel, es.io)
        self._fx = fix_arrays(fgw)
        self._frx = fgw.rx
        self.g = new_words(self.fix.g.max_batch, self.engine._idx, self.budget_us, es.cal)
        self.g[G_MD_RING] = self.engine.venues.index(self.venue)
        self.g[G_WARM_AB] = self.warm_ab
        self.netwarm = netwarm.NetWarm(self.net_warm_us, es.cal, self.name)
        dry, dry_rec = fixgw.dry_bundle(self._fx)
        if numba.typeof(dry) != numba.typeof(self._fx):
            # one call site takes either bundle: with other array types it would not be the
            # live code that runs dry (or would not compile); no dry runs then
            log.warning("%s: the FIX gateway's arrays are not of the dry bundle's types; the order "
                        "path is not warmed", self.name)
            dry, dry_rec = self._fx, np.zeros_like(dry_rec)
        self._wait = (self.wparams, self.wstate, self.netwarm.words, self.netwarm.buf, dry, dry_rec)
        # every page the loop writes, faulted in now rather than on the first order
        feed = self.md.gw.feed
        es = self.engine.es
        fx = self._fx
        pages = prefault(feed.st, feed.data, mgw.rx[:1 << 20], es.books, es.strats, es.gate,
                         es.tel, es.io.ord_data, es.io.md_buf, es.io.ex_buf,
                         (fx.edata, fx.scratch, fx.sbuf, fx.gst, fx.ot, fx.sent, fx.batch,
                          fx.hists, fx.seq), fgw.rbuf, fgw.rpos, fgw.out, fgw.row1, fgw.unk, self.g,
                         self.md.tm.hists, self.engine.tm.hists)
        self.log.info("%s: %d pages faulted in before going live", self.name, pages)
        for m in self.members:
            m.live = True
        self.log.info("%s: %s + engine + fix.%s in one loop (wait %s, budget %d us, net warm-up "
                      "%s%s)", self.name, self.md.name, self.fix.g.name,
                      wait.kind_name(self.wparams), int(self.budget_us),
                      f"every {self.net_warm_us:g} us" if self.netwarm.on else "off",
                      f", only while TSC bit {self.warm_ab} is 0" if self.warm_ab else "")

    def loop(self) -> None:
        self.md.loop()

    def tick(self, force: bool = False) -> None:
        """The members' heartbeats, and their status publishes started when due: done a piece
        per return to Python (:meth:`_idle`), so that no return does three whole publishes
        (~1.9 ms of Python at once, measured; ``force``: whole, now)."""
        for m in self.members:
            if force:
                m.tick(True)
            else:
                m.beat()
                m.status_due()

    def publish_status(self, wait: bool = False) -> None:
        for m in self.members:
            m.publish_status(wait)

    def close(self) -> None:
        if self.g is not None:
            self.log.info("%s: %s", self.name, json.dumps(self.status()))
        try:
            self.md.close()
        finally:
            try:
                self.engine.close()              # cancels every working order (order ring)
            finally:
                gw = self.fix.gw
                if gw is not None:
                    end = time.monotonic() + 1.0  # the cancels go out before the logout
                    while gw._orders_waiting() and gw.sock is not None and time.monotonic() < end:
                        gw.step()
                self.fix.close()
                if self.netwarm is not None:
                    self.netwarm.close()

    def _release(self) -> None:
        for m in self.members:
            m._writer.close()                    # their status files written before release
            m._release()

    def status(self) -> dict:
        g = self.g
        if g is None:
            return {}
        return {"kernel_calls": int(g[G_CALLS]), "frames": int(g[G_FRAMES]),
                "batches": int(g[G_BATCHES]), "orders": int(g[G_ORDERS]),
                "fix_reads": int(g[G_RX_READS]),
                "md_acks": int(self.md.gw.wsw[wsframe.W_ACKS]) if self.md.gw else 0,
                **(self.netwarm.counts() if self.netwarm is not None else {}),
                "path_warms": int(g[G_PATH_WARMS]),
                "python_rounds": dict(self.rounds)}

    # -- the loop -------------------------------------------------------------------------
    def _pump(self, fd, rx, ws, st, hdr, data, _max_frames, lat, cal) -> int:
        """The md gateway's pump in this layout: one kernel call, then what it left to Python."""
        fgw = self.fix.gw
        g = self.g
        fgw.before_kernel()
        g[G_FIX_FD] = fgw.fast_fd()
        g[G_FIX_RX] = 1 if g[G_FIX_FD] >= 0 and fgw.fast_rx() else 0
        g[G_FIX_ACK] = 1 if fgw.cfg.ack_reads else 0
        rx_ok = g[G_FIX_RX]
        r = self._call((fd, rx, ws, st, hdr, data, lat), cal, self._en, self._fx, self._frx, g,
                       self._wait)
        if self._call.compiled != self._compiled:
            self._compiled = self._call.compiled
            self.log.error("%s: the loop compiled at run time (warm-up types differ from the "
                           "live ones)", self.name)
        self._after(fgw, int(g[G_NEED]), bool(rx_ok))
        return r

    def _after(self, fgw, need: int, rx_ok: bool) -> None:
        g = self.g
        for bit, name in _NEED_NAMES.items():
            if need & bit:
                self.rounds[name] = self.rounds.get(name, 0) + 1
        now = fgw.clock()
        if rx_ok:
            fgw.note_rx_seq(now)
        fgw.after_kernel(now, int(g[G_SEND_LEN]) if need & NEED_SEND else 0, int(g[G_SENT]))
        if rx_ok:
            fgw.after_kernel_rx(now)
        if need & NEED_ENGINE:
            self.engine.after_step(int(g[G_ENGINE_RC]))
        if need & (NEED_FIX_RX | NEED_ORDERS | NEED_FIX_SLOW | NEED_SEND):
            fgw.step()

    def _idle(self, md_live: bool) -> None:
        """Between kernel calls: the FIX gateway's Python step (socket input, session timers,
        kill switch, reconnects), the members' heartbeats; without an md connection the kernel
        runs for the engine and the FIX gateway alone."""
        if not md_live:
            mgw = self.md.gw
            feed = mgw.feed
            self._pump(NO_SOCKET, mgw.rx, mgw.wsw, feed.st, feed.hdr, feed.data, 0, feed.lat,
                       feed.cal)
        self.fix.gw.step()
        now = time.monotonic()
        if now >= self._next_tick:
            self._next_tick = now + 0.05
            self.tick()
        for m in self.members:                   # one piece of one member's status publish
            if m.status_step():
                break

    _next_tick = 0.0
