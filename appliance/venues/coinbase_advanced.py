"""Coinbase Advanced Trade WebSocket: l2_data (snapshot/update) with sequence_num,
market_trades, heartbeats.

Subscription: one ``{"type":"subscribe","product_ids":[...],"channel":C}`` per channel C in
level2, market_trades, heartbeats (the heartbeats channel keeps a quiet connection alive and
its frames advance the sequence). Every frame is ``{"channel":..,"timestamp":..,
"sequence_num":N,"events":[...]}``; ``sequence_num`` counts up by one per frame on a
connection, across channels. The hot frames (l2_data, market_trades) are parsed by compiled
code; subscriptions, ticker, candles and heartbeats are counted (heartbeats without a JSON
library: only their sequence number matters).

l2_data events are ``{"type":"snapshot"|"update","product_id":..,"updates":[{"side":"bid"|
"offer","price_level":..,"new_quantity":..}, ...]}`` (new_quantity 0 deletes). A snapshot
rebuilds the product's book (BOOK_VALID). A sequence gap means lost frames: every book goes
BOOK_INVALID(BR_GAP) and the feed asks for a resubscribe (which brings fresh snapshots).
market_trades ``update`` events are published as trades (``side`` is the taker's side);
``snapshot`` events are history and are not published.
"""
from __future__ import annotations

import numpy as np
import orjson
from numba import njit

from appliance.transport import records
from appliance.venues import common, scan
from appliance.venues.common import K_L2, K_TRADE, R_AUX1, R_AUX2, R_INST, R_KIND, R_PRICE, R_QTY, R_SEQ, R_SIDE, Instrument

NAME = "coinbase_advanced"
VENUE_ID = records.VENUE_COINBASE_ADVANCED
# REST paths of the instrument metadata (the ``X.0`` files of the recordings hold these responses)
METADATA_PATHS = ("/api/v3/brokerage/market/products",)

I_KIND = 0
I_INST = 1
I_NROWS = 2
I_SEQ = 3
I_POS = 8            # info[8:12] scratch: value positions found by _fields
FR_OTHER = 0
FR_SNAPSHOT = 2
FR_UPDATE = 3
FR_TRADES = 4
FR_HEARTBEAT = 5
FR_TRADE_HISTORY = 6
FR_EVENT = 7

_K_CHANNEL = scan.key("channel")
_K_SEQ = scan.key("sequence_num")
_K_EVENTS = scan.key("events")
_L_L2 = scan.lit("l2_data")
_L_TRADES = scan.lit("market_trades")
_L_HB = scan.lit("heartbeats")
_L_TYPE = scan.lit("type")
_L_PRODUCT = scan.lit("product_id")
_L_UPDATES = scan.lit("updates")
_L_TRADES_KEY = scan.lit("trades")
_L_SIDE = scan.lit("side")
_L_PRICE_LEVEL = scan.lit("price_level")
_L_NEW_QTY = scan.lit("new_quantity")
_L_PRICE = scan.lit("price")
_L_SIZE = scan.lit("size")
_L_TRADE_ID = scan.lit("trade_id")
_L_SNAPSHOT = scan.lit("snapshot")


@njit(cache=True, nogil=True, _nrt=False)
def _fields(b, i, end, k0, k1, k2, k3, pos):
    """Walk the object at b[i]; pos[j] = value index of key kj (-1 if absent). Returns the
    index after the object, or -1 if malformed."""
    for j in range(4):
        pos[I_POS + j] = -1
    i = scan.skip_ws(b, i, end)
    if i >= end or b[i] != 123:
        return -1
    i = scan.skip_ws(b, i + 1, end)
    while i < end and b[i] != 125:
        ks, ke, i = scan.string_span(b, i, end)
        if ks < 0:
            return -1
        i = scan.skip_ws(b, i, end)
        if i >= end or b[i] != 58:
            return -1
        i = scan.skip_ws(b, i + 1, end)
        if scan.bytes_eq(b, ks, ke, k0):
            pos[I_POS] = i
        elif scan.bytes_eq(b, ks, ke, k1):
            pos[I_POS + 1] = i
        elif scan.bytes_eq(b, ks, ke, k2):
            pos[I_POS + 2] = i
        elif scan.bytes_eq(b, ks, ke, k3):
            pos[I_POS + 3] = i
        i = scan.skip_value(b, i, end)
        if i < 0:
            return -1
        i = scan.skip_ws(b, i, end)
        if i < end and b[i] == 44:
            i = scan.skip_ws(b, i + 1, end)
    if i >= end:
        return -1
    return i + 1


@njit(cache=True, nogil=True, _nrt=False)
def parse_frame(b, end, syms, lens, grids, rows, info):
    """Parse one Advanced Trade frame; info[I_*] says what it was. Returns rc."""
    info[I_KIND] = FR_OTHER
    info[I_INST] = -1
    info[I_NROWS] = 0
    info[I_SEQ] = -1
    kc = scan.find_key(b, 0, end, _K_CHANNEL)
    if kc < 0:
        return scan.E_MISSING
    cs, ce, _ = scan.string_span(b, kc, end)
    if cs < 0:
        return scan.E_SYNTAX
    ks = scan.find_key(b, 0, end, _K_SEQ)
    if ks >= 0:
        seq, _, rc = scan.parse_int(b, ks, end)
        if rc != 0:
            return rc
        info[I_SEQ] = seq
    is_l2 = scan.bytes_eq(b, cs, ce, _L_L2)
    is_tr = scan.bytes_eq(b, cs, ce, _L_TRADES)
    if not (is_l2 or is_tr):
        info[I_KIND] = FR_HEARTBEAT if scan.bytes_eq(b, cs, ce, _L_HB) else FR_EVENT
        return scan.OK
    ke = scan.find_key(b, 0, end, _K_EVENTS)
    if ke < 0 or b[ke] != 91:
        return scan.E_MISSING
    i = scan.skip_ws(b, ke + 1, end)
    n = 0
    kind = FR_OTHER
    inst = -1
    while i < end and b[i] != 93:
        ev = i
        if is_l2:
            nxt = _fields(b, ev, end, _L_TYPE, _L_PRODUCT, _L_UPDATES, _L_UPDATES, info)
        else:
            nxt = _fields(b, ev, end, _L_TYPE, _L_TRADES_KEY, _L_TRADES_KEY, _L_TRADES_KEY, info)
        if nxt < 0:
            return scan.E_SYNTAX
        pt = info[I_POS]
        if pt < 0:
            return scan.E_MISSING
        ts, te, _ = scan.string_span(b, pt, end)
        if ts < 0:
            return scan.E_SYNTAX
        snap = scan.bytes_eq(b, ts, te, _L_SNAPSHOT)
        if is_l2:
            pp = info[I_POS + 1]
            pu = info[I_POS + 2]
            if pp < 0 or pu < 0:
                return scan.E_MISSING
            ps, pe, _ = scan.string_span(b, pp, end)
            if ps < 0:
                return scan.E_SYNTAX
            ei = scan.match_symbol(b, ps, pe, syms, lens)
            if ei < 0:
                return scan.E_SYMBOL
            ek = FR_SNAPSHOT if snap else FR_UPDATE
            if inst >= 0 and (ei != inst or ek != kind):
                return scan.E_SYNTAX        # one product and one kind per frame
            inst = ei
            kind = ek
            info[I_INST] = inst
            j = scan.skip_ws(b, pu, end)
            if j >= end or b[j] != 91:
                return scan.E_SYNTAX
            j = scan.skip_ws(b, j + 1, end)
            while j < end and b[j] != 93:
                j = _fields(b, j, end, _L_SIDE, _L_PRICE_LEVEL, _L_NEW_QTY, _L_NEW_QTY, info)
                if j < 0:
                    return scan.E_SYNTAX
                if info[I_POS] < 0 or info[I_POS + 1] < 0 or info[I_POS + 2] < 0:
                    return scan.E_MISSING
                if n >= rows.shape[0]:
                    return scan.E_FULL
                ss, se, _ = scan.string_span(b, info[I_POS], end)
                if ss < 0 or se == ss:
                    return scan.E_SYNTAX
                if b[ss] == 98:
                    side = records.SIDE_BUY
                elif b[ss] == 111 or b[ss] == 97 or b[ss] == 115:
                    side = records.SIDE_SELL
                else:
                    return scan.E_SYNTAX
                p, _, rc = scan.parse_grid(b, info[I_POS + 1], end, grids[inst, 0], grids[inst, 1])
                if rc != 0:
                    return rc
                q, _, rc = scan.parse_grid(b, info[I_POS + 2], end, grids[inst, 2], grids[inst, 3])
                if rc != 0:
                    return rc
                if q < 0 or p <= 0:
                    return scan.E_SYNTAX
                rows[n, R_KIND] = K_L2
                rows[n, R_INST] = inst
                rows[n, R_SIDE] = side
                rows[n, R_PRICE] = p
                rows[n, R_QTY] = q
                rows[n, R_SEQ] = info[I_SEQ]
                rows[n, R_AUX1] = 0
                rows[n, R_AUX2] = 0
                n += 1
                j = scan.skip_ws(b, j, end)
                if j < end and b[j] == 44:
                    j = scan.skip_ws(b, j + 1, end)
        else:
            if snap:
                kind = FR_TRADE_HISTORY
            else:
                kind = FR_TRADES
                pt2 = info[I_POS + 1]
                if pt2 < 0:
                    return scan.E_MISSING
                j = scan.skip_ws(b, pt2, end)
                if j >= end or b[j] != 91:
                    return scan.E_SYNTAX
                j = scan.skip_ws(b, j + 1, end)
                while j < end and b[j] != 93:
                    tstart = j
                    j = _fields(b, j, end, _L_PRODUCT, _L_PRICE, _L_SIZE, _L_TRADE_ID, info)
                    if j < 0:
                        return scan.E_SYNTAX
                    if info[I_POS] < 0 or info[I_POS + 1] < 0 or info[I_POS + 2] < 0 or info[I_POS + 3] < 0:
                        return scan.E_MISSING
                    ps, pe, _ = scan.string_span(b, info[I_POS], end)
                    if ps < 0:
                        return scan.E_SYNTAX
                    ti = scan.match_symbol(b, ps, pe, syms, lens)
                    if ti >= 0:                # trades of other products are not ours
                        if n >= rows.shape[0]:
                            return scan.E_FULL
                        p, _, rc = scan.parse_grid(b, info[I_POS + 1], end, grids[ti, 0], grids[ti, 1])
                        if rc != 0:
                            return rc
                        q, _, rc = scan.parse_grid(b, info[I_POS + 2], end, grids[ti, 2], grids[ti, 3])
                        if rc != 0:
                            return rc
                        tid, _, rc = scan.parse_int(b, info[I_POS + 3], end)
                        if rc != 0:
                            return rc
                        rows[n, R_KIND] = K_TRADE
                        rows[n, R_INST] = ti
                        rows[n, R_SIDE] = 0
                        rows[n, R_PRICE] = p
                        rows[n, R_QTY] = q
                        rows[n, R_SEQ] = tid
                        rows[n, R_AUX1] = 0
                        rows[n, R_AUX2] = 0
                        # the taker side: a second walk of the same trade object
                        nxt2 = _fields(b, tstart, end, _L_SIDE, _L_SIDE, _L_SIDE, _L_SIDE, info)
                        if nxt2 < 0 or info[I_POS] < 0:
                            return scan.E_MISSING
                        ss, se, _ = scan.string_span(b, info[I_POS], end)
                        if ss < 0 or se == ss:
                            return scan.E_SYNTAX
                        if b[ss] == 66 or b[ss] == 98:
                            rows[n, R_SIDE] = records.SIDE_BUY
                        elif b[ss] == 83 or b[ss] == 115:
                            rows[n, R_SIDE] = records.SIDE_SELL
                        else:
                            return scan.E_SYNTAX
                        n += 1
                    j = scan.skip_ws(b, j, end)
                    if j < end and b[j] == 44:
                        j = scan.skip_ws(b, j + 1, end)
        i = scan.skip_ws(b, nxt, end)
        if i < end and b[i] == 44:
            i = scan.skip_ws(b, i + 1, end)
    info[I_KIND] = kind
    info[I_NROWS] = n
    return scan.OK


def load_instruments(meta: bytes, symbols: list[str] | None = None) -> list[Instrument]:
    """Instruments from /api/v3/brokerage/market/products (quote_increment, base_increment)."""
    body = common.metadata_body(meta, "products")
    try:
        products = orjson.loads(body)["products"]
    except (orjson.JSONDecodeError, KeyError, TypeError) as e:
        raise common.InstrumentError(f"coinbase advanced products are not usable: {e}") from None
    out = []
    for p in products:
        try:
            out.append(Instrument.make(p["product_id"], p["product_id"], p["quote_increment"],
                                       p["base_increment"]))
        except (KeyError, common.InstrumentError):
            continue
    return common.select(out, symbols, common.configured_l2(meta))


def subscribe_messages(instruments: list[Instrument]) -> list[str]:
    ids = [i.symbol for i in instruments]
    return [orjson.dumps({"type": "subscribe", "product_ids": ids, "channel": ch}).decode()
            for ch in ("level2", "market_trades", "heartbeats")]


def stream_path(instruments: list[Instrument]) -> str:
    return ""


class Feed(common.BaseFeed):
    NAME = NAME
    VENUE_ID = VENUE_ID
    EXTRA_COUNTERS = ("snapshots",)
    ROWS = 1 << 17            # level2 snapshots are the whole book (46,000 levels for BTC-USD)
    CAP = 1 << 15

    def __init__(self, instruments, writer, book_cap: int | None = None):
        super().__init__(instruments, writer, book_cap)
        self.next_seq = -1

    def on_reconnect(self) -> None:
        super().on_reconnect()
        self.next_seq = -1

    def _gap_all(self, tsc: int, seq: int) -> None:
        for b in range(len(self.instruments)):
            self._invalidate(b, records.BR_GAP, tsc, seq)
        self.counters.resyncs += 1
        self._resubscribe = True

    def on_frame(self, frame: bytes, recv_tsc: int) -> None:
        self.counters.frames += 1
        buf = np.frombuffer(frame, np.uint8)
        rc = parse_frame(buf, len(buf), self.syms, self.sym_lens, self.grids, self.rows, self.info)
        info = self.info
        seq = int(info[I_SEQ])
        if seq >= 0:
            if self.next_seq >= 0 and seq != self.next_seq:
                self.counters.gaps += 1
                self.log.warning("coinbase_advanced: sequence gap, expected %d, got %d; "
                                 "resubscribing", self.next_seq, seq)
                self._gap_all(recv_tsc, seq)
            self.next_seq = seq + 1
        kind = int(info[I_KIND])
        b = int(info[I_INST])
        if rc != scan.OK:
            self._bad(frame, rc)
            if b >= 0 and b'"l2_data"' in frame:
                self._resync(b, records.BR_BAD_FRAME, recv_tsc)
            elif b'"error"' in frame[:40]:
                self.log.error("coinbase_advanced error frame: %r", bytes(frame[:200]))
            return
        if kind == FR_SNAPSHOT:
            self.counters.snapshots += 1
            self.last_tsc[b] = recv_tsc
            self._reset_book(b)
            if not self._apply(int(info[I_NROWS]), recv_tsc, records.F_SNAPSHOT) & common.A_FAILED:
                self._validate(b, recv_tsc, seq)
        elif kind == FR_UPDATE:
            self.last_tsc[b] = recv_tsc
            if not self.valid[b]:
                self.counters.dropped += 1
                return
            self._apply(int(info[I_NROWS]), recv_tsc)
        elif kind == FR_TRADES:
            n = int(info[I_NROWS])
            self.counters.trades += n
            if n:
                self._apply(n, recv_tsc)
        elif kind == FR_HEARTBEAT:
            self.counters.heartbeats += 1
        else:
            self.counters.ignored += 1
