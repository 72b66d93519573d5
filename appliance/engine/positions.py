"""Positions, balances, average cost, realised/unrealised PnL and fees, in exact integers.

All state lives in a :class:`Ledger` (a namedtuple of plain arrays, usable as one argument to
numba code) built by :func:`make_ledger`. Instruments are addressed by a *global instrument
index* ``ii`` (row of ``ledger.instr``); the engine maps (venue, per-venue instrument id) to
``ii`` once at start (:func:`instrument_map`, :func:`instrument_index`).

Units (read this before touching any number)::

    price            ticks of the instrument (int64)
    qty              lots of the instrument (int64); position ``pos.qty`` is signed (+ long)
    tick-lot ("tl")  price * qty; the natural PnL unit of one instrument (int64)
    e8               1e-8 of an asset: balances, fees, notional, account PnL (int64)
    notional_e8      price * qty * value_mult // value_div, where value_mult / value_div is
                     tick_e8 * lot_e8 / 1e8 reduced by their gcd (so it is exact whenever the
                     true amount is a whole number of 1e-8 quote units; otherwise floor-rounded
                     below 1e-8 of the quote asset).
    base amount e8   qty * lot_e8

Overflow: price * qty must stay below 2**63 / value_mult. For BTC-USD with a 0.01 tick and a
1e-8 lot (mult 1, div 100) that is 9.2e18 tick-lots: e.g. 1e7 ticks x 9e11 lots. Risk tier 1
(max_qty, price collar) runs before any order reaches the ledger, which bounds both factors.

Average cost is kept exact as the pair (``pos.cost``, ``pos.qty``): ``cost`` is the signed sum
of price*qty of the open position (same sign as ``qty``), so the average entry price is the
rational ``cost / qty`` ticks (:func:`avg_price` gives a float for display only). A reducing fill
of ``c`` lots removes ``|cost| * c // |qty|`` from the cost basis and realises
``sign(qty) * (c * price - removed)`` tick-lots; the floor leaves at most one tick-lot in the
basis, which is realised when the position closes, so every closed round trip is exact.

Round trips: a round trip starts when a position opens from flat and closes when the position
returns to zero or crosses it (the remainder of a crossing fill opens the next one). At close the
round trip's net PnL (realised e8 minus its fees) goes to ``acct[A_LAST_RT_E8]``,
``acct[A_RT_COUNT]`` grows and ``acct[A_LOSS_STREAK]`` counts consecutive losing round trips
(net < 0; a break-even trip resets the streak). Risk tier 2 reads these.

Fees: ``fee_e8`` of a fill is in 1e-8 of the instrument's quote asset, positive = paid (negative
= rebate); it is charged to the quote balance and to ``pos.fees_e8`` / ``acct[A_FEES_E8]``.

numba API (all ``@njit(cache=True, nogil=True, _nrt=False)``, allocation-free):

- ``apply_fill(led, ii, side, price, qty, fee_e8) -> int``: book one fill (SIDE_BUY/SIDE_SELL).
  Returns 1 when the fill closed a round trip, 0 otherwise, ``POS_INVALID`` (-1) for
  qty <= 0, price <= 0 or a bad side (nothing is booked).
- ``notional_e8(led.instr, ii, price, qty) -> int``
- ``unrealised_tl(led, ii, mark) -> int`` (tick-lots at mark price ``mark`` ticks; 0 if flat)
- ``tl_to_e8(led.instr, ii, tl) -> int``
- ``equity_e8(led, marks) -> int``: realised + unrealised (at ``marks[ii]`` ticks; an
  instrument with mark <= 0 counts no unrealised) - fees, summed over all instruments, in e8 of
  the quote asset (the account is assumed to have one quote currency, e.g. USD/USDT).
- ``instrument_index(imap, venue, instrument) -> ii or -1``.

Python: :func:`make_ledger`, :func:`instrument_table`, :func:`instrument_map`, :func:`avg_price`.
"""
from __future__ import annotations

import math
from collections import namedtuple

import numpy as np
from numba import njit

from appliance.transport import records

N_VENUES = 8                       # record venue ids (records.VENUE_*) index balances directly

INSTRUMENT = np.dtype([
    ("value_mult", "<i8"),         # notional_e8 = price * qty * value_mult // value_div
    ("value_div", "<i8"),
    ("lot_e8", "<i8"),             # one lot in 1e-8 of the base asset
    ("tick_e8", "<i8"),            # one tick in 1e-8 of the quote asset
    ("instrument", "<u4"),         # per-venue instrument id (records header field)
    ("base_asset", "<i4"),         # column of ledger.balances
    ("quote_asset", "<i4"),
    ("venue", "u1"),               # records.VENUE_*
], align=True)

POSITION = np.dtype([
    ("qty", "<i8"),                # signed lots, + long
    ("cost", "<i8"),               # signed tick-lots of the open position (sign of qty)
    ("realised", "<i8"),           # tick-lots, lifetime
    ("fees_e8", "<i8"),            # quote e8, lifetime, + paid
    ("rt_realised", "<i8"),        # tick-lots realised in the current round trip
    ("rt_fees_e8", "<i8"),         # fees paid in the current round trip
    ("volume", "<i8"),             # lots traded
    ("n_fills", "<i8"),
], align=True)

# acct: int64 account-wide tallies
A_REALISED_E8 = 0      # sum over fills of tl_to_e8(realised delta)
A_FEES_E8 = 1
A_RT_COUNT = 2         # closed round trips
A_LOSS_STREAK = 3      # consecutive losing round trips (net < 0)
A_LAST_RT_E8 = 4       # net PnL of the last closed round trip (e8, fees included)
A_FILLS = 5
N_ACCT = 8

POS_INVALID = -1

Ledger = namedtuple("Ledger", ["instr", "pos", "acct", "balances", "reserved"])
Ledger.__doc__ = """instr: INSTRUMENT[n]; pos: POSITION[n]; acct: int64[N_ACCT];
balances: int64[N_VENUES, n_assets] (e8 of each asset); reserved: int64[N_VENUES, n_assets]
(e8 held by open orders, maintained by appliance.engine.oms)."""


def instrument_table(specs) -> np.ndarray:
    """Build INSTRUMENT rows from dicts with keys venue (name or VENUE_* id), instrument (per-venue
    id), base_asset, quote_asset (balance columns), tick_e8, lot_e8 (positive integers)."""
    out = np.zeros(len(specs), INSTRUMENT)
    known = {"venue", "instrument", "base_asset", "quote_asset", "tick_e8", "lot_e8"}
    for i, s in enumerate(specs):
        bad = set(s) - known
        if bad:
            raise ValueError(f"instrument {i}: unknown keys {sorted(bad)} (known: {sorted(known)})")
        missing = known - set(s)
        if missing:
            raise ValueError(f"instrument {i}: missing keys {sorted(missing)}")
        venue = records.VENUE_IDS[s["venue"]] if isinstance(s["venue"], str) else int(s["venue"])
        if not 0 < venue < N_VENUES:
            raise ValueError(f"instrument {i}: venue {s['venue']!r} unknown")
        tick, lot = int(s["tick_e8"]), int(s["lot_e8"])
        if tick <= 0 or lot <= 0:
            raise ValueError(f"instrument {i}: tick_e8 and lot_e8 must be > 0, got {tick}, {lot}")
        num, den = tick * lot, 10**8
        g = math.gcd(num, den)
        row = out[i]
        row["value_mult"], row["value_div"] = num // g, den // g
        row["lot_e8"], row["tick_e8"] = lot, tick
        row["instrument"], row["venue"] = int(s["instrument"]), venue
        row["base_asset"], row["quote_asset"] = int(s["base_asset"]), int(s["quote_asset"])
    return out


def make_ledger(specs, n_assets: int, balances: dict | None = None) -> Ledger:
    """A zeroed ledger for ``specs`` (see :func:`instrument_table`). ``balances`` maps
    (venue id or name, asset column) -> starting amount in e8."""
    instr = instrument_table(specs)
    if len(instr) and (instr["base_asset"].max() >= n_assets or instr["quote_asset"].max() >= n_assets
                       or min(instr["base_asset"].min(), instr["quote_asset"].min()) < 0):
        raise ValueError(f"asset columns must be in [0, {n_assets})")
    bal = np.zeros((N_VENUES, n_assets), np.int64)
    for (venue, asset), amount in (balances or {}).items():
        v = records.VENUE_IDS[venue] if isinstance(venue, str) else int(venue)
        bal[v, asset] = int(amount)
    return Ledger(instr, np.zeros(len(instr), POSITION), np.zeros(N_ACCT, np.int64), bal,
                  np.zeros((N_VENUES, n_assets), np.int64))


def instrument_map(instr: np.ndarray) -> np.ndarray:
    """int32[N_VENUES, max_instrument + 1] mapping (venue, per-venue instrument) -> ii, -1 = none."""
    width = int(instr["instrument"].max()) + 1 if len(instr) else 1
    imap = np.full((N_VENUES, width), -1, np.int32)
    for ii, row in enumerate(instr):
        if imap[row["venue"], row["instrument"]] != -1:
            raise ValueError(f"instrument ({row['venue']}, {row['instrument']}) listed twice")
        imap[row["venue"], row["instrument"]] = ii
    return imap


def avg_price(led: Ledger, ii: int) -> float:
    """Average entry price in ticks (display only; the exact value is pos.cost / pos.qty)."""
    p = led.pos[ii]
    return float(p["cost"]) / float(p["qty"]) if p["qty"] else 0.0


@njit(cache=True, nogil=True, _nrt=False)
def instrument_index(imap, venue, instrument):
    if venue >= imap.shape[0] or instrument >= imap.shape[1]:
        return -1
    return imap[venue, instrument]


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def notional_e8(instr, ii, price, qty):
    return price * qty * instr[ii].value_mult // instr[ii].value_div


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def tl_to_e8(instr, ii, tl):
    m = instr[ii].value_mult
    d = instr[ii].value_div
    if tl >= 0:
        return tl * m // d
    return -((-tl) * m // d)


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def unrealised_tl(led, ii, mark):
    p = led.pos[ii]
    if p.qty == 0 or mark <= 0:
        return 0
    return p.qty * mark - p.cost


@njit(cache=True, nogil=True, _nrt=False)
def equity_e8(led, marks):
    total = 0
    for ii in range(led.pos.shape[0]):
        p = led.pos[ii]
        tl = p.realised + unrealised_tl(led, ii, marks[ii])
        total += tl_to_e8(led.instr, ii, tl) - p.fees_e8
    return total


@njit(cache=True, nogil=True, _nrt=False)
def apply_fill(led, ii, side, price, qty, fee_e8):
    if qty <= 0 or price <= 0 or (side != records.SIDE_BUY and side != records.SIDE_SELL):
        return POS_INVALID
    p = led.pos[ii]
    ins = led.instr[ii]
    s = 1 if side == records.SIDE_BUY else -1
    closed = 0
    realised = 0
    if p.qty == 0 or (p.qty > 0) == (s > 0):
        p.qty += s * qty
        p.cost += s * qty * price
    else:
        sgn = 1 if p.qty > 0 else -1
        held = p.qty * sgn
        close = qty if qty < held else held
        removed = (p.cost * sgn) * close // held
        realised = sgn * (close * price - removed)
        p.cost -= sgn * removed
        p.qty -= sgn * close
        rest = qty - close
        if p.qty == 0:
            closed = 1
            p.cost = 0
        if rest > 0:
            p.qty = s * rest
            p.cost = s * rest * price
    p.realised += realised
    p.rt_realised += realised
    p.fees_e8 += fee_e8
    p.rt_fees_e8 += fee_e8
    p.volume += qty
    p.n_fills += 1
    led.acct[A_REALISED_E8] += tl_to_e8(led.instr, ii, realised)
    led.acct[A_FEES_E8] += fee_e8
    led.acct[A_FILLS] += 1
    if closed:
        net = tl_to_e8(led.instr, ii, p.rt_realised) - p.rt_fees_e8
        led.acct[A_LAST_RT_E8] = net
        led.acct[A_RT_COUNT] += 1
        if net < 0:
            led.acct[A_LOSS_STREAK] += 1
        else:
            led.acct[A_LOSS_STREAK] = 0
        p.rt_realised = 0
        p.rt_fees_e8 = 0
    # balances: base moves by qty lots, quote by the notional and the fee
    n = price * qty * ins.value_mult // ins.value_div
    base_amt = qty * ins.lot_e8
    v = ins.venue
    led.balances[v, ins.base_asset] += s * base_amt
    led.balances[v, ins.quote_asset] -= s * n + fee_e8
    return closed
