"""A venue that accepts every request at once, for in-process runs of the engine (benches, tests).

There is no exchange in an in-process run: without acknowledgements the OMS rightly waits on its
first orders and never re-quotes. ``ack_pending`` answers every request in flight the way a
venue's gateway would (an ACK record applied through the engine's own ``handle_exec``), and
``feed`` runs md records through the engine with those answers after every record that wrote
orders. Nothing here is engine code: the engine meets real venues through FIX gateways and the
exchange simulator.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from appliance.engine import kernels, oms
from appliance.transport import records


@njit(cache=True, nogil=True, _nrt=False)
def ack_pending(books, strats, gate, tel, io):
    """An ACK (NEW / CANCELED / REPLACED; EXPIRED for an IOC, which nobody fills here) for every
    live order with a request in flight, applied through ``kernels.handle_exec`` (``io.ex_buf``
    holds each record). Returns acks applied."""
    om = gate.oms
    rows = gate.rows
    buf = io.ex_buf
    cnt = oms.live_rows(om, np.int64(-1), rows)
    k = 0
    for j in range(cnt):
        o = om.orders[rows[j]]
        st = o.state
        if st != oms.OS_PENDING_NEW and st != oms.OS_PENDING_CANCEL and not (
                st == oms.OS_PENDING_REPLACE and o.is_repl != 0):
            continue
        buf[:] = 0
        a = buf.view(records.ACK)[0]
        a.rtype = records.RT_ACK
        a.venue = o.venue
        a.instrument = o.instrument
        a.strategy = o.strategy
        a.price = o.price
        a.qty = o.qty
        a.leaves_qty = o.leaves
        a.cum_qty = o.cum_qty
        a.side = o.side
        if st == oms.OS_PENDING_NEW and o.tif == records.TIF_IOC:
            a.clord_id = o.clord_id                # an IOC nobody fills expires at once
            a.exec_type = oms.EXEC_EXPIRED
            a.ord_status = oms.EXEC_EXPIRED
            a.leaves_qty = 0
        elif st == oms.OS_PENDING_NEW:
            a.clord_id = o.clord_id
            a.exec_type = records.EXEC_NEW
            a.ord_status = records.EXEC_NEW
        elif st == oms.OS_PENDING_CANCEL:
            a.clord_id = o.cancel_id
            a.orig_clord_id = o.clord_id
            a.exec_type = records.EXEC_CANCELED
            a.ord_status = records.EXEC_CANCELED
            a.leaves_qty = 0
        else:
            a.clord_id = o.clord_id
            a.orig_clord_id = o.orig_clord_id
            a.exec_type = records.EXEC_REPLACED
            a.ord_status = records.EXEC_NEW
        kernels.handle_exec(buf, books, strats, gate, tel, io)
        k += 1
    return k


@njit(cache=True, nogil=True, _nrt=False)
def run_acked(md, n_rec, books, strats, gate, tel, io):
    """``kernels.run_records`` with the venue answering every request right after the record
    that caused it; returns the orders written in total."""
    stats = tel.stats
    for k in range(n_rec):
        kernels.check_kill(books, strats, gate, tel, io)
        before = stats[kernels.ST_NEW] + stats[kernels.ST_REPLACE] + stats[kernels.ST_CANCEL]
        kernels.handle_md(md[k], books, strats, gate, tel, io)
        if stats[kernels.ST_NEW] + stats[kernels.ST_REPLACE] + stats[kernels.ST_CANCEL] != before:
            ack_pending(books, strats, gate, tel, io)
    return stats[kernels.ST_NEW] + stats[kernels.ST_REPLACE] + stats[kernels.ST_CANCEL]


def feed(es, md_records: np.ndarray, acks: bool = True) -> int:
    """Run md records (uint8[N, 64]) through an attached ``EngineState``, the venue answering
    every request at once (``acks``; without: ``es.feed``). Returns orders written in total."""
    if not acks:
        return es.feed(md_records)
    if md_records.ndim != 2 or md_records.shape[1] != records.MD_RECORD_SIZE:
        raise ValueError(f"feed: expected uint8[N, {records.MD_RECORD_SIZE}], "
                         f"got {md_records.dtype}{md_records.shape}")
    io = es.attached_io()
    return int(run_acked(md_records, md_records.shape[0], es.books, es.strats, es.gate, es.tel, io))


def acknowledge(es) -> int:
    """Answer every request of an attached ``EngineState`` in flight now; returns how many."""
    return int(ack_pending(es.books, es.strats, es.gate, es.tel, es.attached_io()))
