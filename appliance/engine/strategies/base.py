"""The strategy interface: compiled callbacks over each instance's own rows of plain arrays.

Numba cannot call through function pointers cheaply, so a strategy is not an object: it is a
*kind* id plus four compiled callbacks in its own module, and every instance owns one row of each
of these arrays of the engine's ``Strategies`` bundle (``S`` instances run at once, any mix of
kinds)::

    meta    int64[S, META_N]        kind, instance id, legs (book row, venue, instrument, session),
                                    quote slots used
    params  float64[S, PARAMS_N]    the kind's parameters (layout defined by the kind's module)
    state   float64[S, STATE_N]     the kind's private state (layout defined by the kind's module)
    quotes  int64[S, Q_SLOTS, Q_N]  desired orders: what the strategy wants working right now

(the bundle also holds the engine's ``pnl`` and ``dirty`` rows, which strategies do not touch).

Callbacks (one of each per kind; ``i`` is the instance row, ``strats`` the Strategies bundle,
``books`` the engine's Books bundle (``px``, ``qty``, ``n``), ``now`` a TSC value taken from the
market event, never from the wall clock, so a replay is deterministic)::

    on_book(i, strats, books, b, now, origin) -> int
    on_trade(i, strats, books, b, price, q, side, now, origin) -> int
    on_fill(i, strats, leg, side, price, q, now) -> int
    on_timer(i, strats, books, now) -> int

Each returns ``CHANGED`` when it rewrote its quote slots and ``UNCHANGED`` otherwise, so the
engine reconciles orders only when something moved. ``on_book`` runs when book ``b`` (one of the
instance's legs) is consistent (end of a venue frame); the strategy reads the book through the
kernels of :mod:`appliance.engine.book`.

Quote slots. Each slot is one order the strategy wants; the engine (through the OMS) turns slots
into new / cancel / replace records::

    Q_STATE   QS_OFF (want nothing working), QS_QUOTE (a resting order at Q_PRICE / Q_QTY), or
              QS_TAKE (fire one immediate-or-cancel order; the engine sends it once and sets the
              slot back to QS_OFF)
    Q_LEG     which leg (0 or 1) of the instance the order goes to
    Q_SIDE    records.SIDE_BUY / SIDE_SELL
    Q_PRICE   ticks of the leg's instrument;  Q_QTY lots
    Q_TIF     records.TIF_*;  Q_FLAGS records.F_* (e.g. F_POST_ONLY)
    Q_ORIGIN  origin TSC of the market event that caused this quote (travels into the order)

A new strategy is a new module with the four callbacks, a ``KIND_*`` id here, ``SLOTS`` (how many
quote slots it uses, from 0), a ``PARAMS`` spec (name -> (index, default, minimum)) and one line in each dispatch function of
:mod:`appliance.engine.strategies`.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from appliance.jit import HELPER
from appliance.transport import records

# --- kinds --------------------------------------------------------------------------------------
KIND_NONE = 0
KIND_AS = 1          # Avellaneda-Stoikov market maker (avellaneda_stoikov.py)
KIND_XV = 2          # cross-venue taker (cross_venue.py)
KIND_TOUCH = 3       # one quote at the best bid and the best ask (touch.py)
KIND_NAMES = {"avellaneda_stoikov": KIND_AS, "cross_venue": KIND_XV, "touch": KIND_TOUCH}

# --- callback results ---------------------------------------------------------------------------
UNCHANGED = 0
CHANGED = 1

# --- meta row -----------------------------------------------------------------------------------
M_KIND = 0
M_ID = 1             # strategy instance id (goes into every order record's ``strategy`` field)
M_NLEGS = 2
M_BOOK = 3           # M_BOOK + leg: book row of the leg
M_VENUE = 5          # M_VENUE + leg: records.VENUE_* of the leg
M_INSTR = 7          # M_INSTR + leg: instrument index of the leg at its venue
M_SESSION = 9        # M_SESSION + leg: FIX session index orders of the leg go out on
M_SLOTS = 11         # quote slots the kind uses (0 .. M_SLOTS - 1; the engine reconciles those)
META_N = 16
MAX_LEGS = 2

PARAMS_N = 32
STATE_N = 32

# --- quote slots --------------------------------------------------------------------------------
Q_SLOTS = 4
Q_STATE = 0
Q_LEG = 1
Q_SIDE = 2
Q_PRICE = 3
Q_QTY = 4
Q_TIF = 5
Q_FLAGS = 6
Q_ORIGIN = 7
Q_N = 8

QS_OFF = 0
QS_QUOTE = 1
QS_TAKE = 2


@njit(**HELPER)
def track_inventory(state, i, col, side, q):
    """A fill of ``q`` lots on ``side``: instance ``i``'s inventory (``state[i, col]``, lots,
    + long) moves by it. Returns UNCHANGED (a kind's ``on_fill`` that only tracks inventory)."""
    if side == records.SIDE_BUY:
        state[i, col] += float(q)
    elif side == records.SIDE_SELL:
        state[i, col] -= float(q)
    return UNCHANGED


@njit(**HELPER)
def set_quote(quotes, i, slot, side, price, q, flags, origin):
    """Point instance ``i``'s ``slot`` at a resting GTC quote (``flags``: F_POST_ONLY, ...);
    CHANGED when its price or size moved or it was not quoting, else UNCHANGED."""
    if (quotes[i, slot, Q_STATE] == QS_QUOTE and quotes[i, slot, Q_PRICE] == price
            and quotes[i, slot, Q_QTY] == q):
        return UNCHANGED
    quotes[i, slot, Q_STATE] = QS_QUOTE
    quotes[i, slot, Q_LEG] = 0
    quotes[i, slot, Q_SIDE] = side
    quotes[i, slot, Q_PRICE] = price
    quotes[i, slot, Q_QTY] = q
    quotes[i, slot, Q_TIF] = records.TIF_GTC
    quotes[i, slot, Q_FLAGS] = flags
    quotes[i, slot, Q_ORIGIN] = origin
    return CHANGED


@njit(**HELPER)
def quote_off(quotes, i, slot, origin):
    """Take instance ``i``'s ``slot`` off the market; CHANGED unless it already was."""
    if quotes[i, slot, Q_STATE] == QS_OFF:
        return UNCHANGED
    quotes[i, slot, Q_STATE] = QS_OFF
    quotes[i, slot, Q_ORIGIN] = origin
    return CHANGED


class StrategyConfigError(ValueError):
    """A [[strategies]] table is invalid; the message names the offending key."""


def new_arrays(n_instances: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Zeroed ``(meta, params, state, quotes)`` for ``n_instances`` strategy instances."""
    if n_instances < 0 or n_instances > records.MAX_STRATEGIES:
        raise StrategyConfigError(f"strategies: between 0 and {records.MAX_STRATEGIES} instances, "
                                  f"got {n_instances}")
    meta = np.zeros((n_instances, META_N), dtype=np.int64)
    params = np.zeros((n_instances, PARAMS_N), dtype=np.float64)
    state = np.zeros((n_instances, STATE_N), dtype=np.float64)
    quotes = np.zeros((n_instances, Q_SLOTS, Q_N), dtype=np.int64)
    return meta, params, state, quotes


def fill_params(spec: dict, table: dict, where: str, row: np.ndarray) -> None:
    """Write ``table`` (a [strategies.params] table) into ``row`` following ``spec``
    (name -> (index, default, minimum)); unknown names and values below the minimum are rejected
    with a message naming the key."""
    if not isinstance(table, dict):
        raise StrategyConfigError(f"{where}: expected a table of parameters")
    for key in table:
        if key not in spec:
            raise StrategyConfigError(f"{where}.{key}: unknown parameter "
                                      f"(known: {', '.join(sorted(spec))})")
    for key, (idx, default, minimum) in spec.items():
        v = table.get(key, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise StrategyConfigError(f"{where}.{key}: expected a number, got {v!r}")
        if v < minimum:
            raise StrategyConfigError(f"{where}.{key}: must be >= {minimum}, got {v}")
        row[idx] = float(v)
