"""Orders the OMS does not know: the engine restarted and lost its working orders (they are
cancelled at the venue on restart), but their reports keep coming, and a fill is money.

Compiled (``@njit(cache=True, nogil=True, _nrt=False)``, allocation-free, codes not exceptions)::

    book_fill(oms, led, book_map, rec_u8) -> BF_*
        A FILL record (uint8[128]) whose order the OMS does not know (``oms.apply_exec`` said
        EX_UNKNOWN) is booked to the ledger row of the record's (venue, instrument)
        (``book_map``: the engine's (venue, instrument) -> book row = ledger row) with the
        record's side, last price / qty and fee (``positions.apply_fill``). Deduplicated by
        ``exec_id`` through the OMS's exec-id set, so a report published twice (a FIX gateway
        that restarted between publishing it and persisting its sequence number) is booked once.
        BF_BOOKED, BF_DUPLICATE, BF_NO_BOOK (an instrument the engine does not trade),
        BF_BAD (no side, price or quantity <= 0: nothing can be booked).
    adopt(oms, led, clord_id, ii, side, price, qty, cum_qty, strategy, now_ns) -> row | AD_*
        Put an order the engine sent before a restart back in the OMS as a *terminal* row
        (CANCELLED: no exposure, no open-order count, no quote slot; it ages out of the table like
        any finished order), so its late reports find it: a fill is booked to the ledger AND to
        its strategy (``handle_exec``), a cancel ack is a duplicate, a status reply is stale.
        The row's ``applied`` / ``cum_qty`` start at ``cum_qty`` (what the snapshot had booked).
        Returns the existing row when the id is already known. AD_FULL (no row), AD_BAD.
    recent_exec_ids(oms.seen_fifo, oms.ctr, out) -> n
        The newest ``len(out)`` exec ids of the OMS's dedup set, oldest first (for a snapshot).
    restore_exec_ids(oms, ids, n)
        Add them back (after a restart) so reports published again are still recognised.
    collect_orders(oms.orders, oms.live, oms.agg, oms.retired, oms.ctr, out, max_terminal) -> n
        The live rows and the ``max_terminal`` most recently finished rows as ADOPT records
        (clord_id, ii, side, price, qty, cum_qty, strategy) for a snapshot.

The two snapshot helpers take the OMS's arrays, not the ``Oms`` namedtuple: they are called from
the engine's Python loop, and numba types a namedtuple argument on every call (tens of
microseconds) where an array costs a fingerprint.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from appliance import jit
from appliance.engine import oms as O
from appliance.engine import positions
from appliance.transport import records

BF_BOOKED = 1
BF_DUPLICATE = 2
BF_NO_BOOK = 3
BF_BAD = 4

AD_FULL = -1
AD_BAD = -2

# an order as the snapshot keeps it (enough to adopt it after a restart)
ADOPT = np.dtype([
    ("clord_id", "<u8"),
    ("ii", "<i8"),
    ("side", "<i8"),
    ("price", "<i8"),
    ("qty", "<i8"),
    ("cum_qty", "<i8"),
    ("strategy", "<i8"),
], align=True)


@njit(cache=True, nogil=True, _nrt=False)
def book_fill(oms, led, book_map, rec):
    f = rec.view(records.FILL)[0]
    v = np.int64(f.venue)
    ins = np.int64(f.instrument)
    if v >= book_map.shape[0] or ins >= book_map.shape[1]:
        return BF_NO_BOOK
    b = book_map[v, ins]
    if b < 0 or b >= led.pos.shape[0]:
        return BF_NO_BOOK
    side = np.int64(f.side)
    px = np.int64(f.last_price)
    q = np.int64(f.last_qty)
    if (side != records.SIDE_BUY and side != records.SIDE_SELL) or px <= 0 or q <= 0:
        return BF_BAD
    eid = f.exec_id
    if eid != 0:
        if O._seen_find(oms.seen, eid) >= 0:
            return BF_DUPLICATE
        O._seen_add(oms, eid)
    positions.apply_fill(led, b, side, px, q, np.int64(f.fee))
    return BF_BOOKED


@njit(cache=True, nogil=True, _nrt=False)
def adopt(oms, led, clord_id, ii, side, price, qty, cum_qty, strategy, now_ns):
    key = np.uint64(clord_id)
    if key == 0:
        return AD_BAD
    r = O.find_order(oms, key)
    if r >= 0:
        return r
    if (ii < 0 or ii >= led.pos.shape[0] or qty <= 0 or cum_qty < 0
            or (side != records.SIDE_BUY and side != records.SIDE_SELL)):
        return AD_BAD
    r = O._alloc(oms)
    if r < 0:
        return AD_FULL
    ins = led.instr[ii]
    O._init_row(oms, r, key, price, qty, now_ns)
    O._identity(oms.orders[r], ii, ins.venue, ins.instrument, side, strategy, np.int64(-1),
                np.int64(0))
    o = oms.orders[r]
    o.cum_qty = cum_qty
    o.applied = cum_qty
    o.leaves = qty - cum_qty if qty > cum_qty else 0
    o.state = O.OS_CANCELLED
    o.prev_state = O.OS_CANCELLED
    O._index_insert(oms, r)
    c = oms.ctr
    cap = oms.retired.shape[0]
    oms.retired[(c[O.C_RET_HEAD] + c[O.C_RET_N]) % cap] = r
    c[O.C_RET_N] += 1
    return r


@njit(cache=True, nogil=True, _nrt=False)
def recent_exec_ids(seen_fifo, ctr, out):
    cap = seen_fifo.shape[0]
    n = ctr[O.C_SEEN_N]
    k = n if n < out.shape[0] else out.shape[0]
    head = ctr[O.C_SEEN_HEAD]
    for j in range(k):
        out[j] = seen_fifo[(head + n - k + j) % cap]
    return k


@njit(cache=True, nogil=True, _nrt=False)
def restore_exec_ids(oms, ids, n):
    for j in range(n):
        key = ids[j]
        if key != 0 and O._seen_find(oms.seen, key) < 0:
            O._seen_add(oms, key)


@njit(**jit.HELPER)
def _put(orders, r, out, n):
    o = orders[r]
    d = out[n]
    d.clord_id = o.clord_id
    d.ii = o.ii
    d.side = o.side
    d.price = o.price
    d.qty = o.qty
    d.cum_qty = o.applied if o.applied > o.cum_qty else o.cum_qty
    d.strategy = o.strategy


@njit(cache=True, nogil=True, _nrt=False)
def collect_orders(orders, live, agg, retired, ctr, out, max_terminal):
    n = 0
    for ii in range(agg.shape[0]):
        for j in range(agg[ii, O.G_LIST_LEN]):
            if n < out.shape[0]:
                _put(orders, np.int64(live[ii, j]), out, n)
                n += 1
    cap = retired.shape[0]
    m = ctr[O.C_RET_N]
    k = m if m < max_terminal else max_terminal
    for j in range(k):             # the newest finished rows (the retired ring, oldest first)
        r = np.int64(retired[(ctr[O.C_RET_HEAD] + m - k + j) % cap])
        if n < out.shape[0] and orders[r].state != O.OS_FREE:
            _put(orders, r, out, n)
            n += 1
    return n
