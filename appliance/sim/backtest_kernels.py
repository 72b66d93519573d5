"""The backtest's compiled loop (see :mod:`appliance.sim.backtest` for what it does and why).

``run_events`` merges the five event sources in time order and calls the production engine
kernels (``handle_md``, ``handle_exec``, ``check_kill``, the strategy timer as ``step`` runs it)
and the exchange simulator (:mod:`appliance.sim.matching`) for each event. Consecutive md
records reach the simulator in one inner loop until another source is due. It returns RC_* codes
(never raises), allocates nothing, and writes every order sent and exec record received to the
tape (``tape`` rows + ``aux`` columns) that Python hashes and reports from between calls.

Engine API: the bundles of :class:`appliance.engine.state.EngineState` (``books``, ``strats``,
``gate``, ``tel``) and its ``io`` (``es.attach`` on a local order ring and private control
words); the strategy timer is ``kernels._on_timer``, the one ``step`` runs.
"""
from __future__ import annotations

from collections import namedtuple

import numpy as np
from numba import njit

from appliance.engine import kernels as K
from appliance.engine import positions, risk
from appliance.jit import HELPER
from appliance.sim import matching as M
from appliance.transport import clock, records, ring

# --- driver state (bt int64[BT_N]) ----------------------------------------------------------------
BT_KX = 0          # next md record for the exchange
BT_KE = 1          # next md record for the engine
BT_TAPE_N = 2
BT_MK_N = 3
BT_PLOT = 4        # 1: keep the touch of traded books for the plot
BT_EQ_SET = 5
BT_PEAK = 6
BT_MAXDD = 7
BT_RT_SEEN = 8
BT_RT_WINS = 9
BT_KILLS = 10      # kill epochs acknowledged
BT_ENG_EVENTS = 11
BT_LAST_T = 12
BT_FILLS = 13
BT_TIMER_ARM = 14  # time of the first engine-side event since the strategy timer last ran (-1: none)
BT_TIMERS = 15     # strategy timer runs
BT_N = 16
# float words (btf float64[BTF_N])
BTF_RT_SUM = 0
BTF_RT_SUMSQ = 1
BTF_N = 4

RC_BUDGET = 0      # processed the event budget: call again
RC_DONE = 1        # every input consumed, nothing in flight
RC_TAPE_FULL = 2   # flush the tape, call again
RC_SIM_FULL = 3    # the simulator's queue is full (raise queue_capacity)
RC_NAMES = {RC_SIM_FULL: "the exchange simulator's in-flight queue is full (raise "
                         "[sim.exchange] queue_capacity)"}

# tape aux columns (tape_aux int64[TAPE_CAP, AX_N])
AX_T = 0
AX_KIND = 1        # 1 order sent, 2 exec record received
AX_REAL = 2        # fills: realized PnL net of fees, e8, account-wide, after the fill
AX_UNREAL = 3      # fills: unrealized PnL at the marks, e8
AX_POS = 4         # fills: position of the filled instrument after the fill, lots
AX_BOOK = 5        # engine book row of the record (-1 unknown)
AX_N = 8
TAPE_CAP = 1 << 16
TAPE_MARGIN = 8192           # rows an event may write (a kill cancels every live order)
MK_CAP = 1 << 16             # plot marks (t, book, bid, ask)


@njit(**HELPER)
def _tape(tape, aux, bt, rec, t, kind, book_row):
    i = bt[BT_TAPE_N]
    bt[BT_TAPE_N] = i + 1
    row = tape[i]
    for m in range(records.EXEC_RECORD_SIZE):
        row[m] = rec[m]
    for m in range(8):
        row[m] = 0                                  # ver: the ring's
        row[records.PUBLISH_TSC_OFF + m] = 0        # publish stamp: a clock read
    a = aux[i]
    a[AX_T] = t
    a[AX_KIND] = kind
    a[AX_REAL] = 0
    a[AX_UNREAL] = 0
    a[AX_POS] = 0
    a[AX_BOOK] = book_row
    return i


@njit(**HELPER)
def _book_of(book_map, rec):
    v = np.int64(rec[records.VENUE_OFF])
    o = records.INSTRUMENT_OFF
    ins = (np.int64(rec[o]) | (np.int64(rec[o + 1]) << 8) | (np.int64(rec[o + 2]) << 16)
           | (np.int64(rec[o + 3]) << 24))
    if v < book_map.shape[0] and ins < book_map.shape[1]:
        return book_map[v, ins]
    return np.int64(-1)


@njit(cache=True, nogil=True, _nrt=False)
def pnl_parts(led, marks):
    """(realized net of fees, unrealized) in e8 of the quote asset, over every instrument."""
    real = 0
    unreal = 0
    for ii in range(led.pos.shape[0]):
        p = led.pos[ii]
        real += positions.tl_to_e8(led.instr, ii, p.realised) - p.fees_e8
        unreal += positions.tl_to_e8(led.instr, ii, positions.unrealised_tl(led, ii, marks[ii]))
    return real, unreal


@njit(**HELPER)
def _drawdown(bt, eq):
    """Track the equity peak and the largest drop from it (e8)."""
    if bt[BT_EQ_SET] == 0:
        bt[BT_EQ_SET] = 1
        bt[BT_PEAK] = eq if eq > 0 else 0
    if eq > bt[BT_PEAK]:
        bt[BT_PEAK] = eq
    dd = bt[BT_PEAK] - eq
    if dd > bt[BT_MAXDD]:
        bt[BT_MAXDD] = dd


@njit(**HELPER)
def _drain_orders(sim, io, ord_cur, obuf, tape, aux, bt, book_map, t):
    """Order records the engine just wrote: onto the tape and into the simulator's entry queue."""
    while ring.poll(io.ord_hdr, io.ord_data, ord_cur, obuf) == 1:
        _tape(tape, aux, bt, obuf, t, np.int64(1), _book_of(book_map, obuf))
        if M._submit(sim, obuf, t) != M.OK:
            return False
    return True


Run = namedtuple("Run", ["md", "times", "deliver", "bt", "btf", "ord_cur", "obuf", "ebuf",
                         "tape", "aux", "mk"])
Run.__doc__ = """The backtest driver's arrays, as run_events takes them: the md records and
their exchange times, when each reaches the engine (``deliver``), the driver state ``bt`` /
``btf``, the engine's order ring cursor, scratch rows for an order and an exec record, the tape
(``tape`` rows + ``aux`` columns) and the touch marks ``mk``."""


@njit(cache=True, nogil=True, _nrt=False)
def run_events(run, en, sim, timers, budget):
    """Process up to ``budget`` md records (see the module docstring); returns RC_*. ``run``:
    :data:`Run`; ``en``: the engine's ``(books, strats, gate, tel, io)``; ``sim``: the exchange
    simulator; ``timers``: ``(timer_tsc, ack_timeout_ns)``."""
    md, times, deliver, bt, btf, ord_cur, obuf, ebuf, tape, aux, mk = run
    books, strats, gate, tel, io = en
    timer_tsc, ack_timeout_ns = timers
    nrec = md.shape[0]
    stats = tel.stats
    cal = tel.cal
    led = gate.led
    rk = gate.risk
    marks = books.marks
    book_map = books.book_map
    px = books.px
    n = books.n
    done = 0
    while True:
        if bt[BT_TAPE_N] + TAPE_MARGIN > tape.shape[0] or bt[BT_MK_N] + 2 > mk.shape[0]:
            return RC_TAPE_FULL
        kx = bt[BT_KX]
        ke = bt[BT_KE]
        tx = times[kx] if kx < nrec else M.NEVER
        te = deliver[ke] if ke < kx else M.NEVER
        ta = M._next_arrival(sim)
        tr = M._next_response(sim)
        tt = M.NEVER
        if bt[BT_TIMER_ARM] >= 0:
            tt = stats[K.ST_LAST_TIMER] + timer_tsc
            if tt < bt[BT_TIMER_ARM]:
                tt = bt[BT_TIMER_ARM]
        if tx == M.NEVER and te == M.NEVER and ta == M.NEVER and tr == M.NEVER:
            return RC_DONE
        if tt < tx and tt < ta and tt < tr and tt < te:
            # the strategy timer, as the engine's step runs it
            t = tt
            cal[clock.C_EVENT_NOW] = t
            stats[K.ST_LAST_TIMER] = t
            bt[BT_TIMER_ARM] = -1
            bt[BT_TIMERS] += 1
            K._on_timer(books, strats, gate, tel, io, t, ack_timeout_ns)
            if not _drain_orders(sim, io, ord_cur, obuf, tape, aux, bt, book_map, t):
                return RC_SIM_FULL
            continue
        if tx <= ta and tx <= tr and tx <= te:
            # md records reach the exchange one after another until another source is due
            # (a record that produced responses ends the run: the response time changed)
            lim = ta if ta < tr else tr
            if tt < lim:
                lim = tt
            if te < lim:
                lim = te
            while True:
                if done >= budget:
                    bt[BT_KX] = kx
                    return RC_BUDGET
                c = M._on_md(sim, md[kx], 0, tx)
                if c < 0:
                    bt[BT_KX] = kx
                    return RC_SIM_FULL
                d = tx + M._draw(sim, M.LAT_FEED)
                if kx > 0 and d < deliver[kx - 1]:
                    d = deliver[kx - 1]
                deliver[kx] = d
                if kx == ke and d < lim:
                    lim = d                   # the engine waits for exactly this record
                kx += 1
                done += 1
                if c > 0 or kx >= nrec:
                    break
                tx = times[kx]
                if tx > lim:
                    break
            bt[BT_KX] = kx
            continue
        if ta <= tr and ta <= te:
            if M.process_arrivals(sim, ta) < 0:        # a call: arrivals are rare, keep it out of line
                return RC_SIM_FULL
            continue
        if tr <= te:
            t = tr
            cal[clock.C_EVENT_NOW] = t
            bt[BT_LAST_T] = t
            if bt[BT_TIMER_ARM] < 0:
                bt[BT_TIMER_ARM] = t
            M._pop_response(sim, ebuf)
            b = _book_of(book_map, ebuf)
            i = _tape(tape, aux, bt, ebuf, t, np.int64(2), b)
            before = stats[K.ST_FILLS]
            K.handle_exec(ebuf, books, strats, gate, tel, io)
            if stats[K.ST_FILLS] != before:
                bt[BT_FILLS] += 1
                real, unreal = pnl_parts(led, marks)
                _drawdown(bt, real + unreal)
                aux[i, AX_REAL] = real
                aux[i, AX_UNREAL] = unreal
                aux[i, AX_POS] = led.pos[b].qty if b >= 0 else 0
                rtc = led.acct[positions.A_RT_COUNT]
                while bt[BT_RT_SEEN] < rtc:
                    bt[BT_RT_SEEN] += 1
                    v = float(led.acct[positions.A_LAST_RT_E8])
                    btf[BTF_RT_SUM] += v
                    btf[BTF_RT_SUMSQ] += v * v
                    if v > 0.0:
                        bt[BT_RT_WINS] += 1
            continue
        # the engine receives md records from ke on, one after another until another source is
        # due or it sent orders (their arrival is a new event)
        while True:
            t = deliver[ke]
            cal[clock.C_EVENT_NOW] = t
            bt[BT_LAST_T] = t
            bt[BT_ENG_EVENTS] += 1
            if bt[BT_TIMER_ARM] < 0:
                bt[BT_TIMER_ARM] = t
            if K.check_kill(books, strats, gate, tel, io) == K.STEP_KILL_SEEN:
                bt[BT_KILLS] += 1
            K.handle_md(md[ke], books, strats, gate, tel, io)
            sent = bt[BT_TAPE_N]
            if not _drain_orders(sim, io, ord_cur, obuf, tape, aux, bt, book_map, t):
                bt[BT_KE] = ke + 1
                return RC_SIM_FULL
            if md[ke, records.RTYPE_OFF] == records.RT_BATCH_END:
                b = _book_of(book_map, md[ke])
                if b >= 0:
                    if bt[BT_PLOT] != 0 and n[b, 0] > 0 and n[b, 1] > 0:
                        j = bt[BT_MK_N]
                        bt[BT_MK_N] = j + 1
                        mk[j, 0] = t
                        mk[j, 1] = b
                        mk[j, 2] = px[b, 0, n[b, 0] - 1]
                        mk[j, 3] = px[b, 1, n[b, 1] - 1]
                    if led.pos[b].qty != 0:
                        # the engine's breaker just valued the account at this book's new mark
                        _drawdown(bt, rk.state[risk.R_EQUITY_E8])
            ke += 1
            if bt[BT_TAPE_N] != sent or ke >= kx:
                break
            if bt[BT_TAPE_N] + TAPE_MARGIN > tape.shape[0] or bt[BT_MK_N] + 2 > mk.shape[0]:
                break
            t2 = deliver[ke]
            tt = stats[K.ST_LAST_TIMER] + timer_tsc
            if tt < bt[BT_TIMER_ARM]:
                tt = bt[BT_TIMER_ARM]
            if not (t2 < tx and t2 < ta and t2 < tr and t2 <= tt):
                break
        bt[BT_KE] = ke
