"""Compile (or load from the cache) the kernels ``appliance top`` calls, with its types: the
book view's batch apply and the book kernels it calls from Python (see :mod:`appliance.jit`;
ring and control kernels are the transport's warm-up)."""
from __future__ import annotations

import numpy as np

from appliance.engine import book
from appliance.ops import books
from appliance.transport import records


def warm() -> int:
    """Call every kernel once on private arrays; returns how many were called."""
    rows = np.zeros((books.BATCH, records.MD_RECORD_SIZE), np.uint8)
    book_map = np.full((records.VENUE_SIM + 1, 4), -1, np.int64)
    book_map[records.VENUE_BINANCE, 0] = 0
    px, qty, nlev = book.new_books(1, 8)
    st = np.zeros((1, books.S_COLS), np.int64)
    res = np.zeros(4, np.int64)
    rec = rows[0].view(records.L2_UPDATE)
    rec["rtype"], rec["venue"], rec["price"], rec["qty"] = (records.RT_L2_UPDATE,
                                                            records.VENUE_BINANCE, 100, 1)
    rec["side"], rec["flags"] = records.SIDE_BUY, records.F_SNAPSHOT
    books.apply_batch(rows, 1, book_map, px, qty, nlev, st, res)
    out_px, out_qty = np.zeros(5, np.int64), np.zeros(5, np.int64)
    book.top(px, qty, nlev, 0, 0, out_px, out_qty)
    book.clear(px, qty, nlev, 0)
    return 3
