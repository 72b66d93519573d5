"""Compile (or load from the cache) every kernel the engine runs, with the production types.

``warm()`` builds a small engine (both strategy kinds, the default risk table) on local rings of
the production geometry and calls each compiled entry point once: the actor's ``step`` (with a
``Loop`` padded to MAX_MD_RINGS / MAX_EXEC_RINGS, so the one compiled step serves any number of
venues and sessions), the
kernels Python calls around it (``cancel_all``, ``equity``, ``oms.live_rows``, ``book.clear``)
and the restart recovery's kernels (``recovery.warm``: replay, snapshot capture, adoption of
orders sent before a restart). Not here: the entry points only tests and benches call from
Python (``EngineState.feed``'s ``run_records``, ``exec_record``'s ``handle_exec``); they
compile on their first call. The engine actor calls it before it
attaches to its rings; ``appliance compile`` calls it through :data:`appliance.jit.WARMERS`.
Nothing is traded: the rings are private and the kill switch is clear.
"""
from __future__ import annotations

import numpy as np

from appliance.engine import book, kernels, oms
from appliance.engine.state import EngineState
from appliance.transport import clock, records, ring, wait

_VENUES = {"binance": ["AAAUSDT", "BBBUSDT"], "kraken": ["AAA/USDT"]}
_STRATEGIES = [
    {"kind": "avellaneda_stoikov", "venue": "binance", "symbol": "AAAUSDT"},
    {"kind": "cross_venue", "venues": ["binance", "kraken"], "symbols": ["AAAUSDT", "AAA/USDT"]},
]


def warm() -> int:
    """Compile or load every engine kernel; returns how many entry points were called."""
    es = EngineState(_VENUES, _STRATEGIES, cal=clock.calibration(), clord_base=1)
    oh, od = ring.local_ring(records.ORDER_RECORD_SIZE, 64)
    words = np.zeros(records.CONTROL_BLOCK.itemsize // 8, np.uint64)
    io = es.attach(oh, od, words)
    mh, md = ring.local_ring(records.MD_RECORD_SIZE, 64)
    eh, ed = ring.local_ring(records.EXEC_RECORD_SIZE, 64)
    loop = es.loop([(mh, md, ring.local_cursor(mh))], [(eh, ed, ring.local_cursor(eh))],
                   wait.make("spin"), wait.new_state())
    kernels.step(loop, es.books, es.strats, es.gate, es.tel, io, 0, 1)
    es.cancel_all()
    kernels.equity(0, es.books, es.strats)
    oms.live_rows(es.oms, -1, es.rows)
    book.clear(es.px, es.qty, es.n, 0)
    from appliance.engine import recovery
    recovery.warm(es, io)          # restart recovery: replay, snapshot capture, adoption
    return 6
