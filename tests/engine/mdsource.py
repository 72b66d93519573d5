"""Md records for engine tests: real recorded venue sessions (tests/data/venues) turned into md
records by the venue's own feed code (appliance.ws.replay), plus a small record builder."""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from appliance.hotpath import records, ring

DATA = Path(__file__).resolve().parents[1] / "data" / "venues"
SESSIONS = {"binance": "BINANCE.ws.1.0", "coinbase": "COINBASE.ws.28.0",
            "kraken": "KRAKEN.ws.50.0", "bitstamp": "BITSTAMP.ws.1.0",
            "bitfinex": "BITFINEX.ws.11.0"}


@functools.lru_cache(maxsize=None)
def recorded(venue: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """``(uint8[N, 64] md records, symbols in instrument order)`` of the venue's recorded session."""
    from appliance.ws import replay

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
