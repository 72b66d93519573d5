"""Cross-venue taker: one instrument at two venues (kind ``KIND_XV``; leg 0 = venue A, leg 1 = B).

Prices of the two legs are in their own ticks; ``mult_a`` / ``mult_b`` scale each into one
common unit (e.g. both into 0.01 USD). On every consistent book update of either leg::

    edge_ab = bid_B * mult_b - ask_A * mult_a - fees      (buy at A, sell at B)
    edge_ba = bid_A * mult_a - ask_B * mult_b - fees      (buy at B, sell at A)
    fees    = (buy_px * fee_buy_bps + sell_px * fee_sell_bps) / 1e4   (taker fees, common unit)

and when an edge exceeds ``margin`` (common units) it takes both sides at once: two
immediate-or-cancel limit orders at the two touch prices (``qty_a`` lots at A, ``qty_b`` lots at B:
the same base amount in each venue's lots), provided both touches show at least that quantity and
the position on leg A stays within ``max_position`` lots. After a take it waits ``cooldown_ms``
(the IOCs' fills update the positions through ``on_fill``) before taking again.

Quote slots: 0 = leg A's order, 1 = leg B's order, both ``QS_TAKE``.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from appliance.transport import records
from appliance.engine.strategies import base
from appliance.jit import HELPER

P_MULT_A = 0
P_MULT_B = 1
P_FEE_A = 2
P_FEE_B = 3
P_MARGIN = 4
P_QTY_A = 5
P_QTY_B = 6
P_MAX_POS = 7
P_COOLDOWN_MS = 8
P_COOLDOWN_TSC = 9      # derived

PARAMS = {
    "mult_a": (P_MULT_A, 1.0, 1e-12),
    "mult_b": (P_MULT_B, 1.0, 1e-12),
    "fee_a_bps": (P_FEE_A, 10.0, 0.0),
    "fee_b_bps": (P_FEE_B, 10.0, 0.0),
    "margin": (P_MARGIN, 0.0, 0.0),
    "qty_a": (P_QTY_A, 1, 1),
    "qty_b": (P_QTY_B, 1, 1),
    "max_position": (P_MAX_POS, 10, 0),
    "cooldown_ms": (P_COOLDOWN_MS, 100.0, 0.0),
}

S_POS_A = 0         # lots bought - sold on leg A (from fills)
S_POS_B = 1
S_COOL_UNTIL = 2
S_TAKES = 3         # take decisions (pairs of IOCs)
S_LAST_EDGE = 4     # best edge seen at the last evaluation (common units)
S_EVALS = 5


SLOTS = 2           # quote slots: 0 = leg A, 1 = leg B
# slots / legs and sides as plain int64 (a literal argument would compile _take once per value)
_SLOT_A = np.int64(0)
_SLOT_B = np.int64(1)
_BUY = np.int64(records.SIDE_BUY)
_SELL = np.int64(records.SIDE_SELL)


def derive(params_row, tsc_per_ns: float) -> None:
    params_row[P_COOLDOWN_TSC] = params_row[P_COOLDOWN_MS] * 1e6 * tsc_per_ns


@njit(**HELPER)
def _take(quotes, i, slot, leg, side, price, q, origin):
    quotes[i, slot, base.Q_STATE] = base.QS_TAKE
    quotes[i, slot, base.Q_LEG] = leg
    quotes[i, slot, base.Q_SIDE] = side
    quotes[i, slot, base.Q_PRICE] = price
    quotes[i, slot, base.Q_QTY] = q
    quotes[i, slot, base.Q_TIF] = records.TIF_IOC
    quotes[i, slot, base.Q_FLAGS] = 0
    quotes[i, slot, base.Q_ORIGIN] = origin


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def on_book(i, strats, books, b, now, origin):
    meta, params, state, quotes = strats.meta, strats.params, strats.state, strats.quotes
    px, qty, n = books.px, books.qty, books.n
    ba_ = meta[i, base.M_BOOK]
    bb_ = meta[i, base.M_BOOK + 1]
    if n[ba_, 0] <= 0 or n[ba_, 1] <= 0 or n[bb_, 0] <= 0 or n[bb_, 1] <= 0:
        return base.UNCHANGED
    state[i, S_EVALS] += 1.0
    bid_a = px[ba_, 0, n[ba_, 0] - 1]
    ask_a = px[ba_, 1, n[ba_, 1] - 1]
    bid_b = px[bb_, 0, n[bb_, 0] - 1]
    ask_b = px[bb_, 1, n[bb_, 1] - 1]
    if bid_a >= ask_a or bid_b >= ask_b:
        return base.UNCHANGED     # a crossed book is not a price to trade on
    ma = params[i, P_MULT_A]
    mb = params[i, P_MULT_B]
    fa = params[i, P_FEE_A] * 1e-4
    fb = params[i, P_FEE_B] * 1e-4
    # buy A, sell B
    buy = ask_a * ma
    sell = bid_b * mb
    edge_ab = sell - buy - (buy * fa + sell * fb)
    # buy B, sell A
    buy2 = ask_b * mb
    sell2 = bid_a * ma
    edge_ba = sell2 - buy2 - (buy2 * fb + sell2 * fa)
    state[i, S_LAST_EDGE] = max(edge_ab, edge_ba)
    if now < state[i, S_COOL_UNTIL]:
        return base.UNCHANGED
    margin = params[i, P_MARGIN]
    qa = int(params[i, P_QTY_A])
    qb = int(params[i, P_QTY_B])
    maxpos = params[i, P_MAX_POS]
    pos = state[i, S_POS_A]
    if edge_ab > margin and pos + qa <= maxpos:
        if qty[ba_, 1, n[ba_, 1] - 1] >= qa and qty[bb_, 0, n[bb_, 0] - 1] >= qb:
            _take(quotes, i, _SLOT_A, _SLOT_A, _BUY, ask_a, qa, origin)
            _take(quotes, i, _SLOT_B, _SLOT_B, _SELL, bid_b, qb, origin)
            state[i, S_TAKES] += 1.0
            state[i, S_COOL_UNTIL] = float(now) + params[i, P_COOLDOWN_TSC]
            return base.CHANGED
    if edge_ba > margin and pos - qa >= -maxpos:
        if qty[bb_, 1, n[bb_, 1] - 1] >= qb and qty[ba_, 0, n[ba_, 0] - 1] >= qa:
            _take(quotes, i, _SLOT_A, _SLOT_A, _SELL, bid_a, qa, origin)
            _take(quotes, i, _SLOT_B, _SLOT_B, _BUY, ask_b, qb, origin)
            state[i, S_TAKES] += 1.0
            state[i, S_COOL_UNTIL] = float(now) + params[i, P_COOLDOWN_TSC]
            return base.CHANGED
    return base.UNCHANGED


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def on_trade(i, strats, books, b, price, q, side, now, origin):
    return base.UNCHANGED


@njit(cache=True, nogil=True, _nrt=False)
def on_fill(i, strats, leg, side, price, q, now):
    state = strats.state
    k = S_POS_A if leg == 0 else S_POS_B
    if side == records.SIDE_BUY:
        state[i, k] += float(q)
    elif side == records.SIDE_SELL:
        state[i, k] -= float(q)
    return base.UNCHANGED


@njit(cache=True, nogil=True, _nrt=False)
def on_timer(i, strats, books, now):
    return base.UNCHANGED
