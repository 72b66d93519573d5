"""The engine actor: md rings + exec ring -> books -> strategies -> risk -> order ring.

One compiled ``step`` polls every md ring (one per gateway, merged by polling each in turn), the
exec ring and the kill switch, up to ``max_iters`` times, then returns so the Python loop can
heartbeat, persist a halt and look at signals. Python never touches a message.

Per md record (``handle_md``)::

    L2_UPDATE    book.update on the (venue, instrument) book row; a first F_SNAPSHOT record
                 clears the book (it is being rebuilt); bad updates are counted, never raised
    BATCH_END    the book is consistent: every strategy with a leg on it runs ``on_book``,
                 then its quote slots are reconciled into orders
    TRADE        ``on_trade`` of the strategies on that book (toxicity), then reconcile
    BOOK_STATUS  INVALID clears the book and makes its strategies pull their quotes; VALID
                 lets them quote again
    other        ignored (BBO is not book state); unknown instruments are counted

Working orders (``ords[S, Q_SLOTS, O_N]``) are tracked one per quote slot, optimistically: a new
or replace is working as soon as it is written, a cancel frees the slot at once; exec reports
correct the picture (a fill reduces leaves, a reject frees the slot). Client order ids are
``(counter << 16) | (strategy << 8) | slot``, so an exec report finds its slot without a map, and
the counter starts from ``clord_base`` (deterministic in a replay, time-derived in production).

The OMS and the three-tier risk gate of :mod:`appliance.hotpath.oms` / :mod:`.risk` (order
table with pending states, exec-id dedup, exposure, breaker) are not wired in yet: they need the
per-instrument ledger (tick/lot sizes, assets) of :mod:`.positions`. The seams are exactly four
functions here: ``reconcile`` (-> oms.reconcile / new_order / replace_order / cancel_order +
risk.check_*), ``handle_exec`` (-> oms.apply_exec), ``cancel_all`` (-> oms.live_rows +
cancel_order) and ``_check_loss`` (-> risk.breaker_update).

Risk (tier 1, ``risk_check``; every new and replace passes it): halted -> refused; qty in
(0, max_qty]; price within ``collar_ticks`` of the far touch; at most ``max_open`` working orders.
Tier 3: each strategy's PnL (realised + marked to mid, tick-lots summed over its legs) below
``-max_loss_tl`` sets the kill switch from compiled code (source max loss).

Kill switch: every loop iteration reads the control block's kill flag. On a new kill epoch the
engine sends a CANCEL for every working order, stops all new orders and replaces, and then writes
``kill_ack_epoch`` (so an acknowledgement means the cancels are already on the order ring). Books
and strategy state keep updating while HALTED; clearing the flag (manual reset) resumes trading.

Every order record carries the origin TSC of the md event that caused it; the engine adds
``now - origin`` (ns) to a log2 histogram (``lat_hist``) for every order it writes.

Return codes of ``step``: STEP_OK, STEP_KILL_SEEN (a new kill epoch was acknowledged in this
call: Python persists the halt), STEP_MAX_LOSS (this call set the kill switch on max loss).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from appliance.hotpath import book, clock, control, records, ring, wait
from appliance.hotpath import strategies as strat
from appliance.hotpath.intrinsics import load_relaxed, store_relaxed
from appliance.hotpath.strategies import base

# --- order slots ---------------------------------------------------------------------------------
O_STATE = 0
O_CLORD = 1
O_PRICE = 2
O_QTY = 3          # leaves qty
O_SIDE = 4
O_LEG = 5
O_PREV = 6         # clord id before the last replace (its fills still count)
O_N = 8

OS_NONE = 0
OS_WORKING = 1
OS_IOC = 2         # an IOC sent from this slot (not cancellable; kept for its fills)

# --- book state ----------------------------------------------------------------------------------
BS_VALID = 0
BS_SNAP = 1        # inside a snapshot (book being rebuilt)
BS_EVENTS = 2
BS_N = 4

# --- risk params (int64) -------------------------------------------------------------------------
R_MAX_QTY = 0
R_COLLAR = 1
R_MAX_OPEN = 2
R_MAX_LOSS = 3     # tick-lots; 0 = off
R_TIMER_TSC = 4    # strategy timer period in ticks
R_STEP_TSC = 5     # a step returns to Python after at most about this many ticks
R_N = 8

RISK_OK = 0
RISK_HALTED = 1
RISK_QTY = 2
RISK_COLLAR = 3
RISK_MAX_OPEN = 4
RISK_NO_BOOK = 5
RISK_NAMES = {RISK_OK: "OK", RISK_HALTED: "HALTED", RISK_QTY: "QTY", RISK_COLLAR: "COLLAR",
              RISK_MAX_OPEN: "MAX_OPEN", RISK_NO_BOOK: "NO_BOOK"}

# --- stats (int64) ---------------------------------------------------------------------------------
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
ST_OPEN = 18
ST_LAT_N = 19
ST_LAT_SUM = 20
ST_LAT_MAX = 21
ST_KILL_CANCELS = 22
ST_EXEC = 23
ST_LAST_TIMER = 24
ST_BOOK_INVALID = 25
ST_SESSION_DOWN = 26
ST_IGNORED = 27    # md / exec records of a kind the engine does not use (BBO, control...)
ST_N = 32
STAT_NAMES = {ST_MD: "md", ST_L2: "l2", ST_TRADES: "trades", ST_BATCHES: "batches",
              ST_BOOK_ERRORS: "book_errors", ST_UNKNOWN_INSTR: "unknown_instrument",
              ST_NEW: "new", ST_REPLACE: "replace", ST_CANCEL: "cancel",
              ST_RISK_REJECTS: "risk_rejects", ST_FILLS: "fills",
              ST_EXEC_REJECTS: "exec_rejects", ST_EXEC_UNMATCHED: "exec_unmatched",
              ST_ACKS: "acks", ST_HALTED: "halted", ST_ACKED_EPOCH: "acked_epoch",
              ST_LOOPS: "loops", ST_OPEN: "open_orders", ST_LAT_N: "latency_n",
              ST_KILL_CANCELS: "kill_cancels", ST_EXEC: "exec", ST_BOOK_INVALID: "book_invalid",
              ST_SESSION_DOWN: "session_down", ST_IGNORED: "ignored"}

LAT_BUCKETS = 64   # lat_hist[k] counts orders with 2**(k-1) <= ns < 2**k

STEP_OK = 0
STEP_KILL_SEEN = 1
STEP_MAX_LOSS = 2

# PnL per strategy and leg (int64[S, MAX_LEGS, PNL_N])
PNL_POS = 0        # lots, + long
PNL_CASH = 1       # tick-lots: - bought, + sold
PNL_FEES = 2       # fee units of the FILL records (1e-8 quote), + paid
PNL_N = 4

MAX_INSTRUMENTS = 256


class EngineError(RuntimeError):
    """The engine cannot run with this setup (message says why)."""


# ------------------------------------------------------------------------------------------ numba

@njit(cache=True, nogil=True, _nrt=False)
def risk_check(risk, px, n, b, side, price, q, open_orders, halted):
    """Tier-1 pre-trade check of one order; returns RISK_* (RISK_OK passes)."""
    if halted != 0:
        return RISK_HALTED
    if q <= 0 or q > risk[R_MAX_QTY]:
        return RISK_QTY
    if open_orders >= risk[R_MAX_OPEN]:
        return RISK_MAX_OPEN
    nb = n[b, 0]
    na = n[b, 1]
    if nb <= 0 or na <= 0:
        return RISK_NO_BOOK
    collar = risk[R_COLLAR]
    if side == records.SIDE_BUY:
        if price > px[b, 1, na - 1] + collar or price < px[b, 0, nb - 1] - collar:
            return RISK_COLLAR
    else:
        if price < px[b, 0, nb - 1] - collar or price > px[b, 1, na - 1] + collar:
            return RISK_COLLAR
    return RISK_OK


@njit(cache=True, nogil=True, _nrt=False)
def _lat(stats, lat_hist, cal, origin, now):
    """Add one order's latency (``now - origin`` ticks, in ns) to the histogram."""
    if origin <= 0:
        return
    d = clock.tsc_to_ns(cal, now - origin)
    if d < 0:
        d = 0
    k = 0
    v = d
    while v > 0 and k < LAT_BUCKETS - 1:
        v >>= 1
        k += 1
    lat_hist[k] += 1
    stats[ST_LAT_N] += 1
    stats[ST_LAT_SUM] += d
    if d > stats[ST_LAT_MAX]:
        stats[ST_LAT_MAX] = d


_U8 = np.uint64(0xFF)
_U16 = np.uint64(0xFFFF)


@njit(cache=True, nogil=True, _nrt=False)
def write_order(ord_hdr, ord_data, rtype, venue, instr, flags, origin, clord, sid, session, orig,
                side, price, q, tif):
    """Write one order record (RT_NEW_ORDER / RT_REPLACE / RT_CANCEL) straight into the next ring
    slot, word by word (no record views: nothing to reference-count), and publish it. Every byte
    of the record but the ring-owned ``ver`` / ``publish_tsc`` is written, padding included."""
    slot = ring.begin_write(ord_hdr, ord_data)
    b = np.uint64(slot) * np.uint64(ord_data.shape[1])
    hw = (np.uint64(rtype) | (np.uint64(venue) << np.uint64(8)) | (np.uint64(flags) << np.uint64(16))
          | (np.uint64(instr) << np.uint64(32)))
    store_relaxed(ord_data, b + np.uint64(8), hw)
    store_relaxed(ord_data, b + np.uint64(16), np.uint64(origin))
    store_relaxed(ord_data, b + np.uint64(32), np.uint64(clord))
    store_relaxed(ord_data, b + np.uint64(40), np.uint64(sid) | (np.uint64(session) << np.uint64(32)))
    tail = (np.uint64(side) | (np.uint64(records.ORD_LIMIT) << np.uint64(8))
            | (np.uint64(tif) << np.uint64(16)))
    if rtype == records.RT_NEW_ORDER:
        store_relaxed(ord_data, b + np.uint64(48), np.uint64(price))
        store_relaxed(ord_data, b + np.uint64(56), np.uint64(q))
        store_relaxed(ord_data, b + np.uint64(64), tail)
        w = 72
    elif rtype == records.RT_REPLACE:
        store_relaxed(ord_data, b + np.uint64(48), np.uint64(orig))
        store_relaxed(ord_data, b + np.uint64(56), np.uint64(price))
        store_relaxed(ord_data, b + np.uint64(64), np.uint64(q))
        store_relaxed(ord_data, b + np.uint64(72), tail)
        w = 80
    else:
        store_relaxed(ord_data, b + np.uint64(48), np.uint64(orig))
        store_relaxed(ord_data, b + np.uint64(56), np.uint64(q))
        store_relaxed(ord_data, b + np.uint64(64), np.uint64(side))
        w = 72
    while w < ord_data.shape[1]:
        store_relaxed(ord_data, b + np.uint64(w), np.uint64(0))
        w += 8
    ring.end_write(ord_hdr, ord_data, slot)


@njit(cache=True, nogil=True, _nrt=False)
def _next_clord(stats, sid, slot):
    c = stats[ST_CLORD_NEXT]
    stats[ST_CLORD_NEXT] = c + 1
    return (c << 16) | (sid << 8) | slot


@njit(cache=True, nogil=True, _nrt=False)
def _cancel_slot(i, s, meta, ords, stats, ord_hdr, ord_data, cal, lat_hist, origin, now):
    leg = ords[i, s, O_LEG]
    clord = _next_clord(stats, meta[i, base.M_ID], s)
    write_order(ord_hdr, ord_data, records.RT_CANCEL, meta[i, base.M_VENUE + leg],
                meta[i, base.M_INSTR + leg], 0, origin, clord, meta[i, base.M_ID],
                meta[i, base.M_SESSION + leg], ords[i, s, O_CLORD], ords[i, s, O_SIDE], 0,
                ords[i, s, O_QTY], 0)
    ords[i, s, O_STATE] = OS_NONE
    stats[ST_CANCEL] += 1
    stats[ST_OPEN] -= 1
    _lat(stats, lat_hist, cal, origin, now)


@njit(cache=True, nogil=True, _nrt=False)
def reconcile(i, meta, quotes, ords, px, n, risk, stats, lat_hist, cal, ord_hdr, ord_data):
    """Turn strategy ``i``'s quote slots into new / replace / cancel records (via risk)."""
    halted = stats[ST_HALTED]
    sid = meta[i, base.M_ID]
    now = clock.now(cal)        # one clock read per reconciliation: every order's latency end
    for s in range(base.Q_SLOTS):
        qs = quotes[i, s, base.Q_STATE]
        os_ = ords[i, s, O_STATE]
        if halted != 0:
            if qs == base.QS_TAKE:
                quotes[i, s, base.Q_STATE] = base.QS_OFF
            continue
        origin = quotes[i, s, base.Q_ORIGIN]
        if qs == base.QS_OFF:
            if os_ == OS_WORKING:
                _cancel_slot(i, s, meta, ords, stats, ord_hdr, ord_data, cal, lat_hist, origin,
                             now)
            continue
        leg = quotes[i, s, base.Q_LEG]
        b = meta[i, base.M_BOOK + leg]
        side = quotes[i, s, base.Q_SIDE]
        price = quotes[i, s, base.Q_PRICE]
        q = quotes[i, s, base.Q_QTY]
        if qs == base.QS_QUOTE and os_ == OS_WORKING:
            if (ords[i, s, O_PRICE] == price and ords[i, s, O_QTY] == q
                    and ords[i, s, O_SIDE] == side and ords[i, s, O_LEG] == leg):
                continue
            rc = risk_check(risk, px, n, b, side, price, q, stats[ST_OPEN] - 1, halted)
            if rc != RISK_OK:
                stats[ST_RISK_REJECTS] += 1
                continue
            clord = _next_clord(stats, sid, s)
            write_order(ord_hdr, ord_data, records.RT_REPLACE, meta[i, base.M_VENUE + leg],
                        meta[i, base.M_INSTR + leg], quotes[i, s, base.Q_FLAGS], origin, clord,
                        sid, meta[i, base.M_SESSION + leg], ords[i, s, O_CLORD], side, price, q,
                        quotes[i, s, base.Q_TIF])
            ords[i, s, O_PREV] = ords[i, s, O_CLORD]
            ords[i, s, O_CLORD] = clord
            ords[i, s, O_PRICE] = price
            ords[i, s, O_QTY] = q
            ords[i, s, O_SIDE] = side
            stats[ST_REPLACE] += 1
            _lat(stats, lat_hist, cal, origin, now)
            continue
        # a new order: a resting quote with nothing working, or a take
        rc = risk_check(risk, px, n, b, side, price, q, stats[ST_OPEN], halted)
        if qs == base.QS_TAKE:
            quotes[i, s, base.Q_STATE] = base.QS_OFF     # a take fires once, pass or fail
        if rc != RISK_OK:
            stats[ST_RISK_REJECTS] += 1
            continue
        clord = _next_clord(stats, sid, s)
        write_order(ord_hdr, ord_data, records.RT_NEW_ORDER, meta[i, base.M_VENUE + leg],
                    meta[i, base.M_INSTR + leg], quotes[i, s, base.Q_FLAGS], origin, clord, sid,
                    meta[i, base.M_SESSION + leg], 0, side, price, q, quotes[i, s, base.Q_TIF])
        ords[i, s, O_PREV] = 0
        ords[i, s, O_CLORD] = clord
        ords[i, s, O_PRICE] = price
        ords[i, s, O_QTY] = q
        ords[i, s, O_SIDE] = side
        ords[i, s, O_LEG] = leg
        if qs == base.QS_TAKE:
            ords[i, s, O_STATE] = OS_IOC
        else:
            ords[i, s, O_STATE] = OS_WORKING
            stats[ST_OPEN] += 1
        stats[ST_NEW] += 1
        _lat(stats, lat_hist, cal, origin, now)


@njit(cache=True, nogil=True, _nrt=False)
def cancel_all(meta, ords, stats, lat_hist, cal, ord_hdr, ord_data, origin):
    """A CANCEL for every working order of every strategy; returns how many."""
    k = 0
    for i in range(meta.shape[0]):
        for s in range(base.Q_SLOTS):
            if ords[i, s, O_STATE] == OS_WORKING:
                _cancel_slot(i, s, meta, ords, stats, ord_hdr, ord_data, cal, lat_hist, origin,
                             origin)
                k += 1
    stats[ST_KILL_CANCELS] += k
    return k


@njit(cache=True, nogil=True, _nrt=False)
def _equity(i, meta, pnl, px, n):
    """Strategy ``i``'s PnL in tick-lots: cash + position marked at each leg's mid."""
    tot = 0
    for leg in range(meta[i, base.M_NLEGS]):
        pos = pnl[i, leg, PNL_POS]
        tot += pnl[i, leg, PNL_CASH]
        if pos != 0:
            b = meta[i, base.M_BOOK + leg]
            if n[b, 0] > 0 and n[b, 1] > 0:
                mid = (px[b, 0, n[b, 0] - 1] + px[b, 1, n[b, 1] - 1]) // 2
                tot += pos * mid
    return tot


@njit(cache=True, nogil=True, _nrt=False)
def _check_loss(i, meta, pnl, px, n, risk, stats, words, cal):
    """Tier 3: set the kill switch when strategy ``i`` lost more than max_loss; 1 if it did."""
    if risk[R_MAX_LOSS] <= 0 or stats[ST_HALTED] != 0 or control.kill_requested(words):
        return 0
    if _equity(i, meta, pnl, px, n) < -risk[R_MAX_LOSS]:
        control.request_kill(words, control.SOURCE_MAX_LOSS,
                             np.uint64(clock.tsc_to_utc_ns(cal, clock.now(cal))))
        return 1
    return 0


@njit(cache=True, nogil=True, _nrt=False)
def _wants(meta, i, b):
    for leg in range(meta[i, base.M_NLEGS]):
        if meta[i, base.M_BOOK + leg] == b:
            return True
    return False


@njit(cache=True, nogil=True, _nrt=False)
def handle_md(rec, roff, px, qty, n, book_map, bstate, meta, params, state, quotes, ords, pnl,
              risk, stats, lat_hist, cal, ord_hdr, ord_data, words):
    """Apply the md record at byte ``roff`` of ``rec`` (a uint8 buffer or a uint8[N, 64] block)
    and run what it triggers; returns STEP_MAX_LOSS when a strategy's loss set the kill switch,
    else STEP_OK. Fields are read as aligned 64-bit words (no record views on the hot path)."""
    stats[ST_MD] += 1
    o = np.uint64(roff)
    w = load_relaxed(rec, o + np.uint64(8))
    rt = np.int64(w & _U8)
    venue = np.int64((w >> np.uint64(8)) & _U8)
    flags = np.int64((w >> np.uint64(16)) & _U16)
    instr = np.int64(w >> np.uint64(32))
    if instr >= book_map.shape[1] or venue >= book_map.shape[0]:
        stats[ST_UNKNOWN_INSTR] += 1
        return STEP_OK
    b = book_map[venue, instr]
    if b < 0:
        stats[ST_UNKNOWN_INSTR] += 1
        return STEP_OK
    origin = np.int64(load_relaxed(rec, o + np.uint64(16)))
    if rt == records.RT_L2_UPDATE:
        stats[ST_L2] += 1
        if (flags & records.F_SNAPSHOT) != 0:
            if bstate[b, BS_SNAP] == 0:
                book.clear(px, qty, n, b)
                bstate[b, BS_SNAP] = 1
        else:
            bstate[b, BS_SNAP] = 0
        price = np.int64(load_relaxed(rec, o + np.uint64(32)))
        q = np.int64(load_relaxed(rec, o + np.uint64(40)))
        side = np.int64(load_relaxed(rec, o + np.uint64(56)) & _U8)
        if side == records.SIDE_BUY:
            r = book.update(px, qty, n, b, 0, price, q)
        elif side == records.SIDE_SELL:
            r = book.update(px, qty, n, b, 1, price, q)
        else:
            r = book.BAD_ARG
        if r == book.BAD_ARG:
            stats[ST_BOOK_ERRORS] += 1
        return STEP_OK
    rc = STEP_OK
    if rt == records.RT_BATCH_END or rt == records.RT_BOOK_STATUS:
        if rt == records.RT_BATCH_END:
            stats[ST_BATCHES] += 1
            bstate[b, BS_SNAP] = 0
            if bstate[b, BS_VALID] == 0:
                return STEP_OK
        else:
            status = np.int64(load_relaxed(rec, o + np.uint64(40)) & _U8)
            if status == records.BOOK_INVALID:
                book.clear(px, qty, n, b)
                bstate[b, BS_VALID] = 0
                stats[ST_BOOK_INVALID] += 1
            else:
                bstate[b, BS_VALID] = 1
        bstate[b, BS_EVENTS] += 1
        for i in range(meta.shape[0]):
            if not _wants(meta, i, b):
                continue
            if strat.on_book(i, meta, params, state, quotes, px, qty, n, b, origin, origin) \
                    != base.UNCHANGED:
                reconcile(i, meta, quotes, ords, px, n, risk, stats, lat_hist, cal, ord_hdr,
                          ord_data)
            if _check_loss(i, meta, pnl, px, n, risk, stats, words, cal) != 0:
                rc = STEP_MAX_LOSS
        return rc
    if rt == records.RT_TRADE:
        stats[ST_TRADES] += 1
        price = np.int64(load_relaxed(rec, o + np.uint64(32)))
        q = np.int64(load_relaxed(rec, o + np.uint64(40)))
        side = np.int64(load_relaxed(rec, o + np.uint64(56)) & _U8)
        for i in range(meta.shape[0]):
            if not _wants(meta, i, b):
                continue
            if strat.on_trade(i, meta, params, state, quotes, px, qty, n, b, price, q, side,
                              origin, origin) != base.UNCHANGED:
                reconcile(i, meta, quotes, ords, px, n, risk, stats, lat_hist, cal, ord_hdr,
                          ord_data)
        return STEP_OK
    stats[ST_IGNORED] += 1
    return STEP_OK


@njit(cache=True, nogil=True, _nrt=False)
def handle_exec(rec, px, n, meta, params, state, quotes, ords, pnl, risk, stats, words, cal):
    """Apply one exec record (uint8[128]); returns STEP_MAX_LOSS or STEP_OK."""
    stats[ST_EXEC] += 1
    rt = rec[8]
    if rt == records.RT_SESSION:
        s = rec.view(records.SESSION)
        if s[0].state == records.SESSION_DOWN:
            stats[ST_SESSION_DOWN] += 1
        return STEP_OK
    if rt != records.RT_FILL and rt != records.RT_REJECT and rt != records.RT_ACK:
        stats[ST_IGNORED] += 1
        return STEP_OK
    a = rec.view(records.ACK)   # clord_id / orig / strategy share offsets across exec kinds
    clord = np.int64(a[0].clord_id)
    i = (clord >> 8) & 0xFF
    s = clord & 0xFF
    if i >= meta.shape[0] or s >= base.Q_SLOTS or meta[i, base.M_ID] != i:
        stats[ST_EXEC_UNMATCHED] += 1
        return STEP_OK
    cur = ords[i, s, O_CLORD]
    if clord != cur and clord != ords[i, s, O_PREV]:
        stats[ST_EXEC_UNMATCHED] += 1
        return STEP_OK
    if rt == records.RT_ACK:
        stats[ST_ACKS] += 1
        if (a[0].exec_type == records.EXEC_CANCELED and clord == cur
                and ords[i, s, O_STATE] == OS_WORKING):
            ords[i, s, O_STATE] = OS_NONE       # cancelled by the venue
            stats[ST_OPEN] -= 1
        return STEP_OK
    if rt == records.RT_REJECT:
        stats[ST_EXEC_REJECTS] += 1
        r = rec.view(records.REJECT)
        if r[0].is_cancel_reject == 0 and clord == cur and ords[i, s, O_STATE] != OS_NONE:
            if ords[i, s, O_STATE] == OS_WORKING:
                stats[ST_OPEN] -= 1
            ords[i, s, O_STATE] = OS_NONE
        return STEP_OK
    f = rec.view(records.FILL)
    stats[ST_FILLS] += 1
    leg = ords[i, s, O_LEG]
    side = f[0].side
    price = f[0].last_price
    q = f[0].last_qty
    if side == records.SIDE_BUY:
        pnl[i, leg, PNL_POS] += q
        pnl[i, leg, PNL_CASH] -= q * price
    else:
        pnl[i, leg, PNL_POS] -= q
        pnl[i, leg, PNL_CASH] += q * price
    pnl[i, leg, PNL_FEES] += f[0].fee
    if clord == cur:
        ords[i, s, O_QTY] = f[0].leaves_qty
        if f[0].leaves_qty <= 0 and ords[i, s, O_STATE] != OS_NONE:
            if ords[i, s, O_STATE] == OS_WORKING:
                stats[ST_OPEN] -= 1
            ords[i, s, O_STATE] = OS_NONE
    strat.on_fill(i, meta, params, state, quotes, leg, side, price, q,
                  np.int64(f[0].origin_tsc))
    if _check_loss(i, meta, pnl, px, n, risk, stats, words, cal) != 0:
        return STEP_MAX_LOSS
    return STEP_OK


@njit(cache=True, nogil=True, _nrt=False)
def check_kill(meta, ords, stats, lat_hist, cal, ord_hdr, ord_data, words):
    """Read the kill switch; on a new epoch cancel everything and acknowledge. Returns
    STEP_KILL_SEEN when this call acknowledged a new epoch."""
    if control.kill_requested(words):
        ep = np.int64(control.kill_epoch(words))
        if stats[ST_HALTED] == 0 or stats[ST_ACKED_EPOCH] != ep:
            stats[ST_HALTED] = 1
            now = clock.now(cal)
            cancel_all(meta, ords, stats, lat_hist, cal, ord_hdr, ord_data, now)
            control.set_risk_state(words, records.RISK_HALTED)
            control.ack_kill(words, np.uint64(ep), np.uint64(clock.tsc_to_utc_ns(cal, now)))
            stats[ST_ACKED_EPOCH] = ep
            return STEP_KILL_SEEN
        return STEP_OK
    if stats[ST_HALTED] != 0:
        stats[ST_HALTED] = 0          # manual reset cleared the flag
        control.set_risk_state(words, records.RISK_RUNNING)
    return STEP_OK


@njit(cache=True, nogil=True, _nrt=False)
def step(md_hdrs, md_datas, md_curs, ex_hdr, ex_data, ex_cur, ord_hdr, ord_data, words,
         actor_idx, cal, px, qty, n, book_map, bstate, meta, params, state, quotes, ords, pnl,
         risk, stats, lat_hist, wparams, wstate, md_buf, ex_buf, max_iters):
    """Poll every input up to ``max_iters`` times or for about a millisecond, whichever ends
    first (see the module docstring); returns STEP_* (the most important event of the call)."""
    ret = STEP_OK
    t_start = clock.now(cal)
    for _ in range(max_iters):
        stats[ST_LOOPS] += 1
        k = check_kill(meta, ords, stats, lat_hist, cal, ord_hdr, ord_data, words)
        if k > ret:
            ret = k
        work = 0
        for r in range(len(md_hdrs)):
            if ring.poll(md_hdrs[r], md_datas[r], md_curs[r], md_buf) == 1:
                work += 1
                c = handle_md(md_buf, 0, px, qty, n, book_map, bstate, meta, params, state, quotes,
                              ords, pnl, risk, stats, lat_hist, cal, ord_hdr, ord_data, words)
                if c > ret:
                    ret = c
        if ring.poll(ex_hdr, ex_data, ex_cur, ex_buf) == 1:
            work += 1
            c = handle_exec(ex_buf, px, n, meta, params, state, quotes, ords, pnl, risk, stats,
                            words, cal)
            if c > ret:
                ret = c
        now = clock.now(cal)
        if now - stats[ST_LAST_TIMER] >= risk[R_TIMER_TSC]:
            stats[ST_LAST_TIMER] = now
            for i in range(meta.shape[0]):
                if strat.on_timer(i, meta, params, state, quotes, px, qty, n, now) \
                        != base.UNCHANGED:
                    reconcile(i, meta, quotes, ords, px, n, risk, stats, lat_hist, cal,
                              ord_hdr, ord_data)
        if work == 0:
            wait.idle(wparams, wstate)
        else:
            wait.reset(wstate)
        if now - t_start >= risk[R_STEP_TSC]:
            break                      # back to Python about every millisecond (signals)
    now = clock.now(cal)
    control.heartbeat(words, actor_idx, np.uint64(clock.tsc_to_utc_ns(cal, now)))
    return ret


@njit(cache=True, nogil=True, _nrt=False)
def replay(md_data, n_rec, px, qty, n, book_map, bstate, meta, params, state, quotes, ords, pnl,
           risk, stats, lat_hist, cal, ord_hdr, ord_data, words):
    """Feed ``n_rec`` md records (rows of uint8[.., 64]) straight through ``handle_md``, checking
    the kill switch before each (the in-process replay used by tests and the bench)."""
    for k in range(n_rec):
        check_kill(meta, ords, stats, lat_hist, cal, ord_hdr, ord_data, words)
        handle_md(md_data, k * md_data.shape[1], px, qty, n, book_map, bstate, meta, params,
                  state, quotes, ords, pnl, risk, stats, lat_hist, cal, ord_hdr, ord_data, words)
    return stats[ST_NEW] + stats[ST_REPLACE] + stats[ST_CANCEL]


# ----------------------------------------------------------------------------------------- Python

# [engine] table: name -> (default, minimum)
ENGINE_KEYS = {
    "max_order_qty": (1_000_000, 1),     # lots per order (tier 1)
    "collar_ticks": (1_000_000, 0),      # max distance of a price from the far touch (tier 1)
    "max_open_orders": (64, 0),          # working orders over all strategies (tier 1)
    "max_loss": (0, 0),                  # tick-lots per strategy, 0 = off (tier 3 -> kill)
    "timer_ms": (10, 1),                 # strategy timer period
    "book_levels": (512, 8),             # levels kept per book side
    "max_iters": (4096, 1),              # polls per compiled step before Python looks around
    "clord_base": (0, 0),                # 0 = derived from the start time (unique per start)
}


def engine_settings(table: dict | None) -> dict:
    """Validated [engine] settings (unknown keys rejected by name)."""
    table = table or {}
    if not isinstance(table, dict):
        raise EngineError("engine: expected a table")
    out = {}
    for key in table:
        if key not in ENGINE_KEYS:
            raise EngineError(f"engine.{key}: unknown key (known: {', '.join(sorted(ENGINE_KEYS))})")
    for key, (default, minimum) in ENGINE_KEYS.items():
        v = table.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise EngineError(f"engine.{key}: expected an integer >= {minimum}, got {v!r}")
        out[key] = v
    return out


class EngineState:
    """Every array the compiled engine works on, built from the config.

    ``venues`` maps venue name -> its symbol list (instrument id = position in the list), as in
    the config's [[venues]]; ``strategies`` is the list of [[strategies]] tables."""

    def __init__(self, venues: dict, strategy_tables: list, settings: dict | None = None,
                 cal: np.ndarray | None = None, clord_base: int | None = None,
                 books_valid: bool = False):
        import time

        self.settings = engine_settings(settings)
        self.cal = clock.calibration() if cal is None else cal
        tsc_per_ns = float(self.cal[clock.C_HZ]) / 1e9
        self.venues = {k: list(v) for k, v in venues.items()}
        self.book_map = np.full((8, MAX_INSTRUMENTS), -1, np.int64)
        self.book_keys: list[tuple[str, str]] = []

        def instrument_of(venue, symbol):
            if venue not in records.VENUE_IDS or venue not in self.venues:
                raise base.StrategyConfigError(
                    f"strategies: venue {venue!r} is not configured (have: {', '.join(self.venues)})")
            syms = self.venues[venue]
            if symbol not in syms:
                raise base.StrategyConfigError(
                    f"strategies: symbol {symbol!r} is not in venue {venue!r}'s symbols {syms}")
            vid, idx = records.VENUE_IDS[venue], syms.index(symbol)
            if idx >= MAX_INSTRUMENTS:
                raise base.StrategyConfigError(f"strategies: {venue} has more than "
                                               f"{MAX_INSTRUMENTS} symbols")
            if self.book_map[vid, idx] < 0:
                self.book_map[vid, idx] = len(self.book_keys)
                self.book_keys.append((venue, symbol))
            return vid, idx, int(self.book_map[vid, idx])

        (self.meta, self.params, self.state, self.quotes,
         self.names) = strat.build(strategy_tables, instrument_of, tsc_per_ns)
        nb = max(1, len(self.book_keys))
        self.px, self.qty, self.n = book.new_books(nb, self.settings["book_levels"])
        # a book is untrusted until its gateway says BOOK_VALID (after a snapshot);
        # ``books_valid`` is for callers that feed hand-built, already consistent books
        self.bstate = np.zeros((nb, BS_N), np.int64)
        self.bstate[:, BS_VALID] = 1 if books_valid else 0
        s = self.meta.shape[0]
        self.ords = np.zeros((s, base.Q_SLOTS, O_N), np.int64)
        self.pnl = np.zeros((s, base.MAX_LEGS, PNL_N), np.int64)
        self.risk = np.zeros(R_N, np.int64)
        self.risk[R_MAX_QTY] = self.settings["max_order_qty"]
        self.risk[R_COLLAR] = self.settings["collar_ticks"]
        self.risk[R_MAX_OPEN] = self.settings["max_open_orders"]
        self.risk[R_MAX_LOSS] = self.settings["max_loss"]
        self.risk[R_TIMER_TSC] = int(self.settings["timer_ms"] * 1e6 * tsc_per_ns)
        self.risk[R_STEP_TSC] = int(1e6 * tsc_per_ns)
        self.stats = np.zeros(ST_N, np.int64)
        if clord_base is None:
            clord_base = self.settings["clord_base"] or (time.time_ns() // 1_000_000_000) << 16
        self.stats[ST_CLORD_NEXT] = clord_base
        self.lat_hist = np.zeros(LAT_BUCKETS, np.int64)
        self.md_buf = np.zeros(records.MD_RECORD_SIZE, np.uint8)
        self.ex_buf = np.zeros(records.EXEC_RECORD_SIZE, np.uint8)

    @classmethod
    def from_config(cls, cfg, cal=None, clord_base=None) -> "EngineState":
        venues = {v.name: list(v.symbols) for v in cfg.venues if v.enabled}
        return cls(venues, cfg.extra.get("strategies", []), cfg.extra.get("engine"), cal,
                   clord_base)

    # -- in-process replay (tests, bench) --------------------------------------------------------
    def replay(self, md_records: np.ndarray, ord_hdr, ord_data, words) -> int:
        """Run md records (uint8[N, 64]) through the engine; returns orders written in total."""
        if md_records.ndim != 2 or md_records.shape[1] != records.MD_RECORD_SIZE:
            raise EngineError(f"replay: expected uint8[N, {records.MD_RECORD_SIZE}], "
                              f"got {md_records.dtype}{md_records.shape}")
        return int(replay(md_records, md_records.shape[0], self.px, self.qty, self.n,
                          self.book_map, self.bstate, self.meta, self.params, self.state,
                          self.quotes, self.ords, self.pnl, self.risk, self.stats, self.lat_hist,
                          self.cal, ord_hdr, ord_data, words))

    # -- reporting -------------------------------------------------------------------------------
    def stats_dict(self) -> dict:
        return {name: int(self.stats[k]) for k, name in STAT_NAMES.items()}

    def latency_percentiles(self, qs=(0.5, 0.99)) -> dict:
        """Order latency (origin TSC -> order written) percentiles from the log2 histogram
        (each reported as its bucket's upper bound, ns)."""
        total = int(self.lat_hist.sum())
        out = {}
        for q in qs:
            if total == 0:
                out[q] = None
                continue
            c = np.cumsum(self.lat_hist)
            k = int(np.searchsorted(c, q * total))
            out[q] = (1 << k) if k > 0 else 0
        return out

    def snapshot(self) -> dict:
        """A JSON-able picture: stats, per-strategy positions / PnL / open orders."""
        strategies = []
        for i, name in enumerate(self.names):
            nlegs = int(self.meta[i, base.M_NLEGS])
            legs = []
            for leg in range(nlegs):
                venue, symbol = self.book_keys[int(self.meta[i, base.M_BOOK + leg])]
                legs.append({"venue": venue, "symbol": symbol,
                             "position": int(self.pnl[i, leg, PNL_POS]),
                             "cash_tl": int(self.pnl[i, leg, PNL_CASH]),
                             "fees": int(self.pnl[i, leg, PNL_FEES])})
            open_orders = [{"slot": s, "clord_id": int(self.ords[i, s, O_CLORD]),
                            "side": int(self.ords[i, s, O_SIDE]),
                            "price": int(self.ords[i, s, O_PRICE]),
                            "qty": int(self.ords[i, s, O_QTY])}
                           for s in range(base.Q_SLOTS) if self.ords[i, s, O_STATE] == OS_WORKING]
            strategies.append({"name": name, "legs": legs,
                               "pnl_tl": int(_equity(i, self.meta, self.pnl, self.px, self.n)),
                               "open_orders": open_orders})
        return {"stats": self.stats_dict(), "strategies": strategies}


STATUS_FILE = "engine_status.json"


def _wait_attach(name, consumer, start, shm_dir, wait_s, stop):
    import time as _t

    from appliance.hotpath import shm as _shm

    deadline = _t.monotonic() + wait_s
    while True:
        try:
            return ring.RingReader.attach(name, consumer=consumer, start=start, shm_dir=shm_dir)
        except (_shm.ShmError, FileNotFoundError) as e:
            if _t.monotonic() >= deadline or stop():
                raise EngineError(f"input ring {name!r} is not there ({e}); start its writer "
                                  f"first or raise --wait-rings") from None
            _t.sleep(0.05)


def run(cfg, stop=lambda: False, shm_dir=None, wait_rings_s: float = 30.0, log=None,
        status_every_s: float = 0.5) -> int:
    """The engine actor process: attach md.<venue> rings and the exec ring, create the order
    ring, come up HALTED if the persisted kill switch says so, then loop ``step`` until
    ``stop()``; on exit cancel every working order. Returns the exit status."""
    import json
    import logging
    import os
    import time as _t

    from appliance import killswitch

    log = log or logging.getLogger("appliance.engine")
    es = EngineState.from_config(cfg)
    shm_dir = shm_dir or cfg.appliance.shm_dir or None
    state_dir = cfg.appliance.state_dir
    cb = control.ControlBlock.open(shm_dir)
    persisted = killswitch.read_state(state_dir)
    if persisted.get("halted"):
        if not cb.killed:
            cb.request_kill(str(persisted.get("reason", "persisted halt"))[:63],
                            control.SOURCE_PERSISTED)
        log.warning("kill switch is persisted in %s: starting HALTED (reason: %s); "
                    "`appliance kill --reset --confirm` resumes",
                    killswitch.state_path(state_dir), persisted.get("reason"))
    core = cfg.cores.actors.get("engine")
    wparams = wait.from_config(cfg.wait, core)
    wstate = wait.new_state()
    venues = [v.name for v in cfg.venues if v.enabled]
    # outputs first, then wait for the inputs: the FIX gateway waits for our order ring while
    # we wait for its exec ring, so neither may need the other to be up before it starts
    ow = ring.RingWriter.create("orders", records.ORDER_RECORD_SIZE, cfg.rings.order_capacity,
                                shm_dir=shm_dir)
    readers = []
    try:
        for v in venues:
            # oldest: a late-starting engine still sees the snapshot and BOOK_VALID records
            readers.append(_wait_attach(f"md.{v}", "engine", ring.START_OLDEST, shm_dir,
                                        wait_rings_s, stop))
        ex = _wait_attach("exec", "engine", ring.START_LATEST, shm_dir, wait_rings_s, stop)
    except EngineError:
        for r in readers:
            r.close()
        ow.close()
        cb.close()
        raise
    actor = cb.register_actor("engine", control.ACTOR_ENGINE, -1 if core is None else core)
    cb.rec["engine_pid"] = os.getpid()
    md_hdrs = tuple(r.hdr for r in readers)
    md_datas = tuple(r.data for r in readers)
    md_curs = tuple(r.cur for r in readers)
    max_iters = es.settings["max_iters"]
    log.info("engine up: %d strategies (%s), md rings %s, wait %s, %s",
             len(es.names), ", ".join(es.names), [f"md.{v}" for v in venues],
             wait.kind_name(wparams), "HALTED" if cb.killed else "RUNNING")
    if not cb.killed:
        control.set_risk_state(cb.words, records.RISK_RUNNING)
    status_path = os.path.join(state_dir, STATUS_FILE)
    next_status = 0.0
    md_resyncs: dict[str, int] = {}
    try:
        while not stop():
            rc = step(md_hdrs, md_datas, md_curs, ex.hdr, ex.data, ex.cur, ow.hdr, ow.data,
                      cb.words, actor, es.cal, es.px, es.qty, es.n, es.book_map, es.bstate,
                      es.meta, es.params, es.state, es.quotes, es.ords, es.pnl, es.risk,
                      es.stats, es.lat_hist, wparams, wstate, es.md_buf, es.ex_buf, max_iters)
            if rc != STEP_OK:
                src = "max_loss" if rc == STEP_MAX_LOSS else None
                st = killswitch.read_state(state_dir)
                if cb.killed and (not st.get("halted") or st.get("epoch") != cb.epoch):
                    killswitch.persist_halt(state_dir,
                                            cb.rec["kill_reason"].decode(errors="replace")
                                            or "max loss", src or st.get("source", "cli"),
                                            cb.epoch)
                log.warning("HALTED (epoch %d, %s): %d working orders cancelled",
                            cb.epoch, src or "kill switch", int(es.stats[ST_KILL_CANCELS]))
            now = _t.monotonic()
            if now >= next_status:
                next_status = now + status_every_s
                for v, r in zip(venues, readers):
                    if r.writer_restarted():
                        # the gateway restarted: its books restart from its next snapshot
                        r.resync(ring.START_LATEST)
                        vid = records.VENUE_IDS[v]
                        for bk, (bv, _sym) in enumerate(es.book_keys):
                            if bv == v:
                                book.clear(es.px, es.qty, es.n, bk)
                        md_resyncs[v] = md_resyncs.get(v, 0) + 1
                        log.warning("md.%s writer restarted: resynchronised at the newest record, "
                                    "its books cleared (venue id %d, %d resyncs)", v, vid,
                                    md_resyncs[v])
                if ex.writer_restarted():
                    # the FIX gateway restarted: its sessions reconcile working orders and send
                    # their reports on the new ring; read it from its start
                    ex.resync(ring.START_OLDEST)
                    md_resyncs["exec"] = md_resyncs.get("exec", 0) + 1
                    log.warning("exec writer restarted: resynchronised at its oldest record "
                                "(%d resyncs)", md_resyncs["exec"])
                snap = es.snapshot()
                snap["pid"] = os.getpid()
                snap["time_ns"] = _t.time_ns()
                lat = es.latency_percentiles()
                snap["order_latency_ns"] = {"p50": lat[0.5], "p99": lat[0.99]}
                snap["md_lost"] = {f"md.{v}": r.lost for v, r in zip(venues, readers)}
                snap["md_resyncs"] = md_resyncs
                try:
                    os.makedirs(state_dir, exist_ok=True)
                    tmp = status_path + ".tmp"
                    with open(tmp, "w") as f:
                        json.dump(snap, f)
                    os.replace(tmp, status_path)
                except OSError as e:
                    log.debug("status file %s not written: %s", status_path, e)
    finally:
        k = cancel_all(es.meta, es.ords, es.stats, es.lat_hist, es.cal, ow.hdr, ow.data,
                       clock.now(es.cal))
        log.info("engine stopping: %d working orders cancelled; stats %s", k, es.stats_dict())
        cb.rec["engine_pid"] = 0
        for r in readers:
            r.close()
        ex.close()
        ow.close()
        cb.close()
    return 0
