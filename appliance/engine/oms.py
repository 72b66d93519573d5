"""Order management: the order table, its state machine, execution reports and quote reconciliation.

All state lives in an :class:`Oms` (namedtuple of plain arrays, one argument to numba code), built
by :func:`make_oms`; positions and balances live in a ``positions.Ledger`` that the OMS updates
on every fill and whose ``reserved`` balances it maintains for open orders.

Order states (``ORDER.state``)::

    OS_PENDING_NEW ──ack 0──► OS_NEW ──fill──► OS_PARTIAL ──fill, leaves 0──► OS_FILLED
         │ reject                │ cancel_order()            │
         ▼                       ▼                           ▼
    OS_REJECTED            OS_PENDING_CANCEL ──ack 4──► OS_CANCELLED   (cancel reject: back)
                           OS_PENDING_REPLACE ──ack 5──► old row OS_REPLACED, new row OS_NEW/PARTIAL
                                               (replace reject: new row OS_REJECTED, old row back)

Terminal states: FILLED, CANCELLED, REPLACED, REJECTED. Terminal rows stay in the table (and in
the clord_id index) until their row is recycled, oldest first, so late fills (a fill racing a
cancel) still reach the position and duplicates are still recognised.

Robustness rules for execution reports (``apply_exec``):

- lookup by ``clord_id``, then by ``orig_clord_id`` (cancel acks carry the cancel request's id);
  neither known -> ``EX_UNKNOWN`` (counted, nothing changes). A report whose venue or instrument
  differs from the order's -> ``EX_INVALID`` (instrument 0xFFFFFFFF, the FIX codec's "no Symbol",
  as on an OrderCancelReject, matches any).
- a cancel reject restores the order's previous state unless its ord_status says the order is
  cancelled ('4') or its reason is "unknown order" (CxlRejReason 1: the venue no longer has it;
  the order ends CANCELLED, counted in ``C_UNKNOWN_AT_VENUE``); a gateway refusal (ord_status
  '8' on a cancel, reason >= 1000) leaves the order working.
- fills are deduplicated by ``exec_id`` (a set of the last ``exec_id_capacity // 2`` ids); a fill
  with ``exec_id == 0`` is new only when its ``cum_qty`` exceeds the order's.
- every distinct fill is booked to the position (even one arriving after a newer fill or after
  the cancel ack: the venue executed it); ``cum_qty`` is monotonic (max of reports) and
  ``leaves`` is taken only from the newest report, so a stale out-of-order report never moves
  the order backwards. Booked qty beyond the order qty is counted (``C_OVERFILL``).
- an ack that would move an order backwards (a late ``NEW`` after a fill, a cancel ack for a
  filled order) is ``EX_STALE``; a repeated terminal ack is ``EX_DUPLICATE``.
- a fill or ack on the new clord_id of a pending replace confirms the replace first.
- an order-status reply (exec_type 'I', after a reconnect) applies the venue's verdict
  (cancelled / rejected / new); when it reports more cum_qty than was booked, ``C_CUM_AHEAD``
  counts it (prices of missed fills are unknown, so nothing is booked until their reports come).

Replace semantics: ``replace_order(..., leaves_qty)`` takes the *remaining* quantity wanted; the
FIX OrderQty sent is ``cum_qty + leaves_qty``. While a replace is pending, both rows are live: the
old one keeps its exposure (its leaves) and the new one holds only the extra
``max(0, new_leaves - old_leaves)``, so open-order exposure is a worst case, never an undercount;
the pair counts as one open order.

Exposure and reservations: every non-terminal row has ``exposure`` lots (its leaves, see above)
summed into ``agg[ii, G_OPEN_BUY / G_OPEN_SELL]``; a buy reserves ``notional_e8(price, exposure)``
of the quote asset, a sell ``exposure * lot_e8`` of the base asset in ``ledger.reserved``.

Desired quotes: a strategy's quote for one side of one instrument is a *quote slot* ``q``
(``quote_map[q]`` = the row currently working it, -1 none; e.g. q = strategy * Q_SLOTS + slot,
with ``n_quotes`` in :func:`make_oms` large enough). ``reconcile(oms, q, price, qty,
px_thr, qty_thr)`` says what to do (Mantra's Overseer): ``ACT_NEW`` (nothing live and qty > 0),
``ACT_CANCEL`` (live and qty <= 0), ``ACT_REPLACE`` (|price - live price| > px_thr ticks or
|qty - live leaves| > qty_thr lots), ``ACT_WAIT`` (a request is in flight: pending new / cancel /
replace), ``ACT_NONE`` (within thresholds).

numba API (``@njit(cache=True, nogil=True, _nrt=False)``: none allocates or touches reference
counts; internal helpers and the outbound calls (new / cancel / replace, write_*, reconcile) are
``forceinline=True``: compiled once each, inlined by LLVM into the caller, because a call
flattens every array of every namedtuple argument (~75 words for the OMS alone); constants
passed to them are wrapped (``np.int64(OS_CANCELLED)``) so numba compiles one specialisation,
not one per literal value; callable from Python and from any numba function; ``row`` = order
table index)::

    new_order(oms, led, ii, side, price, qty, tif, strategy, quote, now_ns) -> row | OM_* < 0
    cancel_order(oms, row, now_ns) -> cancel clord_id (> 0) | OM_* < 0
    replace_order(oms, led, row, price, leaves_qty, now_ns) -> new row | OM_* < 0
    apply_exec(oms, led, rec_u8, now_ns) -> EX_*            (rec_u8: one 128 B exec record)
    reconcile(oms, q, price, qty, px_thr, qty_thr) -> ACT_*
    quote_row(oms, q) -> row | -1
    find_order(oms, clord_id) -> row | -1
    write_new(oms, row, out_u8, origin_tsc, session, flags) fill a NEW_ORDER record (128 B)
    write_cancel(oms, row, out_u8, origin_tsc, session)     CANCEL for the pending cancel
    write_replace(oms, new_row, out_u8, origin_tsc, session, flags)
    live_rows(oms, ii, out_rows) -> n     (non-terminal rows of one instrument; ii < 0: all)

OM_* (outbound refusals): OM_FULL (no free row), OM_LIVE_FULL (instrument's live list full),
OM_BAD_ARGS (qty/price <= 0, bad side, bad ii/quote), OM_NOT_WORKING (cancel/replace of an order
that is terminal), OM_BUSY (a cancel/replace is already in flight for it). EX_* are counted in
``ctr[C_EX + code]``. Python: :func:`make_oms`, :func:`counters`, :func:`check`
(raises :class:`OmsError` for OM_* codes), ``STATE_NAMES``, ``EX_NAMES``, ``ACT_NAMES``.
"""
from __future__ import annotations

import time
from collections import namedtuple

import numpy as np
from numba import njit

from appliance import jit
from appliance.transport import records
from appliance.transport.intrinsics import store_relaxed
from appliance.engine.positions import apply_fill, notional_e8
from appliance.jit import HELPER

# --- order states ----------------------------------------------------------------------------
OS_FREE = 0
OS_PENDING_NEW = 1
OS_NEW = 2
OS_PARTIAL = 3
OS_FILLED = 4
OS_PENDING_CANCEL = 5
OS_CANCELLED = 6
OS_PENDING_REPLACE = 7
OS_REPLACED = 8
OS_REJECTED = 9
STATE_NAMES = {OS_FREE: "FREE", OS_PENDING_NEW: "PENDING_NEW", OS_NEW: "NEW", OS_PARTIAL: "PARTIAL",
               OS_FILLED: "FILLED", OS_PENDING_CANCEL: "PENDING_CANCEL", OS_CANCELLED: "CANCELLED",
               OS_PENDING_REPLACE: "PENDING_REPLACE", OS_REPLACED: "REPLACED",
               OS_REJECTED: "REJECTED"}

# --- apply_exec results ------------------------------------------------------------------------
EX_ACK = 0            # ack applied (or already in that state)
EX_FILL = 1           # a new fill booked
EX_REJECT = 2         # the venue rejected a new order (feed risk.on_venue_reject)
EX_CANCEL_REJECT = 3  # cancel/replace rejected; order restored
EX_DUPLICATE = 4
EX_STALE = 5
EX_UNKNOWN = 6
EX_INVALID = 7
EX_IGNORED = 8        # not an execution record
N_EX = 9
EX_NAMES = {EX_ACK: "ack", EX_FILL: "fill", EX_REJECT: "reject", EX_CANCEL_REJECT: "cancel_reject",
            EX_DUPLICATE: "duplicate", EX_STALE: "stale", EX_UNKNOWN: "unknown",
            EX_INVALID: "invalid", EX_IGNORED: "ignored"}

# --- outbound refusals -------------------------------------------------------------------------
OM_FULL = -1
OM_LIVE_FULL = -2
OM_BAD_ARGS = -3
OM_NOT_WORKING = -4
OM_BUSY = -5
OM_NAMES = {OM_FULL: "order table full", OM_LIVE_FULL: "too many live orders on the instrument",
            OM_BAD_ARGS: "bad arguments", OM_NOT_WORKING: "order is not working",
            OM_BUSY: "a cancel/replace is already pending"}

# --- reconcile actions -------------------------------------------------------------------------
ACT_NONE = 0
ACT_NEW = 1
ACT_CANCEL = 2
ACT_REPLACE = 3
ACT_WAIT = 4
ACT_NAMES = {ACT_NONE: "none", ACT_NEW: "new", ACT_CANCEL: "cancel", ACT_REPLACE: "replace",
             ACT_WAIT: "wait"}

# --- counters / scalars in oms.ctr -------------------------------------------------------------
C_NEXT_ID = 0         # next clord_id
C_FREE_N = 1          # rows on the free stack
C_RET_HEAD = 2        # retired ring head / count
C_RET_N = 3
C_SEEN_HEAD = 4       # exec-id fifo head / count
C_SEEN_N = 5
C_OVERFILL = 6        # fills booked beyond the order quantity
C_RECYCLED = 7        # terminal rows recycled
C_SENT_NEW = 8
C_SENT_CANCEL = 9
C_SENT_REPLACE = 10
C_CUM_AHEAD = 11       # status replies saying the venue filled more than we have booked
C_UNKNOWN_AT_VENUE = 12   # cancel / replace rejected with "unknown order": the order is gone
C_EX = 16             # C_EX + EX_*: apply_exec results
N_CTR = 32

# --- per-instrument aggregates in oms.agg ------------------------------------------------------
G_OPEN_BUY = 0        # exposure lots of live buys
G_OPEN_SELL = 1
G_N_OPEN = 2          # live orders (a pending replace pair counts once)
G_LIST_LEN = 3        # rows in live[ii] (a pending replace pair is two rows)
N_AGG = 4

ORDER = np.dtype([
    ("clord_id", "<u8"),
    ("orig_clord_id", "<u8"),      # replacement rows: the order it replaces
    ("cancel_id", "<u8"),          # clord_id of the pending cancel request
    ("price", "<i8"),
    ("qty", "<i8"),                # total order qty (FIX OrderQty)
    ("cum_qty", "<i8"),
    ("leaves", "<i8"),
    ("applied", "<i8"),            # lots booked from distinct fills of this order chain
    ("exposure", "<i8"),           # lots counted in agg open qty
    ("reserved_e8", "<i8"),        # amount held in ledger.reserved
    ("created_ns", "<i8"),
    ("updated_ns", "<i8"),
    ("strategy", "<u4"),
    ("instrument", "<u4"),
    ("ii", "<i4"),
    ("quote", "<i4"),
    ("link", "<i4"),               # other row of a pending replace pair, -1
    ("live_pos", "<i4"),
    ("state", "u1"),
    ("prev_state", "u1"),          # state to return to when a cancel/replace is rejected
    ("side", "u1"),
    ("venue", "u1"),
    ("is_repl", "u1"),             # row created by replace_order, not yet confirmed
    ("counted", "u1"),             # counts in agg G_N_OPEN
    ("tif", "u1"),
], align=True)

Oms = namedtuple("Oms", ["orders", "index", "ctr", "free", "retired", "live", "agg", "seen",
                         "seen_fifo", "quote_map"])

ORD_STATUS_CANCELED = ord("4")
CXL_REJ_UNKNOWN_ORDER = 1    # FIX CxlRejReason (102) 1: the venue does not know the order
ORD_STATUS_REJECTED = ord("8")
ORD_STATUS_NEW = ord("0")
EXEC_EXPIRED = ord("C")
NO_INSTRUMENT = 0xFFFFFFFF   # exec record without a Symbol (e.g. OrderCancelReject): matches any

_HASH_K = np.uint64(0x9E3779B97F4A7C15)
_ZERO = np.int64(0)


class OmsError(RuntimeError):
    """An OMS request was refused; the message names the reason."""


def _pow2_at_least(n: int) -> int:
    return 1 << max(1, (int(n) - 1).bit_length())


def make_oms(capacity: int, n_instruments: int, max_live: int = 32, n_quotes: int = 64,
             exec_id_capacity: int = 1 << 16, first_clord_id: int | None = None) -> Oms:
    """Empty OMS. ``capacity`` rows (live + recent terminal orders) must exceed
    ``n_instruments * max_live``; clord_ids start at ``first_clord_id`` (default: current
    milliseconds << 20, unique across restarts unless more than 1M ids per ms are used)."""
    if capacity <= n_instruments * max_live:
        raise ValueError(f"capacity {capacity} must exceed n_instruments * max_live = {n_instruments * max_live}")
    if n_instruments < 1 or max_live < 1 or n_quotes < 1 or exec_id_capacity < 4:
        raise ValueError("n_instruments, max_live, n_quotes >= 1 and exec_id_capacity >= 4")
    orders = np.zeros(capacity, ORDER)
    orders["link"] = -1
    orders["live_pos"] = -1
    orders["quote"] = -1
    ctr = np.zeros(N_CTR, np.int64)
    ctr[C_NEXT_ID] = first_clord_id if first_clord_id is not None else (time.time_ns() // 1_000_000) << 20
    if ctr[C_NEXT_ID] <= 0:
        raise ValueError("first_clord_id must be > 0")
    ctr[C_FREE_N] = capacity
    free = np.arange(capacity - 1, -1, -1, dtype=np.int32)    # pops row 0 first
    seen_n = _pow2_at_least(exec_id_capacity)
    return Oms(orders, np.full(_pow2_at_least(2 * capacity), -1, np.int32), ctr, free,
               np.zeros(capacity, np.int32), np.full((n_instruments, max_live), -1, np.int32),
               np.zeros((n_instruments, N_AGG), np.int64), np.zeros(seen_n, np.uint64),
               np.zeros(seen_n // 2, np.uint64), np.full(n_quotes, -1, np.int32))


def counters(oms: Oms) -> dict:
    """Named counters for status output."""
    c = oms.ctr
    out = {f"exec_{name}": int(c[C_EX + code]) for code, name in EX_NAMES.items()}
    out.update(overfill=int(c[C_OVERFILL]), recycled=int(c[C_RECYCLED]), sent_new=int(c[C_SENT_NEW]),
               sent_cancel=int(c[C_SENT_CANCEL]), sent_replace=int(c[C_SENT_REPLACE]), cum_ahead=int(c[C_CUM_AHEAD]),
               unknown_at_venue=int(c[C_UNKNOWN_AT_VENUE]),
               live_orders=int(oms.agg[:, G_N_OPEN].sum()))
    return out


def check(code: int) -> int:
    """Pass a row / id through; raise OmsError for an OM_* refusal."""
    if code < 0:
        raise OmsError(OM_NAMES.get(int(code), f"OMS error {code}"))
    return code


# --- hashing -----------------------------------------------------------------------------------
@njit(**HELPER)
def _home(key, mask):
    h = np.uint64(key) * _HASH_K
    return np.int64(h >> np.uint64(32)) & mask


@njit(**jit.HELPER)
def home_slot(clord_id, mask):
    """Home slot of ``clord_id`` in the index (``mask`` = index size - 1): for prefetching."""
    return _home(clord_id, mask)


@njit(cache=True, nogil=True, _nrt=False)
def find_order(oms, clord_id):
    key = np.uint64(clord_id)
    if key == 0:
        return -1
    idx = oms.index
    mask = idx.shape[0] - 1
    i = _home(key, mask)
    while True:
        r = idx[i]
        if r < 0:
            return -1
        if oms.orders[r].clord_id == key:
            return r
        i = (i + 1) & mask


@njit(**HELPER)
def _index_insert(oms, r):
    idx = oms.index
    mask = idx.shape[0] - 1
    i = _home(oms.orders[r].clord_id, mask)
    while idx[i] >= 0:
        i = (i + 1) & mask
    idx[i] = r


@njit(**HELPER)
def _index_delete(oms, clord_id):
    idx = oms.index
    mask = idx.shape[0] - 1
    i = _home(clord_id, mask)
    while True:
        r = idx[i]
        if r < 0:
            return
        if oms.orders[r].clord_id == clord_id:
            break
        i = (i + 1) & mask
    j = i
    while True:                    # backward-shift deletion keeps probe chains intact
        j = (j + 1) & mask
        r = idx[j]
        if r < 0:
            break
        k = _home(oms.orders[r].clord_id, mask)
        if i <= j:
            stays = i < k <= j
        else:
            stays = k > i or k <= j
        if not stays:
            idx[i] = r
            i = j
    idx[i] = -1


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def _seen_find(seen, key):
    mask = seen.shape[0] - 1
    i = _home(key, mask)
    while True:
        v = seen[i]
        if v == 0:
            return -1
        if v == key:
            return i
        i = (i + 1) & mask


@njit(**HELPER)
def _seen_delete(seen, key):
    mask = seen.shape[0] - 1
    i = _seen_find(seen, key)
    if i < 0:
        return
    j = i
    while True:
        j = (j + 1) & mask
        v = seen[j]
        if v == 0:
            break
        k = _home(v, mask)
        if i <= j:
            stays = i < k <= j
        else:
            stays = k > i or k <= j
        if not stays:
            seen[i] = v
            i = j
    seen[i] = 0


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def _seen_add(oms, key):
    """Insert exec id ``key`` (> 0); evicts the oldest id when the fifo is full."""
    fifo = oms.seen_fifo
    n = fifo.shape[0]
    head = oms.ctr[C_SEEN_HEAD]
    if oms.ctr[C_SEEN_N] == n:
        _seen_delete(oms.seen, fifo[head])
        fifo[head] = key
        oms.ctr[C_SEEN_HEAD] = (head + 1) % n
    else:
        fifo[(head + oms.ctr[C_SEEN_N]) % n] = key
        oms.ctr[C_SEEN_N] += 1
    seen = oms.seen
    mask = seen.shape[0] - 1
    i = _home(key, mask)
    while seen[i] != 0:
        i = (i + 1) & mask
    seen[i] = key


# --- rows, live lists, exposure ---------------------------------------------------------------
@njit(**HELPER)
def _alloc(oms):
    c = oms.ctr
    if c[C_FREE_N] > 0:
        c[C_FREE_N] -= 1
        return oms.free[c[C_FREE_N]]
    if c[C_RET_N] == 0:
        return -1
    cap = oms.retired.shape[0]
    r = oms.retired[c[C_RET_HEAD]]
    c[C_RET_HEAD] = (c[C_RET_HEAD] + 1) % cap
    c[C_RET_N] -= 1
    _index_delete(oms, oms.orders[r].clord_id)
    c[C_RECYCLED] += 1
    return r


@njit(**HELPER)
def _init_row(oms, r, clord_id, price, qty, now_ns):
    """Row ``r`` as a fresh PENDING_NEW order of ``qty`` lots at ``price``; the caller sets who it
    is (:func:`_identity`)."""
    o = oms.orders[r]
    o.clord_id = clord_id
    o.orig_clord_id = 0
    o.cancel_id = 0
    o.price = price
    o.qty = qty
    o.cum_qty = 0
    o.leaves = qty
    o.applied = 0
    o.exposure = 0
    o.reserved_e8 = 0
    o.created_ns = now_ns
    o.updated_ns = now_ns
    o.link = -1
    o.live_pos = -1
    o.state = OS_PENDING_NEW
    o.prev_state = OS_PENDING_NEW
    o.is_repl = 0
    o.counted = 0


@njit(**HELPER)
def _identity(o, ii, venue, instrument, side, strategy, quote, tif):
    """What an order is: instrument (index and wire id), venue, side, owner, quote slot, TIF."""
    o.ii = ii
    o.venue = venue
    o.instrument = instrument
    o.side = side
    o.strategy = strategy
    o.quote = quote
    o.tif = tif


@njit(**HELPER)
def _live_add(oms, r):
    ii = oms.orders[r].ii
    n = oms.agg[ii, G_LIST_LEN]
    oms.live[ii, n] = r
    oms.orders[r].live_pos = n
    oms.agg[ii, G_LIST_LEN] = n + 1


@njit(**HELPER)
def _live_remove(oms, r):
    o = oms.orders[r]
    pos = o.live_pos
    if pos < 0:
        return
    ii = o.ii
    last = oms.agg[ii, G_LIST_LEN] - 1
    moved = oms.live[ii, last]
    oms.live[ii, pos] = moved
    oms.orders[moved].live_pos = pos
    oms.live[ii, last] = -1
    oms.agg[ii, G_LIST_LEN] = last
    o.live_pos = -1


@njit(**HELPER)
def _set_exposure(oms, led, r, new):
    """Set row r's exposure lots and re-reserve its balance at its current price."""
    o = oms.orders[r]
    if new < 0:
        new = 0
    ii = o.ii
    d = new - o.exposure
    if o.side == records.SIDE_BUY:
        oms.agg[ii, G_OPEN_BUY] += d
    else:
        oms.agg[ii, G_OPEN_SELL] += d
    o.exposure = new
    ins = led.instr[ii]
    if o.side == records.SIDE_BUY:
        amt = notional_e8(led.instr, ii, o.price, new) if new != 0 else 0
        led.reserved[ins.venue, ins.quote_asset] += amt - o.reserved_e8
    else:
        amt = new * ins.lot_e8
        led.reserved[ins.venue, ins.base_asset] += amt - o.reserved_e8
    o.reserved_e8 = amt


@njit(**HELPER)
def _is_terminal(state):
    return state == OS_FILLED or state == OS_CANCELLED or state == OS_REPLACED or state == OS_REJECTED


@njit(**HELPER)
def _terminate(oms, led, r, state, now_ns):
    o = oms.orders[r]
    if _is_terminal(o.state) or o.state == OS_FREE:
        return
    o.state = state
    o.updated_ns = now_ns
    _set_exposure(oms, led, r, np.int64(0))
    _live_remove(oms, r)
    if o.counted:
        oms.agg[o.ii, G_N_OPEN] -= 1
        o.counted = 0
    q = o.quote
    if q >= 0 and oms.quote_map[q] == r:
        oms.quote_map[q] = -1
    c = oms.ctr
    cap = oms.retired.shape[0]
    oms.retired[(c[C_RET_HEAD] + c[C_RET_N]) % cap] = r
    c[C_RET_N] += 1


@njit(**HELPER)
def _working_state(o):
    return OS_PARTIAL if o.cum_qty > 0 else OS_NEW


# --- outbound ----------------------------------------------------------------------------------
@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def new_order(oms, led, ii, side, price, qty, tif, strategy, quote, now_ns):
    if (qty <= 0 or price <= 0 or ii < 0 or ii >= oms.agg.shape[0]
            or (side != records.SIDE_BUY and side != records.SIDE_SELL)
            or quote >= oms.quote_map.shape[0]):
        return OM_BAD_ARGS
    if oms.agg[ii, G_LIST_LEN] >= oms.live.shape[1]:
        return OM_LIVE_FULL
    r = _alloc(oms)
    if r < 0:
        return OM_FULL
    cid = oms.ctr[C_NEXT_ID]
    oms.ctr[C_NEXT_ID] = cid + 1
    ins = led.instr[ii]
    _init_row(oms, r, cid, price, qty, now_ns)
    _identity(oms.orders[r], ii, ins.venue, ins.instrument, side, strategy, quote, tif)
    _index_insert(oms, r)
    _live_add(oms, r)
    oms.orders[r].counted = 1
    oms.agg[ii, G_N_OPEN] += 1
    _set_exposure(oms, led, r, qty)
    if quote >= 0:
        oms.quote_map[quote] = r
    oms.ctr[C_SENT_NEW] += 1
    return r


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def cancel_order(oms, row, now_ns):
    if row < 0 or row >= oms.orders.shape[0]:
        return OM_BAD_ARGS
    o = oms.orders[row]
    st = o.state
    if st == OS_PENDING_CANCEL or st == OS_PENDING_REPLACE:
        return OM_BUSY
    if st != OS_NEW and st != OS_PARTIAL and st != OS_PENDING_NEW:
        return OM_NOT_WORKING
    cid = oms.ctr[C_NEXT_ID]
    oms.ctr[C_NEXT_ID] = cid + 1
    o.prev_state = st
    o.state = OS_PENDING_CANCEL
    o.cancel_id = cid
    o.updated_ns = now_ns
    oms.ctr[C_SENT_CANCEL] += 1
    return cid


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def replace_order(oms, led, row, price, leaves_qty, now_ns):
    if row < 0 or row >= oms.orders.shape[0] or price <= 0 or leaves_qty <= 0:
        return OM_BAD_ARGS
    o = oms.orders[row]
    st = o.state
    if st == OS_PENDING_CANCEL or st == OS_PENDING_REPLACE or st == OS_PENDING_NEW:
        return OM_BUSY
    if st != OS_NEW and st != OS_PARTIAL:
        return OM_NOT_WORKING
    ii = o.ii
    if oms.agg[ii, G_LIST_LEN] >= oms.live.shape[1]:
        return OM_LIVE_FULL
    r = _alloc(oms)
    if r < 0:
        return OM_FULL
    o = oms.orders[row]
    cid = oms.ctr[C_NEXT_ID]
    oms.ctr[C_NEXT_ID] = cid + 1
    _init_row(oms, r, cid, price, o.cum_qty + leaves_qty, now_ns)
    _identity(oms.orders[r], ii, o.venue, o.instrument, o.side, o.strategy, o.quote, o.tif)
    n = oms.orders[r]
    n.orig_clord_id = o.clord_id
    n.cum_qty = o.cum_qty
    n.leaves = leaves_qty
    n.applied = o.applied
    n.is_repl = 1
    n.state = OS_PENDING_REPLACE
    n.link = row
    o.link = r
    o.prev_state = st
    o.state = OS_PENDING_REPLACE
    o.updated_ns = now_ns
    _index_insert(oms, r)
    _live_add(oms, r)
    extra = leaves_qty - o.leaves
    _set_exposure(oms, led, r, extra if extra > 0 else 0)
    oms.ctr[C_SENT_REPLACE] += 1
    return r


@njit(**HELPER)
def _complete_replace(oms, led, r, price, qty, leaves, cum, have_leaves, now_ns):
    """Replacement row r is confirmed (by its ack, or implied by a report on its clord_id)."""
    n = oms.orders[r]
    old = n.link
    if old >= 0:
        o = oms.orders[old]
        if o.cum_qty > n.cum_qty:
            n.cum_qty = o.cum_qty
        if o.applied > n.applied:
            n.applied = o.applied
        n.quote = o.quote
        o.link = -1
        _terminate(oms, led, old, np.int64(OS_REPLACED), now_ns)
        if n.quote >= 0:
            oms.quote_map[n.quote] = r
    if cum > n.cum_qty:
        n.cum_qty = cum
    if price > 0:
        n.price = price
    if qty > 0:
        n.qty = qty
    n.leaves = leaves if have_leaves else max(0, n.qty - n.cum_qty)
    n.link = -1
    n.is_repl = 0
    n.state = _working_state(n)
    n.updated_ns = now_ns
    n.counted = 1
    oms.agg[n.ii, G_N_OPEN] += 1
    _set_exposure(oms, led, r, n.leaves)
    if n.leaves <= 0:
        _terminate(oms, led, r, OS_FILLED if n.cum_qty >= n.qty else OS_CANCELLED, now_ns)


@njit(**HELPER)
def _restore(oms, led, r, now_ns):
    """A cancel/replace of row r was rejected: back to the state it had."""
    o = oms.orders[r]
    if o.link >= 0:
        n = np.int64(o.link)
        o.link = -1
        oms.orders[n].link = -1
        _terminate(oms, led, n, np.int64(OS_REJECTED), now_ns)
    if _is_terminal(o.state):
        return
    if o.prev_state == OS_PENDING_NEW and o.cum_qty == 0:
        o.state = OS_PENDING_NEW
    else:
        o.state = _working_state(o)
    o.cancel_id = 0
    o.updated_ns = now_ns


# --- inbound -----------------------------------------------------------------------------------
@njit(**HELPER)
def _lookup(oms, clord_id, orig):
    r = find_order(oms, clord_id)
    if r < 0 and orig != 0:
        r = find_order(oms, orig)
    return r


@njit(**HELPER)
def _apply_fill_rec(oms, led, rec_u8, now_ns):
    f = rec_u8.view(records.FILL)[0]
    r = _lookup(oms, f.clord_id, f.orig_clord_id)
    if r < 0:
        return EX_UNKNOWN
    o = oms.orders[r]
    if (f.last_qty <= 0 or f.last_price <= 0 or f.cum_qty < 0 or f.leaves_qty < 0
            or f.venue != o.venue or (f.instrument != NO_INSTRUMENT and f.instrument != o.instrument)):
        return EX_INVALID
    if f.exec_id != 0:
        if _seen_find(oms.seen, f.exec_id) >= 0:
            return EX_DUPLICATE
    elif f.cum_qty <= o.cum_qty:
        return EX_DUPLICATE
    if o.is_repl and o.state == OS_PENDING_REPLACE:
        _complete_replace(oms, led, r, _ZERO, _ZERO, _ZERO, _ZERO, np.bool_(False), now_ns)
    if f.exec_id != 0:
        _seen_add(oms, f.exec_id)
    apply_fill(led, np.int64(o.ii), np.int64(o.side), f.last_price, f.last_qty, f.fee)
    o.applied += f.last_qty
    if o.applied > o.qty:
        oms.ctr[C_OVERFILL] += 1
    newest = f.cum_qty >= o.cum_qty
    if f.cum_qty > o.cum_qty:
        o.cum_qty = f.cum_qty
    if o.applied > o.cum_qty:
        o.cum_qty = o.applied
    left = o.qty - o.cum_qty
    if left < 0:
        left = 0
    if newest:
        o.leaves = f.leaves_qty if f.leaves_qty < left else left
    elif left < o.leaves:
        o.leaves = left
    o.updated_ns = now_ns
    st = o.state
    if not _is_terminal(st):
        if o.leaves <= 0:
            if o.link >= 0:          # filled while its replace was pending: the replace is moot
                n = np.int64(o.link)
                o.link = -1
                oms.orders[n].link = -1
                _terminate(oms, led, n, np.int64(OS_REJECTED), now_ns)
            _terminate(oms, led, r, OS_FILLED if o.cum_qty >= o.qty else OS_CANCELLED, now_ns)
        else:
            if st == OS_PENDING_NEW or st == OS_NEW:
                o.state = OS_PARTIAL
            elif o.prev_state == OS_NEW or o.prev_state == OS_PENDING_NEW:
                o.prev_state = OS_PARTIAL
            _set_exposure(oms, led, r, o.leaves)
    return EX_FILL


@njit(**HELPER)
def _apply_ack_rec(oms, led, rec_u8, now_ns):
    a = rec_u8.view(records.ACK)[0]
    r = _lookup(oms, a.clord_id, a.orig_clord_id)
    if r < 0:
        return EX_UNKNOWN
    o = oms.orders[r]
    if a.venue != o.venue or (a.instrument != NO_INSTRUMENT and a.instrument != o.instrument):
        return EX_INVALID
    st = o.state
    et = a.exec_type
    if et == records.EXEC_ORDER_STATUS:      # status reply: follow the venue's terminal verdicts
        if a.cum_qty > o.cum_qty and a.cum_qty > o.applied:
            oms.ctr[C_CUM_AHEAD] += 1        # fills we never saw (their reports may still come)
        if a.ord_status == ORD_STATUS_CANCELED or a.ord_status == EXEC_EXPIRED:
            et = records.EXEC_CANCELED
        elif a.ord_status == ORD_STATUS_REJECTED:
            et = records.EXEC_REJECTED
        elif a.ord_status == ORD_STATUS_NEW:
            et = records.EXEC_NEW
        else:
            return EX_ACK
    if o.is_repl and st == OS_PENDING_REPLACE and et != records.EXEC_PENDING_REPLACE \
            and et != records.EXEC_REJECTED:
        # any report on the new id means the venue accepted the replace
        _complete_replace(oms, led, r, a.price, a.qty, a.leaves_qty, a.cum_qty,
                          et == records.EXEC_REPLACED, now_ns)
        if et == records.EXEC_REPLACED:
            return EX_ACK
        st = o.state
    if et == records.EXEC_PENDING_NEW:
        return EX_ACK if st == OS_PENDING_NEW else EX_STALE
    if et == records.EXEC_NEW:
        if st == OS_PENDING_NEW:
            o.state = _working_state(o)
            o.updated_ns = now_ns
            return EX_ACK
        if st == OS_PENDING_CANCEL and o.prev_state == OS_PENDING_NEW:
            o.prev_state = OS_NEW
            return EX_ACK
        return EX_STALE
    if et == records.EXEC_PENDING_CANCEL:
        if st == OS_PENDING_CANCEL:
            return EX_ACK
        if st == OS_NEW or st == OS_PARTIAL or st == OS_PENDING_NEW:
            o.prev_state = st
            o.state = OS_PENDING_CANCEL
            return EX_ACK
        return EX_STALE
    if et == records.EXEC_CANCELED or et == EXEC_EXPIRED:
        if st == OS_CANCELLED:
            return EX_DUPLICATE
        if _is_terminal(st):
            return EX_STALE
        if a.cum_qty > o.cum_qty:
            o.cum_qty = a.cum_qty      # fills still in flight will be booked when they arrive
        if o.link >= 0:
            n = np.int64(o.link)
            o.link = -1
            oms.orders[n].link = -1
            _terminate(oms, led, n, np.int64(OS_REJECTED), now_ns)
        _terminate(oms, led, r, np.int64(OS_CANCELLED), now_ns)
        return EX_ACK
    if et == records.EXEC_PENDING_REPLACE:
        return EX_ACK if st == OS_PENDING_REPLACE else EX_STALE
    if et == records.EXEC_REPLACED:
        if o.link >= 0 and oms.orders[o.link].is_repl:     # reported against the old id only
            _complete_replace(oms, led, o.link, a.price, a.qty, a.leaves_qty, a.cum_qty,
                              np.bool_(True), now_ns)
            return EX_ACK
        if st == OS_REPLACED or (o.orig_clord_id != 0 and o.orig_clord_id == a.orig_clord_id):
            return EX_DUPLICATE      # the replace was already confirmed (by this ack or a fill)
        return EX_STALE
    if et == records.EXEC_REJECTED:
        if o.is_repl and st == OS_PENDING_REPLACE:
            _restore(oms, led, o.link, now_ns)
            return EX_CANCEL_REJECT
        if st == OS_PENDING_NEW or (st == OS_PENDING_CANCEL and o.prev_state == OS_PENDING_NEW):
            _terminate(oms, led, r, np.int64(OS_REJECTED), now_ns)
            return EX_REJECT
        return EX_DUPLICATE if st == OS_REJECTED else EX_STALE
    return EX_INVALID


@njit(**HELPER)
def _apply_reject_rec(oms, led, rec_u8, now_ns):
    j = rec_u8.view(records.REJECT)[0]
    r = _lookup(oms, j.clord_id, j.orig_clord_id)
    if r < 0:
        return EX_UNKNOWN
    o = oms.orders[r]
    if j.venue != o.venue or (j.instrument != NO_INSTRUMENT and j.instrument != o.instrument):
        return EX_INVALID
    st = o.state
    # "unknown order" on a cancel / replace: the venue no longer has the order (it finished
    # there and its last report is late, or it never arrived); keeping it working would hold
    # its exposure and quote slot forever, so it ends as CANCELLED (a late fill is still booked)
    gone = j.is_cancel_reject != 0 and j.reason == CXL_REJ_UNKNOWN_ORDER
    if o.is_repl and st == OS_PENDING_REPLACE:          # replace rejected (either record kind)
        old = o.link
        _restore(oms, led, old, now_ns)
        if gone and old >= 0:
            oms.ctr[C_UNKNOWN_AT_VENUE] += 1
            _terminate(oms, led, old, np.int64(OS_CANCELLED), now_ns)
        return EX_CANCEL_REJECT
    if j.is_cancel_reject:
        if st == OS_PENDING_CANCEL:
            if j.ord_status == ORD_STATUS_CANCELED or gone:
                if gone:
                    oms.ctr[C_UNKNOWN_AT_VENUE] += 1
                _terminate(oms, led, r, np.int64(OS_CANCELLED), now_ns)
            else:       # '8' here means the request was refused (e.g. by our gateway), not the order
                _restore(oms, led, r, now_ns)
            return EX_CANCEL_REJECT
        if st == OS_PENDING_REPLACE and o.link >= 0:     # reported against the old id
            _restore(oms, led, r, now_ns)
            if gone:
                oms.ctr[C_UNKNOWN_AT_VENUE] += 1
                _terminate(oms, led, r, np.int64(OS_CANCELLED), now_ns)
            return EX_CANCEL_REJECT
        return EX_STALE
    if st == OS_PENDING_NEW or (st == OS_PENDING_CANCEL and o.prev_state == OS_PENDING_NEW):
        _terminate(oms, led, r, np.int64(OS_REJECTED), now_ns)
        return EX_REJECT
    return EX_DUPLICATE if st == OS_REJECTED else EX_STALE


@njit(cache=True, nogil=True, _nrt=False)
def apply_exec(oms, led, rec_u8, now_ns):
    rt = rec_u8[records.RTYPE_OFF]
    if rt == records.RT_FILL:
        code = _apply_fill_rec(oms, led, rec_u8, now_ns)
    elif rt == records.RT_ACK:
        code = _apply_ack_rec(oms, led, rec_u8, now_ns)
    elif rt == records.RT_REJECT:
        code = _apply_reject_rec(oms, led, rec_u8, now_ns)
    else:
        code = EX_IGNORED
    oms.ctr[C_EX + code] += 1
    return code


# --- reconciliation and queries ----------------------------------------------------------------
@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def quote_row(oms, q):
    return oms.quote_map[q]


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def reconcile(oms, q, price, qty, px_thr, qty_thr):
    r = oms.quote_map[q]
    if r < 0:
        return ACT_NEW if qty > 0 else ACT_NONE
    o = oms.orders[r]
    st = o.state
    if st == OS_PENDING_NEW or st == OS_PENDING_CANCEL or st == OS_PENDING_REPLACE:
        return ACT_WAIT
    if qty <= 0:
        return ACT_CANCEL
    dp = price - o.price
    dq = qty - o.leaves
    if dp > px_thr or -dp > px_thr or dq > qty_thr or -dq > qty_thr:
        return ACT_REPLACE
    return ACT_NONE


@njit(cache=True, nogil=True, _nrt=False)
def live_rows(oms, ii, out_rows):
    n = 0
    lo = 0 if ii < 0 else ii
    hi = oms.agg.shape[0] if ii < 0 else ii + 1
    for k in range(lo, hi):
        for j in range(oms.agg[k, G_LIST_LEN]):
            if n < out_rows.shape[0]:
                out_rows[n] = oms.live[k, j]
                n += 1
    return n


# --- order records -----------------------------------------------------------------------------
# The writers store whole 64-bit words (offsets from the dtypes, packing asserted below): no
# record view, no byte loop, every word after ``ver`` written (a ring slot still holds its
# previous record). Word 0 (``ver``) and ``publish_tsc`` belong to the ring.
_OFF = {k: records.field_offset(records.NEW_ORDER, k) for k in records.NEW_ORDER.names}
_C_OFF = {k: records.field_offset(records.CANCEL, k) for k in records.CANCEL.names}
_R_OFF = {k: records.field_offset(records.REPLACE, k) for k in records.REPLACE.names}
W_TYPE = records.TYPE_WORD_OFF                 # rtype | venue << 8 | flags << 16 | instr << 32
W_ORIGIN = records.ORIGIN_TSC_OFF
W_CLORD = _OFF["clord_id"]
W_STRAT = _OFF["strategy"]                     # strategy | session << 32
W_NEW_PRICE, W_NEW_QTY, W_NEW_SIDE = _OFF["price"], _OFF["qty"], _OFF["side"]
W_CXL_ORIG, W_CXL_QTY, W_CXL_SIDE = _C_OFF["orig_clord_id"], _C_OFF["qty"], _C_OFF["side"]
W_REP_ORIG, W_REP_PRICE, W_REP_QTY, W_REP_SIDE = (_R_OFF["orig_clord_id"], _R_OFF["price"],
                                                  _R_OFF["qty"], _R_OFF["side"])
_W_LAST = records.ORDER_RECORD_SIZE - 8
assert _OFF["session"] == W_STRAT + 4 and _C_OFF["strategy"] == _R_OFF["strategy"] == W_STRAT
assert _C_OFF["clord_id"] == _R_OFF["clord_id"] == W_CLORD
for _o in (_OFF, _R_OFF):                      # side | ord_type << 8 | tif << 16 in one word
    assert _o["ord_type"] == _o["side"] + 1 and _o["tif"] == _o["side"] + 2 and _o["side"] % 8 == 0
assert all(w % 8 == 0 for w in (W_CLORD, W_STRAT, W_NEW_PRICE, W_NEW_QTY, W_CXL_ORIG, W_CXL_QTY,
                                W_CXL_SIDE, W_REP_ORIG, W_REP_PRICE, W_REP_QTY))
_U32 = np.uint64(0xFFFFFFFF)


@njit(**HELPER)
def _head(out_u8, rtype, o, flags, origin_tsc, clord_id, session, last):
    """Zero the words of the record after ``last`` and write the header words: type word,
    origin, clord_id, strategy | session."""
    off = np.uint64(last + 8)
    while off <= np.uint64(_W_LAST):
        store_relaxed(out_u8, off, np.uint64(0))
        off += np.uint64(8)
    store_relaxed(out_u8, np.uint64(W_TYPE), np.uint64(rtype) | (np.uint64(o.venue) << np.uint64(8))
                  | ((np.uint64(flags) & np.uint64(0xFFFF)) << np.uint64(16))
                  | (np.uint64(o.instrument) << np.uint64(32)))
    store_relaxed(out_u8, np.uint64(W_ORIGIN), np.uint64(origin_tsc))
    store_relaxed(out_u8, np.uint64(W_CLORD), np.uint64(clord_id))
    store_relaxed(out_u8, np.uint64(W_STRAT), (np.uint64(o.strategy) & _U32)
                  | ((np.uint64(session) & _U32) << np.uint64(32)))


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def write_new(oms, row, out_u8, origin_tsc, session, flags):
    """NEW_ORDER for ``row`` into ``out_u8`` (uint8[128], e.g. an order ring slot); ``flags``:
    the record's F_* flags (post-only...)."""
    o = oms.orders[row]
    _head(out_u8, np.int64(records.RT_NEW_ORDER), o, flags, origin_tsc, o.clord_id, session,
          np.int64(W_NEW_SIDE))
    store_relaxed(out_u8, np.uint64(W_NEW_PRICE), np.uint64(o.price))
    store_relaxed(out_u8, np.uint64(W_NEW_QTY), np.uint64(o.qty))
    store_relaxed(out_u8, np.uint64(W_NEW_SIDE), np.uint64(o.side)
                  | np.uint64(records.ORD_LIMIT << 8) | (np.uint64(o.tif) << np.uint64(16)))


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def write_cancel(oms, row, out_u8, origin_tsc, session):
    """CANCEL for the pending cancel of ``row``."""
    o = oms.orders[row]
    _head(out_u8, np.int64(records.RT_CANCEL), o, np.int64(0), origin_tsc, o.cancel_id, session,
          np.int64(W_CXL_SIDE))
    store_relaxed(out_u8, np.uint64(W_CXL_ORIG), np.uint64(o.clord_id))
    store_relaxed(out_u8, np.uint64(W_CXL_QTY), np.uint64(o.leaves))
    store_relaxed(out_u8, np.uint64(W_CXL_SIDE), np.uint64(o.side))


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def write_replace(oms, new_row, out_u8, origin_tsc, session, flags):
    """REPLACE for the replacement row ``new_row`` (its orig_clord_id is the order replaced)."""
    o = oms.orders[new_row]
    _head(out_u8, np.int64(records.RT_REPLACE), o, flags, origin_tsc, o.clord_id, session,
          np.int64(W_REP_SIDE))
    store_relaxed(out_u8, np.uint64(W_REP_ORIG), np.uint64(o.orig_clord_id))
    store_relaxed(out_u8, np.uint64(W_REP_PRICE), np.uint64(o.price))
    store_relaxed(out_u8, np.uint64(W_REP_QTY), np.uint64(o.qty))
    store_relaxed(out_u8, np.uint64(W_REP_SIDE), np.uint64(o.side)
                  | np.uint64(records.ORD_LIMIT << 8) | (np.uint64(o.tif) << np.uint64(16)))
