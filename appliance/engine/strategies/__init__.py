"""Strategies: the dispatch the engine calls, and the Python side that builds instances.

``on_book`` / ``on_trade`` / ``on_fill`` / ``on_timer`` below route by the instance's kind
(``strats.meta[i, M_KIND]``) to the kind's module; see :mod:`.base` for the interface and array
layout. ``on_book`` / ``on_trade`` are on the engine's tick path and ``forceinline=True`` (LLVM
inlines them, and the kind's callbacks, into the engine's md handler).
Adding a strategy: a new module, a ``KIND_*`` in base, one entry in ``MODULES`` and one branch in
each dispatch function.
"""
from __future__ import annotations

from numba import njit

from appliance.engine.strategies import avellaneda_stoikov as _as
from appliance.engine.strategies import base
from appliance.engine.strategies import cross_venue as _xv

MODULES = {base.KIND_AS: _as, base.KIND_XV: _xv}
LEGS = {base.KIND_AS: 1, base.KIND_XV: 2}


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def on_book(i, strats, books, b, now, origin):
    kind = strats.meta[i, base.M_KIND]
    if kind == base.KIND_AS:
        return _as.on_book(i, strats, books, b, now, origin)
    if kind == base.KIND_XV:
        return _xv.on_book(i, strats, books, b, now, origin)
    return base.UNCHANGED


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def on_trade(i, strats, books, b, price, q, side, now, origin):
    kind = strats.meta[i, base.M_KIND]
    if kind == base.KIND_AS:
        return _as.on_trade(i, strats, books, b, price, q, side, now, origin)
    if kind == base.KIND_XV:
        return _xv.on_trade(i, strats, books, b, price, q, side, now, origin)
    return base.UNCHANGED


@njit(cache=True, nogil=True, _nrt=False)
def on_fill(i, strats, leg, side, price, q, now):
    kind = strats.meta[i, base.M_KIND]
    if kind == base.KIND_AS:
        return _as.on_fill(i, strats, leg, side, price, q, now)
    if kind == base.KIND_XV:
        return _xv.on_fill(i, strats, leg, side, price, q, now)
    return base.UNCHANGED


@njit(cache=True, nogil=True, _nrt=False)
def on_timer(i, strats, books, now):
    kind = strats.meta[i, base.M_KIND]
    if kind == base.KIND_AS:
        return _as.on_timer(i, strats, books, now)
    if kind == base.KIND_XV:
        return _xv.on_timer(i, strats, books, now)
    return base.UNCHANGED


_INSTANCE_KEYS = {"kind", "name", "venue", "symbol", "venues", "symbols", "session", "sessions",
                  "params"}


def build(tables: list, instrument_of, tsc_per_ns: float):
    """Instances from the config's ``[[strategies]]`` tables.

    ``instrument_of(venue_name, symbol) -> (venue_id, instrument_index, book_row)`` resolves a leg
    (raising ``StrategyConfigError`` for an unknown one). Returns ``(meta, params, state, quotes,
    names)``. Unknown keys, kinds and parameters are rejected with the key named."""
    if not isinstance(tables, list):
        raise base.StrategyConfigError("strategies: expected an array of tables ([[strategies]])")
    meta, params, state, quotes = base.new_arrays(len(tables))
    names = []
    for i, t in enumerate(tables):
        where = f"strategies[{i}]"
        if not isinstance(t, dict):
            raise base.StrategyConfigError(f"{where}: expected a table")
        for key in t:
            if key not in _INSTANCE_KEYS:
                raise base.StrategyConfigError(f"{where}.{key}: unknown key "
                                               f"(known: {', '.join(sorted(_INSTANCE_KEYS))})")
        kind_name = t.get("kind")
        if kind_name not in base.KIND_NAMES:
            raise base.StrategyConfigError(f"{where}.kind: {kind_name!r} is not one of "
                                           f"{', '.join(sorted(base.KIND_NAMES))}")
        kind = base.KIND_NAMES[kind_name]
        nlegs = LEGS[kind]
        if nlegs == 1:
            for k in ("venues", "symbols", "sessions"):
                if k in t:
                    raise base.StrategyConfigError(f"{where}.{k}: {kind_name} has one leg: "
                                                   f"use venue / symbol / session")
            venues, symbols, sessions = [t.get("venue")], [t.get("symbol")], [t.get("session", 0)]
        else:
            for k in ("venue", "symbol", "session"):
                if k in t:
                    raise base.StrategyConfigError(f"{where}.{k}: {kind_name} has {nlegs} legs: "
                                                   f"use venues / symbols / sessions")
            venues, symbols = t.get("venues"), t.get("symbols")
            sessions = t.get("sessions", [0] * nlegs)
        for k, v in (("venue", venues), ("symbol", symbols), ("session", sessions)):
            if not isinstance(v, list) or len(v) != nlegs or any(x is None for x in v):
                raise base.StrategyConfigError(f"{where}.{k}{'s' if nlegs > 1 else ''}: "
                                               f"required, {nlegs} value(s)")
        meta[i, base.M_KIND] = kind
        meta[i, base.M_ID] = i
        meta[i, base.M_NLEGS] = nlegs
        meta[i, base.M_SLOTS] = MODULES[kind].SLOTS
        for leg in range(nlegs):
            if not isinstance(sessions[leg], int) or sessions[leg] < 0:
                raise base.StrategyConfigError(f"{where}.session: expected an integer >= 0")
            vid, instr, row = instrument_of(venues[leg], symbols[leg])
            meta[i, base.M_BOOK + leg] = row
            meta[i, base.M_VENUE + leg] = vid
            meta[i, base.M_INSTR + leg] = instr
            meta[i, base.M_SESSION + leg] = sessions[leg]
        mod = MODULES[kind]
        base.fill_params(mod.PARAMS, t.get("params", {}), f"{where}.params", params[i])
        mod.derive(params[i], tsc_per_ns)
        names.append(str(t.get("name", f"{kind_name}-{i}")))
    return meta, params, state, quotes, names
