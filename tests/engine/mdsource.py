"""Md records for engine tests: real recorded venue sessions (tests/data/venues) turned into md
records by the venue's own feed code (appliance.venues.replay), plus a small record builder."""
from __future__ import annotations

import functools

import numpy as np

from appliance import data
from appliance.transport import records, ring

DATA = data.DIR / "venues"
SESSIONS = {"binance": "BINANCE.ws.1.0", "coinbase": "COINBASE.ws.28.0",
            "kraken": "KRAKEN.ws.50.0", "bitstamp": "BITSTAMP.ws.1.0",
            "bitfinex": "BITFINEX.ws.11.0"}


@functools.lru_cache(maxsize=None)
def recorded(venue: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """``(uint8[N, 64] md records, symbols in instrument order)`` of the venue's recorded session."""
    from appliance.venues import replay

    feed = replay.run(DATA / SESSIONS[venue], venue)
    h = int(ring.head(feed.writer.hdr))
    assert h < feed.writer.data.shape[0], "replay ring too small: records were lapped"
    recs = feed.writer.data[:h].copy()
    recs.setflags(write=False)
    return recs, tuple(i.symbol for i in feed.instruments)


def rec(rtype: int, venue: int = records.VENUE_BINANCE, instrument: int = 0, origin: int = 1,
        flags: int = 0, **fields) -> np.ndarray:
    """One md record (uint8[64]) of kind ``rtype`` with header and payload ``fields``."""
    r = np.zeros(1, records.RECORD_DTYPES[rtype])
    r[0]["rtype"] = rtype
    r[0]["venue"] = venue
    r[0]["instrument"] = instrument
    r[0]["origin_tsc"] = origin
    r[0]["flags"] = flags
    for k, v in fields.items():
        r[0][k] = v
    return r.view(np.uint8).reshape(-1)


def book_frame(bids, asks, origin, venue=records.VENUE_BINANCE, instrument=0) -> list[np.ndarray]:
    """L2 updates for ``bids`` / ``asks`` ([(price, qty)]) followed by a BATCH_END."""
    out = [rec(records.RT_L2_UPDATE, venue, instrument, origin, price=p, qty=q,
               side=records.SIDE_BUY) for p, q in bids]
    out += [rec(records.RT_L2_UPDATE, venue, instrument, origin, price=p, qty=q,
                side=records.SIDE_SELL) for p, q in asks]
    out.append(rec(records.RT_BATCH_END, venue, instrument, origin))
    return out


def stack(recs: list[np.ndarray]) -> np.ndarray:
    return np.stack(recs).astype(np.uint8)


def order_records(hdr, data) -> list[np.ndarray]:
    """Every record published on an order ring so far (uint8[128] rows, oldest first)."""
    h = int(ring.head(hdr))
    assert h <= data.shape[0], "order ring lapped"
    return [data[k].copy() for k in range(h)]


def venue_ack(order: np.ndarray) -> np.ndarray:
    """The exec record (uint8[128]) a venue that accepts everything sends for one order record:
    ACK NEW for a new order, REPLACED for a replace, CANCELED for a cancel; for the engine's
    RT_RECONCILE (it restarted), what a FIX gateway with nothing working answers:
    SESSION_RECONCILED naming the request."""
    rt = int(order[8])
    o = order.view(records.RECORD_DTYPES[rt])[0]
    if rt == records.RT_RECONCILE:
        s = np.zeros(1, records.SESSION)
        s[0]["rtype"] = records.RT_SESSION
        s[0]["session"] = o["session"]
        s[0]["state"] = records.SESSION_RECONCILED
        s[0]["reconcile_id"] = o["clord_id"]
        return s.view(np.uint8).reshape(-1)
    a = np.zeros(1, records.ACK)
    a[0]["rtype"] = records.RT_ACK
    for k in ("venue", "instrument", "strategy", "session", "clord_id"):
        a[0][k] = o[k]
    a[0]["side"] = o["side"]
    if rt == records.RT_NEW_ORDER:
        a[0]["exec_type"] = a[0]["ord_status"] = records.EXEC_NEW
        a[0]["price"], a[0]["qty"], a[0]["leaves_qty"] = o["price"], o["qty"], o["qty"]
    elif rt == records.RT_REPLACE:
        a[0]["exec_type"], a[0]["ord_status"] = records.EXEC_REPLACED, records.EXEC_NEW
        a[0]["orig_clord_id"] = o["orig_clord_id"]
        a[0]["price"], a[0]["qty"], a[0]["leaves_qty"] = o["price"], o["qty"], o["qty"]
    elif rt == records.RT_CANCEL:
        a[0]["exec_type"] = a[0]["ord_status"] = records.EXEC_CANCELED
        a[0]["orig_clord_id"] = o["orig_clord_id"]
    else:
        raise ValueError(f"not an order record: rtype {rt}")
    return a.view(np.uint8).reshape(-1)


def ack_orders(reader, writer) -> int:
    """Acknowledge every order record ``reader`` (a RingReader on the order ring) has not seen
    yet onto ``writer`` (the exec ring), as an accepting venue would; returns how many."""
    buf = np.zeros(records.ORDER_RECORD_SIZE, np.uint8)
    k = 0
    while ring.poll(reader.hdr, reader.data, reader.cur, buf) == 1:
        ring.publish(writer.hdr, writer.data, venue_ack(buf))
        k += 1
    return k
