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

Liveness: heartbeats come once a second per connection (not per product), so a quiet product
is not stale; a connection with no frame at all for ``stale_after_ms`` is dead (the gateway's
timer).
"""
from __future__ import annotations

import re
from urllib.parse import urlsplit

import orjson
from numba import njit

from appliance import jit
from appliance.transport import records
from appliance.venues import coinbase, common, scan
from appliance.venues.common import (K_L2, K_TRADE, N_HEARTBEATS, N_IGNORED, N_TRADES, R_AUX1,
                                     R_AUX2, R_INST, R_KIND, R_PRICE, R_QTY, R_SEQ, R_SIDE,
                                     Instrument)

NAME = "coinbase_advanced"
VENUE_ID = records.VENUE_COINBASE_ADVANCED
# REST paths of the instrument metadata (the ``X.0`` files of the recordings hold these responses)
METADATA_PATHS = ("/api/v3/brokerage/market/products",)

# ids the venue simulator shifts per loop of a recording: none (sequence_num starts afresh on
# every connection)
SIM_SHIFT_KEYS = ()
# the frame kind of a book delta (what the benchmarks time) and the recording that has most
BENCH_HOT = "FR_UPDATE"
BENCH_RECORDING = "COINBASE_ADVANCED.jsonl.zst"

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


@njit(**jit.HELPER)
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


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
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
            info[I_KIND] = kind          # set first: a bad update still names its book
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


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def handle_frame(b, end, tsc, st, hdr, data):
    """One frame -> records (parse, connection sequence check, book, publish). Returns ACT_*."""
    common.count_frame(st)
    rc = parse_frame(b, end, st.syms, st.lens, st.grids, st.rows, st.info)
    info = st.info
    seq = info[I_SEQ]
    act = common.check_conn_seq(st, seq, tsc, VENUE_ID, hdr, data)
    kind = info[I_KIND]
    bi = info[I_INST]
    if rc != scan.OK:
        return act | common.bad_frame_resync(st, rc, bi if kind == FR_UPDATE or kind == FR_SNAPSHOT
                                             else -1, tsc, VENUE_ID, common.RESYNC_RESUBSCRIBE,
                                             hdr, data)
    if kind == FR_SNAPSHOT:
        return act | common.snapshot_rebuild(st, bi, info[I_NROWS], tsc, seq, VENUE_ID,
                                             common.RESYNC_RESUBSCRIBE, hdr, data)
    if kind == FR_UPDATE:
        return act | common.apply_live(st, bi, info[I_NROWS], tsc, VENUE_ID,
                                       common.RESYNC_RESUBSCRIBE, hdr, data)
    if kind == FR_TRADES:
        n = info[I_NROWS]
        st.cnt[N_TRADES] += n
        if n > 0:
            act |= common.apply(st, st.rows, n, tsc, 0, VENUE_ID, common.RESYNC_RESUBSCRIBE,
                                hdr, data)
        return act
    if kind == FR_HEARTBEAT:
        st.cnt[N_HEARTBEATS] += 1
        return act
    st.cnt[N_IGNORED] += 1
    return act


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def pump(fd, rx, ws, st, hdr, data, max_iters, lat, cal):
    """Up to ``max_iters`` frames from the socket through handle_frame (common.pump_frames)."""
    return common.pump_frames(handle_frame, fd, rx, ws, st, hdr, data, max_iters, lat, cal)


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


# Advanced Trade REST product book, public and authenticated, on any host:
# /api/v3/brokerage/market/product_book?product_id=X and /api/v3/brokerage/product_book?product_id=X
_SNAPSHOT_PATH = re.compile(r"^(?:/[^/]+)*?/api/v3/brokerage/(?:market/)?product_book/?$")


def snapshot_symbol(url: str) -> str | None:
    """The product of a REST product_book URL, else None. The feed syncs from the WebSocket
    l2_data snapshot; REST snapshots are recognised, never applied."""
    from urllib.parse import parse_qs
    u = urlsplit(url)
    if not _SNAPSHOT_PATH.match(u.path):
        return None
    q = parse_qs(u.query)
    return q["product_id"][0].upper() if q.get("product_id") else None


# the venue simulator: subscribe messages and frames name products as the Exchange API's do
sim_subscribed = coinbase.sim_subscribed
sim_frame_symbol = coinbase.sim_frame_symbol


WARM_FRAMES = (
    b'{"channel":"subscriptions","client_id":"","timestamp":"x","sequence_num":0,"events":[]}',
    b'{"channel":"l2_data","client_id":"","timestamp":"x","sequence_num":1,"events":[{"type":'
    b'"snapshot","product_id":"ABC-USD","updates":[{"side":"bid","event_time":"x","price_level":'
    b'"1.00","new_quantity":"2.0"},{"side":"offer","event_time":"x","price_level":"1.10",'
    b'"new_quantity":"0.5"}]}]}',
    b'{"channel":"l2_data","client_id":"","timestamp":"x","sequence_num":2,"events":[{"type":'
    b'"update","product_id":"ABC-USD","updates":[{"side":"bid","event_time":"x","price_level":'
    b'"1.01","new_quantity":"1.0"}]}]}',
    b'{"channel":"market_trades","client_id":"","timestamp":"x","sequence_num":3,"events":[{"type":'
    b'"update","trades":[{"trade_id":"7","product_id":"ABC-USD","price":"1.05","size":"1.0",'
    b'"side":"BUY","time":"x"}]}]}',
    b'{"channel":"heartbeats","client_id":"","timestamp":"x","sequence_num":5,"events":[]}',
    b'{"channel":"l2_data","client_id":"","timestamp":"x","sequence_num":6,"events":[{"type":',
)


class Feed(common.BaseFeed):
    NAME = NAME
    VENUE_ID = VENUE_ID
    EXTRA_COUNTERS = ("snapshots",)
    ROWS = 1 << 17            # level2 snapshots are the whole book (46,000 levels for BTC-USD)
    CAP = 1 << 15
    handle = staticmethod(handle_frame)
    pump = staticmethod(pump)
    WARM_FRAMES = WARM_FRAMES
    WARM_BOOK_CAP = 64


warm = Feed.warm
