"""Coinbase Exchange feed (ws-feed): level2 (snapshot + l2update) and matches.

Subscription: ``{"type":"subscribe","product_ids":[...],"channels":["level2","matches"]}``
(and "heartbeat", whose per-product sequence makes a silent product visible). Frames are objects
with ``"type"``; the hot ones (l2update, match) are parsed by compiled code; subscriptions,
heartbeat, error and ticker frames are rare and handled with orjson.

Book sync: ``snapshot`` rebuilds a product's book (BOOK_VALID); ``l2update`` changes carry
``[side, price, size]`` with size 0 deleting the level. The level2 channel has no sequence
numbers, so gaps cannot be seen directly: a crossed book, a bad frame or a stale product marks
the book invalid and asks for a resubscribe (which brings a fresh snapshot). ``match`` frames
are trades; ``side`` is the maker's side, so the aggressor is the other side. ``last_match``
(sent once on subscribe) is history, not published.
"""
from __future__ import annotations

import numpy as np
import orjson
from numba import njit

from appliance.transport import records
from appliance.venues import common, scan
from appliance.venues.common import K_TRADE, R_AUX1, R_AUX2, R_INST, R_KIND, R_PRICE, R_QTY, R_SEQ, R_SIDE, Instrument

NAME = "coinbase"
VENUE_ID = records.VENUE_COINBASE
# REST paths of the instrument metadata (the ``X.0`` files of the recordings hold these responses)
METADATA_PATHS = ("/products",)

I_KIND = 0
I_INST = 1
I_NROWS = 2
I_SEQ = 3
FR_OTHER = 0
FR_EVENT = 1         # rare frame: handled with orjson
FR_SNAPSHOT = 2
FR_UPDATE = 3
FR_TRADE = 4
FR_LAST_MATCH = 5

_K_TYPE = scan.key("type")
_K_PRODUCT = scan.key("product_id")
_K_CHANGES = scan.key("changes")
_K_BIDS = scan.key("bids")
_K_ASKS = scan.key("asks")
_K_TRADE_ID = scan.key("trade_id")
_K_SIDE = scan.key("side")
_K_SIZE = scan.key("size")
_K_PRICE = scan.key("price")
_K_SEQUENCE = scan.key("sequence")
_L_L2 = scan.lit("l2update")
_L_SNAP = scan.lit("snapshot")
_L_MATCH = scan.lit("match")
_L_LAST = scan.lit("last_match")


@njit(cache=True, nogil=True, _nrt=False)
def parse_frame(b, end, syms, lens, grids, rows, info):
    """Parse one ws-feed frame; info[I_*] says what it was. Returns rc."""
    info[I_KIND] = FR_OTHER
    info[I_INST] = -1
    info[I_NROWS] = 0
    info[I_SEQ] = 0
    kt = scan.find_key(b, 0, end, _K_TYPE)
    if kt < 0:
        return scan.E_MISSING
    ts, te, _ = scan.string_span(b, kt, end)
    if ts < 0:
        return scan.E_SYNTAX
    upd = scan.bytes_eq(b, ts, te, _L_L2)
    snap = scan.bytes_eq(b, ts, te, _L_SNAP)
    match = scan.bytes_eq(b, ts, te, _L_MATCH)
    last = scan.bytes_eq(b, ts, te, _L_LAST)
    if not (upd or snap or match or last):
        info[I_KIND] = FR_EVENT
        return scan.OK
    kp = scan.find_key(b, 0, end, _K_PRODUCT)
    if kp < 0:
        return scan.E_MISSING
    ps, pe, _ = scan.string_span(b, kp, end)
    if ps < 0:
        return scan.E_SYNTAX
    inst = scan.match_symbol(b, ps, pe, syms, lens)
    if inst < 0:
        return scan.E_SYMBOL
    info[I_INST] = inst
    dp = grids[inst, 0]
    sp = grids[inst, 1]
    dq = grids[inst, 2]
    sq = grids[inst, 3]
    if upd:
        kc = scan.find_key(b, 0, end, _K_CHANGES)
        if kc < 0:
            return scan.E_MISSING
        n, _, rc = common.parse_levels(b, kc, end, dp, sp, dq, sq, inst, 0, 0, 1, 2, 0, rows, 0)
        if rc != 0:
            return rc
        info[I_KIND] = FR_UPDATE
        info[I_NROWS] = n
        return scan.OK
    if snap:
        kb = scan.find_key(b, 0, end, _K_BIDS)
        ka = scan.find_key(b, 0, end, _K_ASKS)
        if kb < 0 or ka < 0:
            return scan.E_MISSING
        n, _, rc = common.parse_levels(b, kb, end, dp, sp, dq, sq, inst, records.SIDE_BUY,
                                       -1, 0, 1, 0, rows, 0)
        if rc != 0:
            return rc
        n, _, rc = common.parse_levels(b, ka, end, dp, sp, dq, sq, inst, records.SIDE_SELL,
                                       -1, 0, 1, 0, rows, n)
        if rc != 0:
            return rc
        info[I_KIND] = FR_SNAPSHOT
        info[I_NROWS] = n
        return scan.OK
    # match / last_match
    kid = scan.find_key(b, 0, end, _K_TRADE_ID)
    ks = scan.find_key(b, 0, end, _K_SIDE)
    kz = scan.find_key(b, 0, end, _K_SIZE)
    kpx = scan.find_key(b, 0, end, _K_PRICE)
    kseq = scan.find_key(b, 0, end, _K_SEQUENCE)
    if kid < 0 or ks < 0 or kz < 0 or kpx < 0:
        return scan.E_MISSING
    tid, _, rc = scan.parse_int(b, kid, end)
    if rc != 0:
        return rc
    ss, se, _ = scan.string_span(b, ks, end)
    if ss < 0 or se == ss:
        return scan.E_SYNTAX
    # side is the maker's: a resting sell was hit by a buyer
    if b[ss] == 115:
        side = records.SIDE_BUY
    elif b[ss] == 98:
        side = records.SIDE_SELL
    else:
        return scan.E_SYNTAX
    q, _, rc = scan.parse_grid(b, kz, end, dq, sq)
    if rc != 0:
        return rc
    p, _, rc = scan.parse_grid(b, kpx, end, dp, sp)
    if rc != 0:
        return rc
    if kseq >= 0:
        sq_, _, rc = scan.parse_int(b, kseq, end)
        if rc == 0:
            info[I_SEQ] = sq_
    rows[0, R_KIND] = K_TRADE
    rows[0, R_INST] = inst
    rows[0, R_SIDE] = side
    rows[0, R_PRICE] = p
    rows[0, R_QTY] = q
    rows[0, R_SEQ] = tid
    rows[0, R_AUX1] = 0
    rows[0, R_AUX2] = 0
    info[I_KIND] = FR_TRADE if match else FR_LAST_MATCH
    info[I_NROWS] = 1
    return scan.OK


def load_instruments(meta: bytes, symbols: list[str] | None = None) -> list[Instrument]:
    """Instruments from /products (quote_increment, base_increment)."""
    body = common.metadata_body(meta, "/products")
    try:
        products = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise common.InstrumentError(f"coinbase /products is not JSON: {e}") from None
    out = []
    for p in products:
        try:
            out.append(Instrument.make(p["id"], p["id"], p["quote_increment"], p["base_increment"]))
        except (KeyError, common.InstrumentError):
            continue
    return common.select(out, symbols, common.configured_l2(meta))


def subscribe_messages(instruments: list[Instrument]) -> list[str]:
    return [orjson.dumps({"type": "subscribe", "product_ids": [i.symbol for i in instruments],
                          "channels": ["level2", "matches", "heartbeat"]}).decode()]


def stream_path(instruments: list[Instrument]) -> str:
    return ""


class Feed(common.BaseFeed):
    NAME = NAME
    VENUE_ID = VENUE_ID
    EXTRA_COUNTERS = ("snapshots",)
    ROWS = 1 << 17            # level2 snapshots are the whole book (46,000 levels for BTC-USD)
    CAP = 1 << 15

    def _on_event(self, frame: bytes) -> None:
        try:
            ev = orjson.loads(frame)
        except orjson.JSONDecodeError:
            self._bad(frame, scan.E_SYNTAX, "not JSON")
            return
        kind = ev.get("type") if isinstance(ev, dict) else None
        if kind == "heartbeat":
            self.counters.heartbeats += 1
            b = self.index.get(ev.get("product_id"))
            if b is not None:
                self.last_tsc[b] = self._tsc
        elif kind == "error":
            self.counters.errors += 1
            self.log.error("coinbase error: %s %s", ev.get("message"), ev.get("reason", ""))
        else:
            self.counters.ignored += 1      # subscriptions, ticker, ...

    def on_frame(self, frame: bytes, recv_tsc: int) -> None:
        self.counters.frames += 1
        self._tsc = recv_tsc
        buf = np.frombuffer(frame, np.uint8)
        rc = parse_frame(buf, len(buf), self.syms, self.sym_lens, self.grids, self.rows, self.info)
        info = self.info
        kind = int(info[I_KIND])
        b = int(info[I_INST])
        if rc != scan.OK:
            self._bad(frame, rc)
            if b >= 0 and (b"l2update" in frame or b"snapshot" in frame):
                self._resync(b, records.BR_BAD_FRAME, recv_tsc)
            return
        if kind == FR_EVENT:
            self._on_event(frame)
        elif kind == FR_SNAPSHOT:
            self.counters.snapshots += 1
            self.last_tsc[b] = recv_tsc
            self._reset_book(b)
            self._apply(int(info[I_NROWS]), recv_tsc, records.F_SNAPSHOT)
            if not self.res[1] & common.A_FAILED:
                self._validate(b, recv_tsc)
        elif kind == FR_UPDATE:
            self.last_tsc[b] = recv_tsc
            if not self.valid[b]:
                self.counters.dropped += 1
                return
            self._apply(int(info[I_NROWS]), recv_tsc)
        elif kind == FR_TRADE:
            self.counters.trades += 1
            self._apply(1, recv_tsc)
        else:
            self.counters.ignored += 1
