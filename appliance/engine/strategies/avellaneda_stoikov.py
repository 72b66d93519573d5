"""Avellaneda-Stoikov market maker on one instrument at one venue (kind ``KIND_AS``).

Per consistent book update (all arithmetic in ticks and lots):

- multi-level microprice: ``mp = (bid * Qa + ask * Qb) / (Qa + Qb)`` with ``Qb`` / ``Qa`` the
  quantity summed over the best ``levels`` levels of each side (imbalance-weighted mid);
- volatility: an EMA of the squared microprice change per book event (``sigma2``, ticks^2);
- reservation price ``r = mp - inv * gamma * sigma2 * horizon`` (inventory skew: long -> lower);
- half spread ``d = gamma * sigma2 * horizon / 2 + ln(1 + gamma / k) / gamma
  + vol_widen * sigma``, widened by ``(1 + tox_widen * (vpin - tox_floor))`` when the VPIN-style
  toxicity exceeds ``tox_floor``, and never below ``min_half_spread``;
- quotes ``bid = floor(r - d)``, ``ask = ceil(r + d)``, kept passive (inside the opposite best
  minus one tick, post-only) and dropped on the side that would breach ``max_inventory``;
- a resting quote moves only when the new price differs by ``requote_ticks`` or more (or it
  would no longer be passive), so the OMS is not flooded with replaces;
- no quotes during warm-up (the first ``warmup_events`` book events: the EMAs need data) and
  while the book is one-sided or crossed.

Toxicity (VPIN-style): public trades are put into buckets of ``vpin_bucket`` lots by aggressor
side (the tick rule against the microprice when the venue does not say); each full bucket adds
``|buy - sell| / (buy + sell)`` to an EMA. When it reaches ``tox_pull`` both quotes are pulled at
once (on the trade, before the next book update) and stay pulled for ``cooldown_ms``.

Scale: ``price_unit`` ticks make one model price unit (default 1). Volatility, the half spread,
``min_half_spread`` and the inventory skew are in model units, so one parameter set fits
instruments whose tick is tiny against their spread (a venue with 1e-8 ticks on a 0.35 USDT
coin): set ``price_unit`` to about the typical spread in ticks. Quotes are still whole ticks, and
``requote_ticks`` is in ticks.

Quote slots: 0 = bid, 1 = ask. Inventory comes from this instance's own fills (``on_fill``).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from appliance.transport import records
from appliance.engine.strategies import base
from appliance.jit import HELPER

# --- params ------------------------------------------------------------------------------------
P_GAMMA = 0
P_K = 1
P_HORIZON = 2
P_LEVELS = 3
P_QTY = 4
P_MAX_INV = 5
P_MIN_HALF = 6
P_VOL_ALPHA = 7
P_VOL_WIDEN = 8
P_VPIN_BUCKET = 9
P_VPIN_ALPHA = 10
P_TOX_WIDEN = 11
P_TOX_FLOOR = 12
P_TOX_PULL = 13
P_REQUOTE = 14
P_WARMUP = 15
P_COOLDOWN_MS = 16
P_COOLDOWN_TSC = 17     # derived: cooldown_ms in TSC ticks (set by the engine from its clock)
P_UNIT = 18             # ticks per model price unit (see module docstring)
P_LOG_TERM = 19         # derived: ln(1 + gamma / k) / gamma
P_INV_UNIT = 20         # derived: 1 / price_unit

# name -> (index, default, minimum)
PARAMS = {
    "gamma": (P_GAMMA, 0.1, 1e-9),
    "k": (P_K, 1.5, 1e-9),
    "horizon_events": (P_HORIZON, 100.0, 0.0),
    "levels": (P_LEVELS, 3, 1),
    "qty": (P_QTY, 1, 1),
    "max_inventory": (P_MAX_INV, 10, 0),
    "min_half_spread": (P_MIN_HALF, 1.0, 0.5),
    "vol_alpha": (P_VOL_ALPHA, 0.05, 1e-6),
    "vol_widen": (P_VOL_WIDEN, 1.0, 0.0),
    "vpin_bucket": (P_VPIN_BUCKET, 100, 1),
    "vpin_alpha": (P_VPIN_ALPHA, 0.2, 1e-6),
    "tox_widen": (P_TOX_WIDEN, 2.0, 0.0),
    "tox_floor": (P_TOX_FLOOR, 0.3, 0.0),
    "tox_pull": (P_TOX_PULL, 0.7, 0.0),
    "requote_ticks": (P_REQUOTE, 1, 0),
    "warmup_events": (P_WARMUP, 20, 0),
    "cooldown_ms": (P_COOLDOWN_MS, 500.0, 0.0),
    "price_unit": (P_UNIT, 1.0, 1e-9),
}

# --- state -------------------------------------------------------------------------------------
S_EVENTS = 0
S_MP = 1            # last microprice (ticks)
S_VAR = 2           # EMA of squared microprice change (ticks^2 per book event)
S_VPIN = 3
S_BUY_V = 4         # current bucket, buyer-initiated lots
S_SELL_V = 5
S_INV = 6           # inventory in lots (+ long)
S_COOL_UNTIL = 7    # TSC until which quotes stay pulled
S_PULLED = 8        # 1 while pulled for toxicity
S_BUCKETS = 9       # completed VPIN buckets
S_PULLS = 10        # times quotes were pulled for toxicity
S_RES = 11          # last reservation price
S_HALF = 12         # last half spread
S_QUOTES = 13       # quote decisions that changed a slot


SLOTS = 2           # quote slots: 0 = bid, 1 = ask
# slots and sides as plain int64 (a literal argument would compile a helper once per value)
_BID = np.int64(0)
_ASK = np.int64(1)
_BUY = np.int64(records.SIDE_BUY)
_SELL = np.int64(records.SIDE_SELL)
_NO_ORIGIN = np.int64(0)


def derive(params_row, tsc_per_ns: float) -> None:
    """Fill the derived parameters of one instance (clock-dependent values in TSC ticks)."""
    params_row[P_COOLDOWN_TSC] = params_row[P_COOLDOWN_MS] * 1e6 * tsc_per_ns
    params_row[P_LOG_TERM] = math.log(1.0 + params_row[P_GAMMA] / params_row[P_K]) / params_row[P_GAMMA]
    params_row[P_INV_UNIT] = 1.0 / params_row[P_UNIT]


@njit(**HELPER)
def _pull(quotes, i, origin):
    return base.quote_off(quotes, i, _BID, origin) | base.quote_off(quotes, i, _ASK, origin)


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def on_book(i, strats, books, b, now, origin):
    params, state, quotes = strats.params, strats.state, strats.quotes
    px, qty, n = books.px, books.qty, books.n
    nb = n[b, 0]
    na = n[b, 1]
    if nb <= 0 or na <= 0:
        return _pull(quotes, i, origin)
    bb = px[b, 0, nb - 1]
    ba = px[b, 1, na - 1]
    if bb >= ba:                                     # crossed: no price to quote against
        return _pull(quotes, i, origin)
    levels = int(params[i, P_LEVELS])
    bq = 0
    aq = 0
    for k in range(min(levels, nb)):
        bq += qty[b, 0, nb - 1 - k]
    for k in range(min(levels, na)):
        aq += qty[b, 1, na - 1 - k]
    mp = (bb * float(aq) + ba * float(bq)) / float(aq + bq)
    ev = state[i, S_EVENTS] + 1.0
    state[i, S_EVENTS] = ev
    unit = params[i, P_UNIT]
    if ev > 1.0:
        d = (mp - state[i, S_MP]) * params[i, P_INV_UNIT]
        state[i, S_VAR] += params[i, P_VOL_ALPHA] * (d * d - state[i, S_VAR])
    state[i, S_MP] = mp
    if ev <= params[i, P_WARMUP]:
        return _pull(quotes, i, origin)
    if state[i, S_PULLED] != 0.0:
        if now < state[i, S_COOL_UNTIL]:
            return _pull(quotes, i, origin)
        state[i, S_PULLED] = 0.0
    gamma = params[i, P_GAMMA]
    sigma2 = state[i, S_VAR]
    horizon = params[i, P_HORIZON]
    inv = state[i, S_INV]
    res = mp - inv * gamma * sigma2 * horizon * unit
    half = (gamma * sigma2 * horizon * 0.5 + params[i, P_LOG_TERM]
            + params[i, P_VOL_WIDEN] * math.sqrt(sigma2))
    tox = state[i, S_VPIN] - params[i, P_TOX_FLOOR]
    if tox > 0.0:
        half *= 1.0 + params[i, P_TOX_WIDEN] * tox
    if half < params[i, P_MIN_HALF]:
        half = params[i, P_MIN_HALF]
    half *= unit
    state[i, S_RES] = res
    state[i, S_HALF] = half
    bid = int(math.floor(res - half))
    ask = int(math.ceil(res + half))
    if bid > ba - 1:
        bid = ba - 1
    if ask < bb + 1:
        ask = bb + 1
    q = int(params[i, P_QTY])
    maxinv = params[i, P_MAX_INV]
    thr = int(params[i, P_REQUOTE])
    rc = base.UNCHANGED
    # bid
    if bid <= 0 or inv + q > maxinv:
        rc |= base.quote_off(quotes, i, _BID, origin)
    else:
        if quotes[i, 0, base.Q_STATE] == base.QS_QUOTE:
            old = quotes[i, 0, base.Q_PRICE]
            if abs(bid - old) < thr and old <= ba - 1 and quotes[i, 0, base.Q_QTY] == q:
                bid = old
        rc |= base.set_quote(quotes, i, _BID, _BUY, bid, q, records.F_POST_ONLY, origin)
    # ask
    if inv - q < -maxinv:
        rc |= base.quote_off(quotes, i, _ASK, origin)
    else:
        if quotes[i, 1, base.Q_STATE] == base.QS_QUOTE:
            old = quotes[i, 1, base.Q_PRICE]
            if abs(ask - old) < thr and old >= bb + 1 and quotes[i, 1, base.Q_QTY] == q:
                ask = old
        rc |= base.set_quote(quotes, i, _ASK, _SELL, ask, q, records.F_POST_ONLY, origin)
    if rc != base.UNCHANGED:
        state[i, S_QUOTES] += 1.0
    return rc


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def on_trade(i, strats, books, b, price, q, side, now, origin):
    params, state, quotes = strats.params, strats.state, strats.quotes
    if q <= 0:
        return base.UNCHANGED
    if side == records.SIDE_NONE:
        # tick rule against the last microprice
        if state[i, S_MP] == 0.0 or float(price) == state[i, S_MP]:
            return base.UNCHANGED
        side = records.SIDE_BUY if float(price) > state[i, S_MP] else records.SIDE_SELL
    if side == records.SIDE_BUY:
        state[i, S_BUY_V] += float(q)
    else:
        state[i, S_SELL_V] += float(q)
    tot = state[i, S_BUY_V] + state[i, S_SELL_V]
    if tot < params[i, P_VPIN_BUCKET]:
        return base.UNCHANGED
    imb = abs(state[i, S_BUY_V] - state[i, S_SELL_V]) / tot
    state[i, S_VPIN] += params[i, P_VPIN_ALPHA] * (imb - state[i, S_VPIN])
    state[i, S_BUY_V] = 0.0
    state[i, S_SELL_V] = 0.0
    state[i, S_BUCKETS] += 1.0
    if state[i, S_VPIN] >= params[i, P_TOX_PULL] and params[i, P_TOX_PULL] > 0.0:
        if state[i, S_PULLED] == 0.0:
            state[i, S_PULLS] += 1.0
        state[i, S_PULLED] = 1.0
        state[i, S_COOL_UNTIL] = float(now) + params[i, P_COOLDOWN_TSC]
        return _pull(quotes, i, origin)
    return base.UNCHANGED


@njit(cache=True, nogil=True, _nrt=False)
def on_fill(i, strats, leg, side, price, q, now):
    return base.track_inventory(strats.state, i, S_INV, side, q)


@njit(cache=True, nogil=True, _nrt=False)
def on_timer(i, strats, books, now):
    state = strats.state
    # the cooldown ends on the next book event after it expired; nothing to do on a timer but
    # keep quotes pulled while it lasts
    if state[i, S_PULLED] != 0.0 and now < state[i, S_COOL_UNTIL]:
        return _pull(strats.quotes, i, _NO_ORIGIN)
    return base.UNCHANGED
