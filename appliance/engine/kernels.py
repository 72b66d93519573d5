"""The engine's compiled kernels: md records and exec records in, order records out.

Every kernel works on the engine's state bundles (namedtuples of arrays, built by
:class:`appliance.engine.state.EngineState`; numba flattens them, so a bundle costs nothing at
run time and two swapped bundles do not compile)::

    Books       px, qty, n (the books, see book.py), book_map (venue, instrument) -> book row,
                bstate (BS_* per book), marks (book mids for the breaker)
    Strategies  meta, params, state, quotes (see strategies/base.py), pnl (PNL_* per strategy
                and leg), dirty (strategies to reconcile on their next event)
    Gate        oms (oms.Oms), led (positions.Ledger), risk (risk.Risk), rows (scratch rows)
    Telemetry   stats (ST_* counters and flags), lat_hist (order latency, a hist.py row), cal
                (clock calibration)
    Io          ord_hdr, ord_data (the order ring written in place), words (control block),
                md_buf, ex_buf (one md / exec record of scratch)
    Loop        md_hdrs, md_datas, md_curs (one md ring per venue, padded to MAX_MD_RINGS),
                ex_hdrs, ex_datas, ex_curs (one exec ring per FIX session, padded to
                MAX_EXEC_RINGS), wait_params, wait_state (the wait strategy), settings (LP_*)

Kernels (all ``@njit(cache=True, nogil=True, _nrt=False)``; codes, never exceptions)::

    step(loop, books, strats, gate, tel, io, actor_idx, max_iters) -> STEP_*
    handle_md(rec, books, strats, gate, tel, io) -> STEP_*
    handle_exec(rec, books, strats, gate, tel, io) -> STEP_*
    check_kill(books, strats, gate, tel, io) -> STEP_*
    run_records(md, n_rec, books, strats, gate, tel, io) -> orders written in total
    reconcile(i, books, strats, gate, tel, io)
    cancel_all(strats, gate, tel, io, now) -> cancels written
    check_stuck(gate, tel, io, now_ns, timeout_ns) -> stuck requests

``step`` is the actor's loop body: it polls every md ring (one per gateway, merged by polling each
in turn), every exec ring (one per FIX session) and the kill switch up to ``max_iters`` times or for about a millisecond,
then returns so the Python loop can heartbeat, persist a halt and look at signals. Python never
touches a message. A loop compiled elsewhere (the backtest: engine + exchange simulator in one
compiled loop) calls the same three kernels per event, in event order: ``check_kill`` before each
md record, ``handle_md`` for it, ``handle_exec`` for each exec record it produces, and reads the
orders from ``io.ord_data`` (slots up to ``ring.head(io.ord_hdr)``).

Per md record (``handle_md``)::

    L2_UPDATE    book.update on the (venue, instrument) book row; a first F_SNAPSHOT record
                 clears the book (it is being rebuilt); bad updates are counted, never raised
    BATCH_END    the book is consistent: every strategy with a leg on it runs ``on_book``,
                 then its quote slots are reconciled into orders
    TRADE        ``on_trade`` of the strategies on that book (toxicity), then reconcile
    BOOK_STATUS  INVALID clears the book and makes its strategies pull their quotes; VALID
                 lets them quote again
    other        ignored (BBO is not book state); unknown instruments are counted

Orders go through the OMS (:mod:`appliance.engine.oms`) and the three-tier risk gate
(:mod:`appliance.engine.risk`) over the ledger (:mod:`appliance.engine.positions`):

- ``reconcile``: quote slot ``s`` of strategy ``i`` is OMS quote slot ``i * Q_SLOTS + s``;
  ``oms.reconcile`` says NEW / REPLACE / CANCEL / WAIT (a request in flight: the slot waits for
  its ack), ``risk.check`` / ``check_cancel`` gate it (a denial is counted by reason in
  ``risk.denials`` and in ST_RISK_REJECTS), ``oms.new_order`` / ``replace_order`` /
  ``cancel_order`` book it and ``oms.write_*`` renders the record in place in the next order
  ring slot (``ring.begin_write``; ``_end_order`` sets the strategy's record flags, stamps and
  publishes it). Cancels and replaces that move away from the other side go first, so a quote
  pair shifting through its own prices does not trip self-trade prevention. A slot left out of
  sync (denied, refused, waiting) marks the strategy ``dirty``: it is reconciled again on its
  next event even when its quotes did not change. A take (IOC) is checked as a new order and
  fires once. In REDUCING, an order on the side that unwinds the position is cut to the
  quantity left to unwind; the gate refuses everything else. No order, replace or cancel is
  written for a FIX session that is not ready (``ST_SESS_READY``).
- ``handle_exec``: ``oms.apply_exec`` (exec-id dedup, state machine, ledger fills); a venue
  reject feeds ``risk.on_venue_reject``; a fill goes to the strategy (``on_fill``, per-strategy
  PnL for reporting) and to ``_breaker``; a fill of an order the OMS does not know (sent before
  a restart) is booked to the ledger row of its (venue, instrument) (``orphans.book_fill``,
  exec-id dedup) and to ``_breaker``; a SESSION record sets the session's readiness (after a
  restart, SESSION_RECONCILED counts only when its ``reconcile_id`` is the request the engine
  waits for, ``ST_RECON_ID``).
- ``_breaker`` (tiers 2 and 3), after every fill and every book batch (marks = book mids) of
  an instrument with a position (or while the breaker is tripped, for its scheduled reset):
  ``risk.breaker_update`` (loss streak / drawdown -> REDUCING / PAUSED, reset at the configured
  UTC time; equity below -max_loss -> HALTED and the kill switch set from compiled code), then
  the state goes to the control block (``risk_state``: ``appliance status`` shows it).
- ``cancel_all`` (kill, shutdown): ``oms.live_rows`` + ``cancel_order`` + ``write_cancel``,
  no throttle.
- ``check_stuck`` (strategy timer): a new / cancel / replace unanswered for ``ack_timeout_ms``
  leaves the order's state at the venue unknown: the breaker goes PAUSED (cause
  ``ack_timeout``) and ``stuck_requests`` counts them until the venue (or the gateway's
  reconnect reconciliation) answers; a cancel rejected as "unknown order" ends the order.

Instruments: the ledger / OMS / gate index ``ii`` is the book row (one per traded
(venue, symbol)). Times given to the gate are UTC ns (``clock.tsc_to_utc_ns``).

Kill switch: ``check_kill`` reads the control block's kill flag. On a new kill epoch the engine
halts (no new orders or replaces), puts a CANCEL for every live order it can cancel on the
order ring and writes ``kill_ack_epoch`` in the same call: the acknowledgement means the engine
sends nothing new and has asked for every cancel it can. An order whose replace is in flight
cannot be cancelled before the venue answers the replace (ST_KILL_BUSY counts those): its
cancel goes out on the first call after the answer, without waiting for it here (it is a venue
round trip, milliseconds). That nothing is left working at the venue is what each FIX gateway
confirms (``appliance kill`` waits for both). Books and strategy state keep updating while HALTED; clearing the flag (manual
reset) resumes trading (the gate re-halts at once if the loss is still beyond max_loss).

Every order record carries the origin TSC of the md event that caused it; the engine adds
``publish_tsc - origin`` (ns) to ``tel.lat_hist`` (:mod:`appliance.transport.hist`) for every
order it writes.

Code layout. Helpers on the order path are separate functions compiled once each with
``forceinline=True``: LLVM inlines them into their callers when it links them, so the order path
(strategy -> reconcile -> risk -> OMS -> record) runs as one body with the bundles' arrays in
registers, while numba types each helper once (numba-level ``inline='always'`` would type the
callee again at every call site). ``handle_md`` and ``check_kill`` are force-inlined into the
loops that call them (``step``, ``run_records``, a backtest loop); ``handle_exec``,
``cancel_all`` and the timer path are plain calls. The first L2 update of a frame prefetches
what an order on that book will touch (``_warm_order_path``), so the decision at BATCH_END does
not wait on memory. Constants passed to a compiled helper are wrapped (``np.int64(OS_NEW)``):
numba compiles a separate specialisation of the callee for every literal value it is given.

Return codes of ``step``: STEP_OK, STEP_KILL_SEEN (a kill epoch was acknowledged in this call:
Python persists the halt), STEP_MAX_LOSS (this call set the kill switch on max loss).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from appliance import jit
from appliance.engine import book, oms, orphans, risk
from appliance.engine import strategies as strat
from appliance.engine.strategies import base
from appliance.jit import HELPER, INTERNAL
from appliance.transport import clock, control, hist, records, ring, wait
from appliance.transport.intrinsics import fence_seq_cst, load_relaxed, prefetch_write, rdtsc
from appliance.transport.prefetch import row as _pf_row

# --- book state (bstate[b, BS_*]) --------------------------------------------------------------
BS_VALID = 0
BS_SNAP = 1        # inside a snapshot (book being rebuilt)
BS_EVENTS = 2
BS_WARM = 3        # the order path's cache lines were prefetched for the frame in progress
BS_NSTRAT = 4      # strategies with a leg on the book (BS_STRAT.. lists them), -1: scan all
BS_STRAT = 5
BS_MAX_STRAT = 11  # listed per book; a book with more falls back to scanning every strategy
BS_N = BS_STRAT + BS_MAX_STRAT

# --- loop settings (int64, Loop.settings) ------------------------------------------------------
LP_TIMER_TSC = 0       # strategy timer period in ticks
LP_STEP_TSC = 1        # a step returns to Python after at most about this many ticks
LP_ACK_TIMEOUT_NS = 2  # a request unanswered this long is stuck (see check_stuck)
LP_N_MD = 3            # md rings polled: the first LP_N_MD entries of Loop.md_*
LP_N_EX = 4            # exec rings polled: the first LP_N_EX entries of Loop.ex_*
LP_N = 8
# Loop.md_* / ex_* always hold MAX_MD_RINGS / MAX_EXEC_RINGS entries (unused ones point at an
# empty ring that is never polled): the tuples' length is part of step's compiled type, so one
# compiled step serves any number of venues and FIX sessions
MAX_MD_RINGS = 8
MAX_EXEC_RINGS = 8

# --- stats (int64, Telemetry.stats) ------------------------------------------------------------
ST_MD = 0
ST_L2 = 1
ST_TRADES = 2
ST_BATCHES = 3
ST_BOOK_ERRORS = 4
ST_UNKNOWN_INSTR = 5
ST_NEW = 6
ST_REPLACE = 7
ST_CANCEL = 8
ST_RISK_REJECTS = 9
ST_FILLS = 10
ST_EXEC_REJECTS = 11
ST_EXEC_UNMATCHED = 12
ST_ACKS = 13
ST_HALTED = 14
ST_ACKED_EPOCH = 15
ST_CLORD_NEXT = 16
ST_LOOPS = 17
ST_OPEN = 18       # filled in from the OMS by stats_dict (not kept on the hot path)
ST_LAT_N = 19      # filled in from lat_hist by stats_dict
ST_KILL_CANCELS = 22
ST_EXEC = 23
ST_LAST_TIMER = 24
ST_BOOK_INVALID = 25
ST_SESSION_DOWN = 26
ST_IGNORED = 27    # md / exec records of a kind the engine does not use (BBO, control...)
ST_OMS_REFUSED = 28   # the OMS refused a request the risk gate passed (table / live list full)
ST_RISK_STATE = 29    # last records.RISK_* published to the control block
ST_KILL_BUSY = 30     # orders a kill could not cancel yet (replace in flight): retried
ST_EXEC_OTHER = 31    # duplicate / stale / cancel-reject exec reports (see the OMS counters)
ST_KILL_EPOCH = 32    # kill epoch being handled (acknowledged once its cancels are asked for)
ST_STUCK = 33         # requests unanswered past ack_timeout_ms at the last scan (gauge)
ST_STUCK_SEEN = 34    # scans that found stuck requests
ST_ORPHAN_FILLS = 35  # fills of orders the OMS does not know, booked to the ledger (orphans.py)
ST_SESS_STALE = 36    # SESSION_RECONCILED records that answer no request the engine waits for
ST_MD_IN = 37         # TSC at which step read the md record being handled (0 outside handle_md):
                      # the start of the md_to_order hop of the orders it triggers
# FIX session readiness, one word per session index: 1 once the gateway published
# SESSION_RECONCILED, 0 after SESSION_UP (reconciling) or SESSION_DOWN. No order, replace or
# cancel is written for a session that is not ready (the gateway would refuse or lose it).
MAX_SESSIONS = 8
ST_SESS_READY = 40
# the RT_RECONCILE request (its clord_id) the engine waits for per session after a restart
# (engine/recovery.py), 0 = none: until the gateway's SESSION_RECONCILED names it, the session
# stays not ready
ST_RECON_ID = ST_SESS_READY + MAX_SESSIONS
ST_N = ST_RECON_ID + MAX_SESSIONS
STAT_NAMES = {ST_MD: "md", ST_L2: "l2", ST_TRADES: "trades", ST_BATCHES: "batches",
              ST_BOOK_ERRORS: "book_errors", ST_UNKNOWN_INSTR: "unknown_instrument",
              ST_NEW: "new", ST_REPLACE: "replace", ST_CANCEL: "cancel",
              ST_RISK_REJECTS: "risk_rejects", ST_FILLS: "fills",
              ST_EXEC_REJECTS: "exec_rejects", ST_EXEC_UNMATCHED: "exec_unmatched",
              ST_ACKS: "acks", ST_HALTED: "halted", ST_ACKED_EPOCH: "acked_epoch",
              ST_LOOPS: "loops", ST_OPEN: "open_orders", ST_LAT_N: "latency_n",
              ST_KILL_CANCELS: "kill_cancels", ST_EXEC: "exec", ST_BOOK_INVALID: "book_invalid",
              ST_SESSION_DOWN: "session_down", ST_IGNORED: "ignored",
              ST_OMS_REFUSED: "oms_refused", ST_KILL_BUSY: "kill_busy",
              ST_EXEC_OTHER: "exec_other", ST_STUCK: "stuck_requests",
              ST_STUCK_SEEN: "stuck_scans", ST_ORPHAN_FILLS: "orphan_fills",
              ST_SESS_STALE: "stale_reconciled"}

STEP_OK = 0
STEP_KILL_SEEN = 1
STEP_MAX_LOSS = 2

# _reconcile_slot results (plain int64: they travel in a tuple)
DONE = np.int64(0)
DEFER = np.int64(1)

# PnL per strategy and leg (int64[S, MAX_LEGS, PNL_N])
PNL_POS = 0        # lots, + long
PNL_CASH = 1       # tick-lots: - bought, + sold
PNL_FEES = 2       # fee units of the FILL records (1e-8 quote), + paid
PNL_N = 4

MAX_INSTRUMENTS = 256


class EngineError(RuntimeError):
    """The engine cannot run with this setup (message says why)."""


# ------------------------------------------------------------------------------------------ numba

# the engine's hops in its telemetry (Telemetry.hists rows Telemetry.hidx[HOP_*])
HOPS = ("md_ring_hop", "md_to_order")
HOP_RING, HOP_DECISION = range(2)


@njit(**HELPER)
def _lat(tel, origin, now):
    """Add one order's latency (``now - origin`` ticks, in ns) to the histogram, and for an
    order an md record triggered, md_to_order (the record read by step -> this order
    published)."""
    if origin <= 0:
        return
    hist.record(tel.lat_hist, clock.tsc_to_ns(tel.cal, np.int64(now) - origin))
    t_in = tel.stats[ST_MD_IN]
    if t_in > 0:
        hist.record(tel.hists[tel.hidx[HOP_DECISION]], clock.tsc_to_ns(tel.cal,
                                                                      np.int64(now) - t_in))


_U8 = np.uint64(0xFF)
_U16 = np.uint64(0xFFFF)


@njit(**HELPER)
def _end_order(io, slot):
    """Publish the order record the OMS wrote in place into ring slot ``slot`` (taken with
    ``ring.begin_write``). Returns the publish TSC (the end of the order's latency)."""
    t = rdtsc()
    ring.end_write_at(io.ord_hdr, io.ord_data, slot, t)
    return t


@njit(**HELPER)
def _warm_order_path(b, books, strats, gate, io):
    """Prefetch what an order on book ``b`` will touch, at the first L2 update of a frame, so the
    decision at the frame's end does not wait on memory: the next two order ring slots, the OMS
    rows the next orders will take (free stack / oldest retired), the index slots of the next
    clord_ids, the instrument's live orders, aggregates, position, limits, the venue's throttle
    bucket and reservations, the gate's state and the rows of the strategies quoting the book.
    Hints only: nothing waits on them and nothing changes."""
    om = gate.oms
    led = gate.led
    rk = gate.risk
    head = np.int64(load_relaxed(io.ord_hdr, ring.HEAD_OFF))
    mask = io.ord_data.shape[0] - 1
    for k in range(2):
        _pf_row(io.ord_data, (head + k) & mask)
    c = om.ctr
    nfree = c[oms.C_FREE_N]
    for k in range(2):               # the rows the next two oms._alloc calls return
        if k < nfree:
            _pf_row(om.orders, np.int64(om.free[nfree - 1 - k]))
        elif k - nfree < c[oms.C_RET_N]:
            cap = om.retired.shape[0]
            _pf_row(om.orders, np.int64(om.retired[(c[oms.C_RET_HEAD] + k - nfree) % cap]))
    imask = om.index.shape[0] - 1
    for k in range(2):
        prefetch_write(om.index, oms.home_slot(c[oms.C_NEXT_ID] + k, imask) * 4)
    for j in range(om.agg[b, oms.G_LIST_LEN]):
        _pf_row(om.orders, np.int64(om.live[b, j]))
    _pf_row(om.live, b)
    _pf_row(om.agg, b)
    _pf_row(led.pos, b)
    _pf_row(led.instr, b)
    _pf_row(rk.limits, b)
    v = np.int64(led.instr[b].venue)
    _pf_row(rk.buckets, v)
    _pf_row(rk.venue_limits, v)
    _pf_row(led.reserved, v)
    prefetch_write(rk.state, 0)
    prefetch_write(rk.denials, 0)
    for k in range(strats.meta.shape[0]):
        i = _book_strategy(books.bstate, strats.meta, b, k)
        if i < 0:
            break
        _pf_row(strats.quotes, i)
        _pf_row(strats.state, i)
        _pf_row(strats.params, i)
        prefetch_write(om.quote_map, i * base.Q_SLOTS * 4)


@njit(**HELPER)
def _utc_ns(cal, now):
    return np.int64(clock.tsc_to_utc_ns(cal, now))


@njit(**HELPER)
def _publish_state(gate, tel, io):
    """Mirror the risk gate's state (records.RISK_*) into the control block when it changed."""
    st = gate.risk.state[risk.R_STATE]
    if st != tel.stats[ST_RISK_STATE]:
        tel.stats[ST_RISK_STATE] = st
        control.set_risk_state(io.words, st)


@njit(**INTERNAL)
def _breaker(books, gate, tel, io, now_ns):
    """Tiers 2 and 3 after fills and book batches: ``risk.breaker_update`` (loss streak, drawdown
    -> REDUCING / PAUSED; equity below -max_loss -> HALTED and the kill switch set from compiled
    code), then publish the state. Returns STEP_MAX_LOSS when this call set the kill switch."""
    words = io.words
    was = control.kill_requested(words)
    risk.breaker_update(gate.risk, gate.led, books.marks, now_ns, words)
    _publish_state(gate, tel, io)
    if (not was and control.kill_requested(words)
            and gate.risk.state[risk.R_CAUSE] == risk.CB_MAX_LOSS):
        return STEP_MAX_LOSS
    return STEP_OK


@njit(**HELPER)
def _leg_of(meta, i, b):
    """Strategy ``i``'s leg trading book ``b`` (0 when none matches)."""
    for leg in range(meta[i, base.M_NLEGS]):
        if meta[i, base.M_BOOK + leg] == b:
            return leg
    return 0


@njit(**HELPER)
def _session_of(meta, i, b):
    """FIX session of strategy ``i``'s leg on book ``b``."""
    return meta[i, base.M_SESSION + _leg_of(meta, i, b)]


@njit(**HELPER)
def _send_cancel(gate, tel, io, row, origin, now_ns, session, forced):
    """Cancel order ``row`` through the OMS (and the cancel throttle unless ``forced``, the kill
    path); 1 if a CANCEL went on the ring."""
    om = gate.oms
    stats = tel.stats
    if (not forced and risk.check_cancel(gate.risk, gate.led, om.orders[row].ii, now_ns)
            != risk.RJ_OK):
        stats[ST_RISK_REJECTS] += 1
        return 0
    if oms.cancel_order(om, row, now_ns) < 0:
        stats[ST_OMS_REFUSED] += 1
        return 0
    slot = ring.begin_write(io.ord_hdr, io.ord_data)
    oms.write_cancel(om, row, io.ord_data[slot], origin, session)
    t = _end_order(io, slot)
    stats[ST_CANCEL] += 1
    _lat(tel, origin, t)
    return 1


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def reconcile(i, books, strats, gate, tel, io):
    """Turn strategy ``i``'s quote slots (the ``meta[i, M_SLOTS]`` its kind uses) into new /
    replace / cancel records (see the module docstring): cancels and replaces that move away
    from the other side go out in a first pass, the slots that need anything else are done in a
    second, so a quote pair shifting through its own old prices does not self-trade (risk STP)."""
    quotes = strats.quotes
    if tel.stats[ST_HALTED] != 0:
        for s in range(base.Q_SLOTS):
            if quotes[i, s, base.Q_STATE] == base.QS_TAKE:
                quotes[i, s, base.Q_STATE] = base.QS_OFF
        return
    strats.dirty[i] = 0
    # one clock read per reconciliation (at its first request) for the gate's and the OMS's
    # UTC times; each order's latency ends at its own publish stamp
    now_ns = np.int64(0)
    later = 0
    for s in range(strats.meta[i, base.M_SLOTS]):
        code, now_ns = _reconcile_slot(i, s, np.int64(0), books, strats, gate, tel, io, now_ns)
        if code == DEFER:
            later |= 1 << s
    s = 0
    while later != 0:
        if later & 1:
            _, now_ns = _reconcile_slot(i, np.int64(s), np.int64(1), books, strats, gate, tel, io,
                                        now_ns)
        later >>= 1
        s += 1


@njit(**INTERNAL)
def _reconcile_call(i, books, strats, gate, tel, io):
    """``reconcile`` as a plain call (the strategy timer, fills: not worth another inlined copy
    of the order path)."""
    reconcile(i, books, strats, gate, tel, io)


@njit(**HELPER)
def _reconcile_slot(i, s, ps, books, strats, gate, tel, io, now_ns):
    """Slot ``s`` of strategy ``i`` in pass ``ps`` of ``reconcile``: returns (DEFER when pass 0
    leaves the slot to pass 1 (a new order, a take, a replace towards the other side) else
    DONE, the reconciliation's UTC time). ``now_ns`` 0: not read yet (the clock is read at the
    first slot that sends a request). A slot left out of sync (denied, refused, or waiting for
    a request in flight) marks the strategy ``dirty``: it is reconciled again on its next
    event."""
    quotes = strats.quotes
    meta = strats.meta
    dirty = strats.dirty
    om = gate.oms
    stats = tel.stats
    qs = quotes[i, s, base.Q_STATE]
    if qs == base.QS_TAKE and ps == 0:
        return DEFER, now_ns
    origin = quotes[i, s, base.Q_ORIGIN]
    leg = quotes[i, s, base.Q_LEG]
    b = meta[i, base.M_BOOK + leg]
    side = quotes[i, s, base.Q_SIDE]
    price = quotes[i, s, base.Q_PRICE]
    q = quotes[i, s, base.Q_QTY]
    slot_q = i * base.Q_SLOTS + s
    sess = meta[i, base.M_SESSION + leg]
    if sess >= MAX_SESSIONS or stats[ST_SESS_READY + sess] == 0:
        dirty[i] = 1             # session not up and reconciled: try again on a later event
        return DONE, now_ns
    r = oms.quote_row(om, slot_q)
    if qs == base.QS_OFF and r < 0:
        return DONE, now_ns      # nothing wanted, nothing working
    if qs != base.QS_OFF and gate.risk.state[risk.R_STATE] == records.RISK_REDUCING:
        # reduce-only: an order on the side that unwinds the position is cut to what is
        # left to unwind (the gate still checks it); the other side is left to the gate
        pos = gate.led.pos[b].qty
        room = 0
        unwinds = False
        if side == records.SIDE_BUY and pos < 0:
            room = -pos - om.agg[b, oms.G_OPEN_BUY]
            unwinds = True
        elif side == records.SIDE_SELL and pos > 0:
            room = pos - om.agg[b, oms.G_OPEN_SELL]
            unwinds = True
        if unwinds and r >= 0 and qs != base.QS_TAKE and om.orders[r].side == side:
            room += om.orders[r].exposure
        if 0 < room < q:
            q = room
    if qs == base.QS_TAKE:
        quotes[i, s, base.Q_STATE] = base.QS_OFF     # a take fires once, pass or fail
        act = oms.ACT_NEW
        slot_q = -1                                  # an IOC is not a resting quote
    else:
        want = q if qs == base.QS_QUOTE else 0
        if r >= 0:
            o = om.orders[r]
            if want > 0 and (o.side != side or o.ii != b):
                want = 0                 # side / leg changed: cancel first, quote after the ack
        act = oms.reconcile(om, slot_q, price, want, 0, 0)
        if act == oms.ACT_NONE:
            return DONE, now_ns
        if act == oms.ACT_WAIT:
            dirty[i] = 1
            return DONE, now_ns
        away = act == oms.ACT_CANCEL or (act == oms.ACT_REPLACE and (
            (side == records.SIDE_BUY and price <= om.orders[r].price)
            or (side != records.SIDE_BUY and price >= om.orders[r].price)))
        if away != (ps == 0):
            return (DEFER if ps == 0 else DONE), now_ns
    if now_ns == 0:              # the reconciliation's one clock read, at its first request
        now_ns = _utc_ns(tel.cal, clock.now(tel.cal))
    if act == oms.ACT_CANCEL:
        if _send_cancel(gate, tel, io, r, origin, now_ns,
                        _session_of(meta, i, om.orders[r].ii), False) == 0:
            dirty[i] = 1
        return DONE, now_ns
    nb = books.n[b, 0]
    na = books.n[b, 1]
    bid = books.px[b, 0, nb - 1] if nb > 0 else 0
    ask = books.px[b, 1, na - 1] if na > 0 else 0
    ref = (bid + ask) // 2 if nb > 0 and na > 0 else 0
    new = act == oms.ACT_NEW
    # one inlined copy of the gate for both kinds: a new order adds its whole quantity and an
    # open order; a replace adds only the increase of its leaves and cannot trade with itself
    ii = b
    rside = side
    add_qty = q
    add_open = True
    mine = np.int64(-1)
    mine2 = np.int64(-1)
    if not new:
        o = om.orders[r]
        ii = np.int64(o.ii)
        rside = np.int64(o.side)
        add_qty = max(q - o.leaves, 0)
        add_open = False
        mine = r
        mine2 = np.int64(o.link)
    rc = risk.check(gate.risk, om, gate.led,
                    risk.OrderReq(np.int64(ii), np.int64(rside), np.int64(price), np.int64(q),
                                  np.int64(add_qty), add_open, np.int64(mine), np.int64(mine2)),
                    risk.Touch(np.int64(ref), np.int64(bid), np.int64(ask)), now_ns)
    if rc != risk.RJ_OK:
        stats[ST_RISK_REJECTS] += 1
        dirty[i] = 1
        return DONE, now_ns
    if new:
        row = oms.new_order(om, gate.led, b, side, price, q, quotes[i, s, base.Q_TIF],
                            meta[i, base.M_ID], slot_q, now_ns)
    else:
        row = oms.replace_order(om, gate.led, r, price, q, now_ns)
    if row < 0:
        stats[ST_OMS_REFUSED] += 1
        dirty[i] = 1
        return DONE, now_ns
    slot = ring.begin_write(io.ord_hdr, io.ord_data)      # the OMS writes the record in place
    flags = quotes[i, s, base.Q_FLAGS]
    if new:
        oms.write_new(om, row, io.ord_data[slot], origin, sess, flags)
    else:
        oms.write_replace(om, row, io.ord_data[slot], origin, sess, flags)
    t = _end_order(io, slot)
    if new:
        stats[ST_NEW] += 1
    else:
        stats[ST_REPLACE] += 1
    _lat(tel, origin, t)
    return DONE, now_ns


@njit(cache=True, nogil=True, _nrt=False)
def cancel_all(strats, gate, tel, io, now):
    """A CANCEL for every live order (``oms.live_rows``; no throttle: this is the kill path);
    returns how many went out. ``now`` (ticks) is their origin. Orders with a replace in flight
    cannot be cancelled until it is answered: they are counted in ST_KILL_BUSY and
    ``check_kill`` retries them."""
    om = gate.oms
    meta = strats.meta
    now_ns = _utc_ns(tel.cal, now)
    cnt = oms.live_rows(om, np.int64(-1), gate.rows)
    k = 0
    busy = 0
    for j in range(cnt):
        r = gate.rows[j]
        o = om.orders[r]
        st = o.state
        if st == oms.OS_PENDING_REPLACE:
            if o.is_repl == 0:
                busy += 1            # the pair counts once (its old row)
            continue
        if st != oms.OS_NEW and st != oms.OS_PARTIAL and st != oms.OS_PENDING_NEW:
            continue                 # a cancel is already pending
        sess = 0
        st_i = np.int64(o.strategy)
        if st_i < meta.shape[0]:
            sess = _session_of(meta, st_i, o.ii)
        k += _send_cancel(gate, tel, io, r, now, now_ns, sess, True)
    tel.stats[ST_KILL_CANCELS] += k
    tel.stats[ST_KILL_BUSY] = busy
    return k


@njit(cache=True, nogil=True, _nrt=False)
def equity(i, books, strats):
    """Strategy ``i``'s PnL in tick-lots: cash + position marked at each leg's mid (reporting;
    the risk gate works on the ledger, in e8 of the quote asset)."""
    meta = strats.meta
    pnl = strats.pnl
    n = books.n
    tot = 0
    for leg in range(meta[i, base.M_NLEGS]):
        pos = pnl[i, leg, PNL_POS]
        tot += pnl[i, leg, PNL_CASH]
        if pos != 0:
            b = meta[i, base.M_BOOK + leg]
            if n[b, 0] > 0 and n[b, 1] > 0:
                mid = (books.px[b, 0, n[b, 0] - 1] + books.px[b, 1, n[b, 1] - 1]) // 2
                tot += pos * mid
    return tot


@njit(**HELPER)
def _wants(meta, i, b):
    for leg in range(meta[i, base.M_NLEGS]):
        if meta[i, base.M_BOOK + leg] == b:
            return True
    return False


@njit(**HELPER)
def _book_strategy(bstate, meta, b, k):
    """The ``k``-th strategy with a leg on book ``b`` (the book's list in ``bstate``), -1 past
    the last one. A book with more strategies than the list holds scans ``meta``."""
    ns = bstate[b, BS_NSTRAT]
    if ns >= 0:
        return bstate[b, BS_STRAT + k] if k < ns else -1
    seen = 0
    for i in range(meta.shape[0]):
        if _wants(meta, i, b):
            if seen == k:
                return i
            seen += 1
    return -1


@njit(**jit.HELPER)
def handle_md(rec, books, strats, gate, tel, io):
    """Apply one md record (uint8[64], e.g. a row of a block of records) and run what it
    triggers; returns STEP_MAX_LOSS when the loss set the kill switch, else STEP_OK. Fields are
    read as aligned 64-bit words (no record views on the hot path)."""
    stats = tel.stats
    bstate = books.bstate
    px = books.px
    qty = books.qty
    n = books.n
    stats[ST_MD] += 1
    w = load_relaxed(rec, np.uint64(records.TYPE_WORD_OFF))
    rt = np.int64(w & _U8)
    venue = np.int64((w >> np.uint64(8)) & _U8)
    flags = np.int64((w >> np.uint64(16)) & _U16)
    instr = np.int64(w >> np.uint64(32))
    book_map = books.book_map
    if instr >= book_map.shape[1] or venue >= book_map.shape[0]:
        stats[ST_UNKNOWN_INSTR] += 1
        return STEP_OK
    b = book_map[venue, instr]
    if b < 0:
        stats[ST_UNKNOWN_INSTR] += 1
        return STEP_OK
    origin = np.int64(load_relaxed(rec, np.uint64(records.ORIGIN_TSC_OFF)))
    if rt == records.RT_L2_UPDATE:
        stats[ST_L2] += 1
        if (flags & records.F_SNAPSHOT) != 0:
            if bstate[b, BS_SNAP] == 0:
                book.clear(px, qty, n, b)
                bstate[b, BS_SNAP] = 1
        else:
            bstate[b, BS_SNAP] = 0
        if bstate[b, BS_WARM] == 0:
            bstate[b, BS_WARM] = 1
            _warm_order_path(b, books, strats, gate, io)
        price = np.int64(load_relaxed(rec, np.uint64(records.L2_PRICE_OFF)))
        q = np.int64(load_relaxed(rec, np.uint64(records.L2_QTY_OFF)))
        side = np.int64(load_relaxed(rec, np.uint64(records.L2_SIDE_OFF)) & _U8)
        if side == records.SIDE_BUY or side == records.SIDE_SELL:
            r = book.update(px, qty, n, b, np.int64(0 if side == records.SIDE_BUY else 1), price, q)
        else:
            r = book.BAD_ARG
        if r == book.BAD_ARG:
            stats[ST_BOOK_ERRORS] += 1
        return STEP_OK
    rc = STEP_OK
    price = 0
    q = 0
    side = 0
    if rt == records.RT_BATCH_END or rt == records.RT_BOOK_STATUS:
        if rt == records.RT_BATCH_END:
            stats[ST_BATCHES] += 1
            bstate[b, BS_SNAP] = 0
            bstate[b, BS_WARM] = 0
            if bstate[b, BS_VALID] == 0:
                return STEP_OK
        else:
            status = np.int64(load_relaxed(rec, np.uint64(records.BOOK_STATUS_STATUS_OFF))
                              & _U8)
            if status == records.BOOK_INVALID:
                book.clear(px, qty, n, b)
                bstate[b, BS_VALID] = 0
                stats[ST_BOOK_INVALID] += 1
            else:
                bstate[b, BS_VALID] = 1
        bstate[b, BS_EVENTS] += 1
        if n[b, 0] > 0 and n[b, 1] > 0:
            books.marks[b] = (px[b, 0, n[b, 0] - 1] + px[b, 1, n[b, 1] - 1]) // 2
        # tiers 2/3 first, so this batch's orders already see REDUCING / PAUSED / HALTED; equity
        # moves with this mark only when the book's instrument has a position (fills run the
        # breaker themselves), and a tripped breaker is looked at for its scheduled reset
        if (gate.led.pos[b].qty != 0
                or gate.risk.state[risk.R_STATE] != records.RISK_RUNNING):
            rc = _breaker(books, gate, tel, io, _utc_ns(tel.cal, clock.now(tel.cal)))
    elif rt == records.RT_TRADE:
        stats[ST_TRADES] += 1
        price = np.int64(load_relaxed(rec, np.uint64(records.TRADE_PRICE_OFF)))
        q = np.int64(load_relaxed(rec, np.uint64(records.TRADE_QTY_OFF)))
        side = np.int64(load_relaxed(rec, np.uint64(records.TRADE_SIDE_OFF)) & _U8)
    else:
        stats[ST_IGNORED] += 1
        return STEP_OK
    # the strategies on this book, then their orders: one inlined copy of the order path
    is_book = rt != records.RT_TRADE
    for k in range(strats.meta.shape[0]):
        i = _book_strategy(bstate, strats.meta, b, k)
        if i < 0:
            break
        if is_book:
            ch = strat.on_book(i, strats, books, b, origin, origin)
        else:
            ch = strat.on_trade(i, strats, books, b, price, q, side, origin, origin)
        if ch != base.UNCHANGED or strats.dirty[i] != 0:
            reconcile(i, books, strats, gate, tel, io)
    return rc


@njit(cache=True, nogil=True, _nrt=False)
def handle_exec(rec, books, strats, gate, tel, io):
    """Apply one exec record (uint8[128]) through ``oms.apply_exec`` (dedup, state machine,
    ledger); a venue reject feeds the reject-rate breaker, a fill goes to the strategy and the
    breaker; a SESSION record sets the session's readiness. Returns STEP_MAX_LOSS or STEP_OK."""
    stats = tel.stats
    om = gate.oms
    meta = strats.meta
    stats[ST_EXEC] += 1
    rt = rec[records.RTYPE_OFF]
    if rt == records.RT_SESSION:
        s = rec.view(records.SESSION)
        st = s[0].state
        if st == records.SESSION_DOWN:
            stats[ST_SESSION_DOWN] += 1
        sess = np.int64(s[0].session)
        if sess < MAX_SESSIONS:
            ready = 0
            if st == records.SESSION_RECONCILED:
                want = stats[ST_RECON_ID + sess]
                if want != 0 and np.int64(s[0].reconcile_id) != want:
                    stats[ST_SESS_STALE] += 1      # not the answer to the engine's request
                else:
                    stats[ST_RECON_ID + sess] = 0
                    ready = 1
            stats[ST_SESS_READY + sess] = ready
        return STEP_OK
    now_ns = _utc_ns(tel.cal, clock.now(tel.cal))
    code = oms.apply_exec(om, gate.led, rec, now_ns)
    if code == oms.EX_IGNORED:
        stats[ST_IGNORED] += 1
        return STEP_OK
    if code == oms.EX_UNKNOWN and rt == records.RT_FILL:
        # an order this engine does not know (sent before a restart): the fill is still money
        bf = orphans.book_fill(om, gate.led, books.book_map, rec)
        if bf == orphans.BF_BOOKED:
            stats[ST_FILLS] += 1
            stats[ST_ORPHAN_FILLS] += 1
            return _breaker(books, gate, tel, io, now_ns)
        if bf == orphans.BF_DUPLICATE:
            stats[ST_EXEC_OTHER] += 1
            return STEP_OK
    if code == oms.EX_UNKNOWN or code == oms.EX_INVALID:
        stats[ST_EXEC_UNMATCHED] += 1
        return STEP_OK
    a = rec.view(records.ACK)     # clord_id / orig_clord_id share offsets across exec kinds
    r = oms.find_order(om, a[0].clord_id)
    if r < 0:
        r = oms.find_order(om, a[0].orig_clord_id)
    if r >= 0 and np.int64(om.orders[r].strategy) < strats.dirty.shape[0]:
        strats.dirty[np.int64(om.orders[r].strategy)] = 1     # its quotes may go out now
    if code == oms.EX_ACK:
        stats[ST_ACKS] += 1
        return STEP_OK
    if code == oms.EX_REJECT:
        stats[ST_EXEC_REJECTS] += 1
        risk.on_venue_reject(gate.risk, now_ns)
        _publish_state(gate, tel, io)
        return STEP_OK
    if code != oms.EX_FILL:
        stats[ST_EXEC_OTHER] += 1      # duplicate, stale, cancel reject: the OMS counts each
        return STEP_OK
    f = rec.view(records.FILL)
    stats[ST_FILLS] += 1
    if r >= 0:
        i = np.int64(om.orders[r].strategy)
        if i < meta.shape[0]:
            leg = _leg_of(meta, i, om.orders[r].ii)
            side = np.int64(f[0].side)
            price = np.int64(f[0].last_price)
            q = np.int64(f[0].last_qty)
            pnl = strats.pnl
            if side == records.SIDE_BUY:
                pnl[i, leg, PNL_POS] += q
                pnl[i, leg, PNL_CASH] -= q * price
            else:
                pnl[i, leg, PNL_POS] -= q
                pnl[i, leg, PNL_CASH] += q * price
            pnl[i, leg, PNL_FEES] += f[0].fee
            strat.on_fill(i, strats, leg, side, price, q, np.int64(f[0].origin_tsc))
    return _breaker(books, gate, tel, io, now_ns)


@njit(**INTERNAL)
def _kill_path(books, strats, gate, tel, io):
    """``check_kill`` once the flag is set or the engine is halted (the rare path)."""
    stats = tel.stats
    words = io.words
    cal = tel.cal
    if control.kill_requested(words):
        ep = np.int64(control.kill_epoch(words))
        now = clock.now(cal)
        if stats[ST_HALTED] == 0 or stats[ST_KILL_EPOCH] != ep:
            stats[ST_HALTED] = 1
            stats[ST_KILL_EPOCH] = ep
            cancel_all(strats, gate, tel, io, now)
            risk.breaker_update(gate.risk, gate.led, books.marks, _utc_ns(cal, now),
                                words)   # -> HALTED
            stats[ST_RISK_STATE] = records.RISK_HALTED
            control.set_risk_state(words, records.RISK_HALTED)
        elif stats[ST_KILL_BUSY] != 0:
            cancel_all(strats, gate, tel, io, now)
        if stats[ST_ACKED_EPOCH] != ep:
            control.ack_kill(words, np.uint64(ep), np.uint64(clock.tsc_to_utc_ns(cal, now)))
            stats[ST_ACKED_EPOCH] = ep
            return STEP_KILL_SEEN
        return STEP_OK
    # a manual reset cleared the flag: the gate resumes
    stats[ST_HALTED] = 0
    stats[ST_KILL_BUSY] = 0
    risk.breaker_update(gate.risk, gate.led, books.marks, _utc_ns(cal, clock.now(cal)), words)
    stats[ST_RISK_STATE] = -1
    _publish_state(gate, tel, io)
    return STEP_OK


@njit(**jit.HELPER)
def check_kill(books, strats, gate, tel, io):
    """Read the kill switch; on a new epoch halt, cancel every live order and acknowledge (see
    the module docstring). Orders whose replace is in flight cannot be cancelled until the venue
    answers it: they are retried on every call while halted. Returns STEP_KILL_SEEN when this
    call acknowledged an epoch."""
    if control.kill_requested(io.words) or tel.stats[ST_HALTED] != 0:
        return _kill_path(books, strats, gate, tel, io)
    return STEP_OK


@njit(cache=True, nogil=True, _nrt=False)
def check_stuck(gate, tel, io, now_ns, timeout_ns):
    """Requests the venue never answered: live orders pending (new / cancel / replace) for more
    than ``timeout_ns``. Their state at the venue is unknown (a lost message, a gateway that
    died with them), so while any exists the breaker is PAUSED (cause ``ack_timeout``: no new
    exposure; the usual reset rules apply) and ``stats[ST_STUCK]`` says how many. Runs on the
    strategy timer. Returns the count."""
    om = gate.oms
    rows = gate.rows
    cnt = oms.live_rows(om, np.int64(-1), rows)
    stuck = 0
    for j in range(cnt):
        o = om.orders[rows[j]]
        st = o.state
        if (st == oms.OS_PENDING_NEW or st == oms.OS_PENDING_CANCEL
                or st == oms.OS_PENDING_REPLACE) and now_ns - o.updated_ns > timeout_ns:
            stuck += 1
    tel.stats[ST_STUCK] = stuck
    if stuck > 0:
        tel.stats[ST_STUCK_SEEN] += 1
        if gate.risk.state[risk.R_STATE] < records.RISK_PAUSED:
            risk.trip(gate.risk, np.int64(records.RISK_PAUSED), np.int64(risk.CB_ACK_TIMEOUT), now_ns)
            _publish_state(gate, tel, io)
    return stuck


@njit(**INTERNAL)
def _on_timer(books, strats, gate, tel, io, now, timeout_ns):
    """The strategy timer: stuck requests, then every strategy's ``on_timer`` and the
    reconciliation of those that changed or are dirty."""
    check_stuck(gate, tel, io, _utc_ns(tel.cal, now), timeout_ns)
    for i in range(strats.meta.shape[0]):
        if strat.on_timer(i, strats, books, now) != base.UNCHANGED or strats.dirty[i] != 0:
            _reconcile_call(i, books, strats, gate, tel, io)


@njit(cache=True, nogil=True, _nrt=False)
def _idle(loop):
    """The wait strategy after an empty pass. Where the back-off would sleep, the engine sleeps
    on the doorbells of all its input rings (transport/ring.py): a producer's notify ends the
    sleep, the back-off's sleep bounds it."""
    p = loop.wait_params
    s = loop.wait_state
    n_md = loop.settings[LP_N_MD]
    n_ex = loop.settings[LP_N_EX]
    if n_md + n_ex == 0 or loop.bells.shape[0] < n_md + n_ex or not wait.will_sleep(p, s):
        wait.idle(p, s)
        return
    for r in range(n_md):
        ring.arm(loop.md_hdrs[r], loop.bells, r)
    for r in range(n_ex):
        ring.arm(loop.ex_hdrs[r], loop.bells, n_md + r)
    fence_seq_cst()
    for r in range(n_md):
        if ring.behind(loop.md_hdrs[r], loop.md_curs[r]) > 0:
            return                       # published meanwhile: no sleep
    for r in range(n_ex):
        if ring.behind(loop.ex_hdrs[r], loop.ex_curs[r]) > 0:
            return
    wait.sleep_bells(p, s, loop.bells, n_md + n_ex)


@njit(cache=True, nogil=True, _nrt=False)
def step(loop, books, strats, gate, tel, io, actor_idx, max_iters):
    """Poll every input up to ``max_iters`` times or for about a millisecond, whichever ends
    first (see the module docstring), then heartbeat; returns STEP_* (the most important event
    of the call)."""
    ret = STEP_OK
    stats = tel.stats
    cal = tel.cal
    settings = loop.settings
    t_start = clock.now(cal)
    for _ in range(max_iters):
        stats[ST_LOOPS] += 1
        k = check_kill(books, strats, gate, tel, io)
        if k > ret:
            ret = k
        work = 0
        for r in range(settings[LP_N_MD]):
            if ring.poll(loop.md_hdrs[r], loop.md_datas[r], loop.md_curs[r], io.md_buf) == 1:
                work += 1
                t_in = np.int64(rdtsc())
                pub = np.int64(load_relaxed(io.md_buf, np.uint64(records.PUBLISH_TSC_OFF)))
                if 0 < pub < t_in:                  # md_ring_hop: published -> read here
                    hist.record(tel.hists[tel.hidx[HOP_RING]], clock.tsc_to_ns(cal, t_in - pub))
                stats[ST_MD_IN] = t_in
                c = handle_md(io.md_buf, books, strats, gate, tel, io)
                stats[ST_MD_IN] = 0
                if c > ret:
                    ret = c
        for r in range(settings[LP_N_EX]):
            if ring.poll(loop.ex_hdrs[r], loop.ex_datas[r], loop.ex_curs[r], io.ex_buf) == 1:
                work += 1
                c = handle_exec(io.ex_buf, books, strats, gate, tel, io)
                if c > ret:
                    ret = c
        now = clock.now(cal)
        if now - stats[ST_LAST_TIMER] >= settings[LP_TIMER_TSC]:
            stats[ST_LAST_TIMER] = now
            _on_timer(books, strats, gate, tel, io, now, settings[LP_ACK_TIMEOUT_NS])
        if work == 0:
            _idle(loop)
        else:
            ring.notify(io.ord_hdr)      # the orders of this pass: wake a FIX gateway asleep
            wait.reset(loop.wait_state)
        if now - t_start >= settings[LP_STEP_TSC]:
            break                      # back to Python about every millisecond (signals)
    now = clock.now(cal)
    control.heartbeat(io.words, actor_idx, np.uint64(clock.tsc_to_utc_ns(cal, now)))
    return ret


@njit(cache=True, nogil=True, _nrt=False)
def run_records(md, n_rec, books, strats, gate, tel, io):
    """Feed the first ``n_rec`` md records of ``md`` (uint8[N, 64]) straight through
    ``handle_md``, checking the kill switch before each (in-process use: tests, benches, tools);
    returns the orders written in total (new + replace + cancel)."""
    stats = tel.stats
    for k in range(n_rec):
        check_kill(books, strats, gate, tel, io)
        handle_md(md[k], books, strats, gate, tel, io)
    return stats[ST_NEW] + stats[ST_REPLACE] + stats[ST_CANCEL]
