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

Liveness: the heartbeat channel sends one frame per product per second, so a product silent
for ``stale_after_ms`` (no update, no heartbeat) is stale: BOOK_INVALID(BR_STALE) and a
resubscribe (BOOK_HEARTBEAT).
"""
from __future__ import annotations

import re
from urllib.parse import urlsplit

import orjson
from numba import njit

from appliance.transport import records
from appliance.venues import common, scan
from appliance.venues.common import (B_LAST_TSC, K_TRADE, N_HEARTBEATS, N_IGNORED, N_TRADES, R_AUX1,
                                     R_AUX2, R_INST, R_KIND, R_PRICE, R_QTY, R_SEQ, R_SIDE,
                                     Instrument)

NAME = "coinbase"
VENUE_ID = records.VENUE_COINBASE
# REST paths of the instrument metadata (the ``X.0`` files of the recordings hold these responses)
METADATA_PATHS = ("/products",)

# ids the venue simulator shifts per loop of a recording (appliance.sim.venue)
SIM_SHIFT_KEYS = (("trade_id",), ("sequence",))
# the frame kind of a book delta (what the benchmarks time) and the recording that has most
BENCH_HOT = "FR_UPDATE"
BENCH_RECORDING = "COINBASE.ws.28.0"

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
FR_HEARTBEAT = 6
FR_QUIET = 7         # frames of no use to the books (ticker): counted, not handled

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
_L_HEARTBEAT = scan.lit("heartbeat")
_L_TICKER = scan.lit("ticker")


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
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
    hb = scan.bytes_eq(b, ts, te, _L_HEARTBEAT)
    if scan.bytes_eq(b, ts, te, _L_TICKER):
        info[I_KIND] = FR_QUIET
        return scan.OK
    if not (upd or snap or match or last or hb):
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
    if hb:
        info[I_KIND] = FR_HEARTBEAT
        return scan.OK
    dp = grids[inst, 0]
    sp = grids[inst, 1]
    dq = grids[inst, 2]
    sq = grids[inst, 3]
    if upd:
        info[I_KIND] = FR_UPDATE         # set first: a bad update still names its book
        kc = scan.find_key(b, 0, end, _K_CHANGES)
        if kc < 0:
            return scan.E_MISSING
        n, _, rc = common.parse_levels(b, kc, end, (dp, sp, dq, sq), inst, (0, 0, 1, 2), 0, rows,
                                       0)
        if rc != 0:
            return rc
        info[I_KIND] = FR_UPDATE
        info[I_NROWS] = n
        return scan.OK
    if snap:
        info[I_KIND] = FR_SNAPSHOT
        kb = scan.find_key(b, 0, end, _K_BIDS)
        ka = scan.find_key(b, 0, end, _K_ASKS)
        if kb < 0 or ka < 0:
            return scan.E_MISSING
        n, _, rc = common.parse_levels(b, kb, end, (dp, sp, dq, sq), inst,
                                       (records.SIDE_BUY, -1, 0, 1), 0, rows, 0)
        if rc != 0:
            return rc
        n, _, rc = common.parse_levels(b, ka, end, (dp, sp, dq, sq), inst,
                                       (records.SIDE_SELL, -1, 0, 1), 0, rows, n)
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


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def handle_frame(b, end, tsc, st, hdr, data):
    """One frame -> records (parse, book, publish). Returns ACT_* bits."""
    common.count_frame(st)
    rc = parse_frame(b, end, st.syms, st.lens, st.grids, st.rows, st.info)
    info = st.info
    kind = info[I_KIND]
    bi = info[I_INST]
    if rc != scan.OK:
        return common.bad_frame_resync(st, rc, bi if kind == FR_UPDATE or kind == FR_SNAPSHOT
                                       else -1, tsc, VENUE_ID, common.RESYNC_RESUBSCRIBE, hdr, data)
    if kind == FR_UPDATE:
        return common.apply_live(st, bi, info[I_NROWS], tsc, VENUE_ID, common.RESYNC_RESUBSCRIBE,
                                 hdr, data)
    if kind == FR_SNAPSHOT:
        return common.snapshot_rebuild(st, bi, info[I_NROWS], tsc, 0, VENUE_ID,
                                       common.RESYNC_RESUBSCRIBE, hdr, data)
    if kind == FR_TRADE:
        st.cnt[N_TRADES] += 1
        return common.apply(st, st.rows, 1, tsc, 0, VENUE_ID, common.RESYNC_RESUBSCRIBE, hdr, data)
    if kind == FR_HEARTBEAT:
        st.cnt[N_HEARTBEATS] += 1
        st.book[bi, B_LAST_TSC] = tsc
        return 0
    if kind == FR_EVENT:
        return common.ACT_EVENT
    st.cnt[N_IGNORED] += 1
    return 0


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def pump(fd, rx, ws, st, hdr, data, max_iters, lat, cal):
    """Up to ``max_iters`` frames from the socket through handle_frame (common.pump_frames)."""
    return common.pump_frames(handle_frame, fd, rx, ws, st, hdr, data, max_iters, lat, cal)


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


# REST order book endpoint of the Exchange API on any host (api.exchange.coinbase.com, the older
# api.pro.coinbase.com and api.gdax.com): /products/{id}/book?level=1|2|3
_SNAPSHOT_PATH = re.compile(r"^(?:/[^/]+)*?/products/([A-Za-z0-9]+-[A-Za-z0-9]+)/book/?$")


def snapshot_symbol(url: str) -> str | None:
    """The product of a REST book URL, else None. The feed syncs from the WebSocket level2
    snapshot; REST snapshots are recognised, never applied."""
    m = _SNAPSHOT_PATH.match(urlsplit(url).path)
    return m.group(1).upper() if m else None


def sim_subscribed(msg: dict) -> set[str]:
    """The products a client's subscribe message asks for (``product_ids``, also per channel)."""
    out = common.strings_at(msg, "product_ids")
    for ch in msg.get("channels", []) if isinstance(msg.get("channels"), list) else []:
        if isinstance(ch, dict):
            out |= common.strings_at(ch, "product_ids")
    return out


def sim_frame_symbol(frame: bytes) -> str | None:
    """The product a frame is about (its ``product_id``), else None."""
    return common.string_after(frame, b'"product_id":"')


WARM_FRAMES = (
    b'{"type":"subscriptions","channels":[{"name":"level2","product_ids":["ABC-USD"]}]}',
    b'{"type":"snapshot","product_id":"ABC-USD","asks":[["1.10","0.5"]],"bids":[["1.00","2.0"]]}',
    b'{"type":"l2update","product_id":"ABC-USD","changes":[["buy","1.01","1.0"]],"time":"x"}',
    b'{"type":"match","trade_id":7,"maker_order_id":"a","taker_order_id":"b","side":"sell",'
    b'"size":"1.0","price":"1.05","product_id":"ABC-USD","sequence":9,"time":"x"}',
    b'{"type":"heartbeat","last_trade_id":7,"product_id":"ABC-USD","sequence":9,"time":"x"}',
    b'{"type":"ticker","product_id":"ABC-USD","price":"1.05"}',
    b'{"type":"l2update","product_id":"ABC-USD","changes":[["buy"',
)


class Feed(common.BaseFeed):
    NAME = NAME
    VENUE_ID = VENUE_ID
    EXTRA_COUNTERS = ("snapshots",)
    BOOK_HEARTBEAT = True
    ROWS = 1 << 17            # level2 snapshots are the whole book (46,000 levels for BTC-USD)
    CAP = 1 << 15
    handle = staticmethod(handle_frame)
    pump = staticmethod(pump)
    WARM_FRAMES = WARM_FRAMES
    WARM_BOOK_CAP = 64

    def on_event(self, ev: dict, tsc: int) -> None:
        kind = ev.get("type")
        if kind == "error":
            self.counters.errors += 1
            self.log.error("coinbase error: %s %s", ev.get("message"), ev.get("reason", ""))
        else:
            self.counters.ignored += 1      # subscriptions, status, ...


warm = Feed.warm
