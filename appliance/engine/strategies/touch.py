"""Touch quoter: one lot-sized quote on each side at the best bid and the best ask (kind ``KIND_TOUCH``).

On every consistent book update of its one leg it wants a buy of ``qty`` lots at the best bid and
a sell of ``qty`` lots at the best ask (post-only when ``post_only`` is 1, GTC); a quote follows
the touch: when the best price of its side moves, the slot moves with it (the engine turns that
into a replace, which loses the queue position at the venue). A side whose fill would take the
inventory (from this instance's own fills) beyond ``max_inventory`` lots is pulled. Both quotes
are pulled while the book is one-sided or crossed.

It is the simplest market maker there is: the reference strategy the backtest is checked against
a peer backtester with (tests/sim/test_backtest.py), and a baseline for strategy comparisons.

Quote slots: 0 = bid, 1 = ask.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from appliance.transport import records
from appliance.engine.strategies import base

P_QTY = 0
P_MAX_INV = 1
P_POST_ONLY = 2

# name -> (index, default, minimum)
PARAMS = {
    "qty": (P_QTY, 1, 1),
    "max_inventory": (P_MAX_INV, 1_000_000_000, 0),
    "post_only": (P_POST_ONLY, 1, 0),
}

S_INV = 0           # inventory in lots (+ long)
S_QUOTES = 1        # quote decisions that changed a slot

SLOTS = 2           # quote slots: 0 = bid, 1 = ask
# slots and sides as plain int64 (a literal argument would compile a helper once per value)
_BID = np.int64(0)
_ASK = np.int64(1)
_BUY = np.int64(records.SIDE_BUY)
_SELL = np.int64(records.SIDE_SELL)


def derive(params_row, tsc_per_ns: float) -> None:
    """No clock-dependent parameters."""


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def on_book(i, strats, books, b, now, origin):
    params, state, quotes = strats.params, strats.state, strats.quotes
    px, n = books.px, books.n
    nb = n[b, 0]
    na = n[b, 1]
    if nb <= 0 or na <= 0 or px[b, 0, nb - 1] >= px[b, 1, na - 1]:
        return base.quote_off(quotes, i, _BID, origin) | base.quote_off(quotes, i, _ASK, origin)
    q = np.int64(params[i, P_QTY])
    inv = state[i, S_INV]
    maxinv = params[i, P_MAX_INV]
    flags = np.int64(records.F_POST_ONLY) if params[i, P_POST_ONLY] != 0.0 else np.int64(0)
    rc = base.UNCHANGED
    if inv + q > maxinv:
        rc |= base.quote_off(quotes, i, _BID, origin)
    else:
        rc |= base.set_quote(quotes, i, _BID, _BUY, px[b, 0, nb - 1], q, flags, origin)
    if inv - q < -maxinv:
        rc |= base.quote_off(quotes, i, _ASK, origin)
    else:
        rc |= base.set_quote(quotes, i, _ASK, _SELL, px[b, 1, na - 1], q, flags, origin)
    if rc != base.UNCHANGED:
        state[i, S_QUOTES] += 1.0
    return rc


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def on_trade(i, strats, books, b, price, q, side, now, origin):
    return base.UNCHANGED


@njit(cache=True, nogil=True, _nrt=False)
def on_fill(i, strats, leg, side, price, q, now):
    return base.track_inventory(strats.state, i, S_INV, side, q)


@njit(cache=True, nogil=True, _nrt=False)
def on_timer(i, strats, books, now):
    return base.UNCHANGED
