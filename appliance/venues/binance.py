"""Binance spot: combined streams (depth diff + REST snapshot sync, aggTrade/trade, bookTicker).

Subscription is in the URL: ``/stream?streams=<sym>@depth@100ms/<sym>@bookTicker/<sym>@aggTrade``.
Frames are ``{"stream": ..., "data": {...}}``. Ping/pong is at the WebSocket protocol level
(the client library answers pings); no application ping.

Book sync (Binance's documented rule, :mod:`snapshot_sync` CHAIN): depth updates are buffered
until the REST snapshot ``/api/v3/depth?symbol=X&limit=1000`` arrives; updates with
``u <= lastUpdateId`` are dropped; the first applied update must have
``U <= lastUpdateId + 1 <= u``; after that every update's ``U`` must be the previous ``u + 1``.
Anything else is a gap: the book goes BOOK_INVALID(BR_GAP) and a new snapshot is requested.

Liveness: a diff-depth stream sends nothing for a symbol whose book did not change, so a quiet
book is not stale; the server pings every 20 s (WebSocket ping frames), so a connection with no
frame at all for ``stale_after_ms`` is dead (the gateway's timer).
"""
from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import orjson
from numba import njit

from appliance import jit
from appliance.transport import records
from appliance.venues import common, scan, snapshot_sync
from appliance.venues.common import (K_BBO, K_TRADE, N_BBO, N_IGNORED, N_TRADES, R_AUX1, R_AUX2,
                                     R_INST, R_KIND, R_PRICE, R_QTY, R_SEQ, R_SIDE, Instrument)

NAME = "binance"
VENUE_ID = records.VENUE_BINANCE
# how the stream's updates follow the REST snapshot (snapshot_sync.on_delta):
# each depth update starts where the last ended
SYNC_RULE = (snapshot_sync.CHAIN, snapshot_sync.MAX_BUFFERED, VENUE_ID)
# REST paths of the instrument metadata (the ``X.0`` files of the recordings hold these responses)
METADATA_PATHS = ("/api/v3/exchangeInfo",)

# ids and times the venue simulator shifts per loop of a recording (appliance.sim.venue), in
# groups that share one span: update ids (stream and snapshot), event times, trade ids
SIM_SHIFT_KEYS = (("U", "u", "lastUpdateId"), ("E", "T"), ("a", "t", "f", "l"))
# the frame kind of a book delta (what the benchmarks time) and the recording that has most
BENCH_HOT = "FR_DEPTH"
BENCH_RECORDING = "BINANCE.ws.1.0"
SNAPSHOT_LIMIT = 1000

# info words written by parse_frame
I_KIND = 0
I_INST = 1
I_FIRST = 2      # U
I_LAST = 3       # u
I_NROWS = 4
FR_OTHER = 0
FR_DEPTH = 1
FR_TRADE = 2
FR_BBO = 3
FR_SNAPSHOT = 4

_K_DATA = scan.key("data")
_K_E = scan.key("e")
_K_S = scan.key("s")
_K_UU = scan.key("U")
_K_U = scan.key("u")
_K_B = scan.key("b")
_K_A = scan.key("a")
_K_BQ = scan.key("B")
_K_AQ = scan.key("A")
_K_P = scan.key("p")
_K_Q = scan.key("q")
_K_T = scan.key("t")
_K_M = scan.key("m")
_K_LAST_ID = scan.key("lastUpdateId")
_K_BIDS = scan.key("bids")
_K_ASKS = scan.key("asks")
_L_DEPTH = scan.lit("depthUpdate")
_L_AGG = scan.lit("aggTrade")
_L_TRADE = scan.lit("trade")


# The depthUpdate frame as Binance writes it, byte for byte (keys in this order, no blanks):
#   {"stream":"<name>","data":{"e":"depthUpdate","E":<ms>,"s":"<SYM>","U":<id>,"u":<id>,"b":[..],"a":[..]}}
# _depth_fast reads exactly that in one pass; any other layout goes to the general scan.
_F_HEAD = scan.lit('{"stream":"')
_F_DEPTH = scan.lit('","data":{"e":"depthUpdate","E":')
_F_S = scan.lit(',"s":"')
_F_UU = scan.lit('","U":')
_F_U = scan.lit(',"u":')
_F_B = scan.lit(',"b":')
_F_A = scan.lit(',"a":')
_F_END = scan.lit('}}')
NOT_FAST = -1


@njit(**jit.HELPER)
def _depth_fast(b, end, syms, lens, grids, rows, info):
    """parse_frame of a depthUpdate in Binance's own layout: a scan.* code, or NOT_FAST when the
    frame is laid out differently (the general scan then parses it)."""
    if not scan.at(b, 0, end, _F_HEAD):
        return NOT_FAST
    i = _F_HEAD.shape[0]
    while i < end and b[i] != 34 and b[i] != 92:
        i += 1
    if not scan.at(b, i, end, _F_DEPTH):
        return NOT_FAST
    i += _F_DEPTH.shape[0]
    while i < end and 48 <= b[i] <= 57:
        i += 1
    if not scan.at(b, i, end, _F_S):
        return NOT_FAST
    i += _F_S.shape[0]
    ss = i
    while i < end and b[i] != 34 and b[i] != 92:
        i += 1
    inst = scan.match_symbol(b, ss, i, syms, lens)
    if inst < 0 or not scan.at(b, i, end, _F_UU):
        return NOT_FAST
    U, i, rc = scan.parse_int(b, i + _F_UU.shape[0], end)
    if rc != 0 or not scan.at(b, i, end, _F_U):
        return NOT_FAST
    u, i, rc = scan.parse_int(b, i + _F_U.shape[0], end)
    if rc != 0 or not scan.at(b, i, end, _F_B):
        return NOT_FAST
    info[I_KIND] = FR_DEPTH
    info[I_INST] = inst
    info[I_FIRST] = 0
    info[I_LAST] = 0
    info[I_NROWS] = 0
    dp = grids[inst, 0]
    sp = grids[inst, 1]
    dq = grids[inst, 2]
    sq = grids[inst, 3]
    n, i, rc = common.parse_levels(b, i + _F_B.shape[0], end, (dp, sp, dq, sq), inst,
                                   (records.SIDE_BUY, -1, 0, 1), u, rows, 0)
    if rc != 0:
        return rc
    if not scan.at(b, i, end, _F_A):
        return NOT_FAST
    n, i, rc = common.parse_levels(b, i + _F_A.shape[0], end, (dp, sp, dq, sq), inst,
                                   (records.SIDE_SELL, -1, 0, 1), u, rows, n)
    if rc != 0:
        return rc
    if not scan.at(b, i, end, _F_END):
        return NOT_FAST
    info[I_FIRST] = U
    info[I_LAST] = u
    info[I_NROWS] = n
    return scan.OK


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def parse_frame(b, end, syms, lens, grids, rows, info):
    """Parse one combined-stream frame into rows; info[I_*] says what it was. Returns rc."""
    rc = _depth_fast(b, end, syms, lens, grids, rows, info)
    if rc != NOT_FAST:
        return rc
    info[I_KIND] = FR_OTHER
    info[I_INST] = -1
    info[I_FIRST] = 0
    info[I_LAST] = 0
    info[I_NROWS] = 0
    d = scan.find_key(b, 0, end, _K_DATA)
    if d < 0:
        d = 0
    e = scan.find_key(b, d, end, _K_E)
    ks = scan.find_key_near(b, e, d, end, _K_S)
    if ks < 0:
        return scan.E_MISSING
    ss, se, _ = scan.string_span(b, ks, end)
    if ss < 0:
        return scan.E_SYNTAX
    inst = scan.match_symbol(b, ss, se, syms, lens)
    if inst < 0:
        return scan.E_SYMBOL
    info[I_INST] = inst
    dp = grids[inst, 0]
    sp = grids[inst, 1]
    dq = grids[inst, 2]
    sq = grids[inst, 3]
    if e < 0:
        # bookTicker: {"u":..,"s":..,"b":..,"B":..,"a":..,"A":..}
        ku = scan.find_key(b, d, end, _K_U)
        kb = scan.find_key(b, d, end, _K_B)
        kbq = scan.find_key(b, d, end, _K_BQ)
        ka = scan.find_key(b, d, end, _K_A)
        kaq = scan.find_key(b, d, end, _K_AQ)
        if ku < 0 or kb < 0 or kbq < 0 or ka < 0 or kaq < 0:
            return scan.E_MISSING
        u, _, rc = scan.parse_int(b, ku, end)
        if rc != 0:
            return rc
        bp, _, rc = scan.parse_grid(b, kb, end, dp, sp)
        if rc != 0:
            return rc
        bq, _, rc = scan.parse_grid(b, kbq, end, dq, sq)
        if rc != 0:
            return rc
        ap, _, rc = scan.parse_grid(b, ka, end, dp, sp)
        if rc != 0:
            return rc
        aq, _, rc = scan.parse_grid(b, kaq, end, dq, sq)
        if rc != 0:
            return rc
        rows[0, R_KIND] = K_BBO
        rows[0, R_INST] = inst
        rows[0, R_SIDE] = 0
        rows[0, R_PRICE] = bp
        rows[0, R_QTY] = bq
        rows[0, R_SEQ] = u
        rows[0, R_AUX1] = ap
        rows[0, R_AUX2] = aq
        info[I_KIND] = FR_BBO
        info[I_LAST] = u
        info[I_NROWS] = 1
        return scan.OK
    es, ee, _ = scan.string_span(b, e, end)
    if es < 0:
        return scan.E_SYNTAX
    if scan.bytes_eq(b, es, ee, _L_DEPTH):
        info[I_KIND] = FR_DEPTH          # set first: a bad depth frame still names its book
        # keys in Binance's order (e, E, s, U, u, b, a): one pass; any order still works
        kU = scan.find_key_near(b, ks, d, end, _K_UU)
        ku = scan.find_key_near(b, kU, d, end, _K_U)
        kb = scan.find_key_near(b, ku, d, end, _K_B)
        if kU < 0 or ku < 0 or kb < 0:
            return scan.E_MISSING
        U, _, rc = scan.parse_int(b, kU, end)
        if rc != 0:
            return rc
        u, _, rc = scan.parse_int(b, ku, end)
        if rc != 0:
            return rc
        n, nxt, rc = common.parse_levels(b, kb, end, (dp, sp, dq, sq), inst,
                                         (records.SIDE_BUY, -1, 0, 1), u, rows, 0)
        if rc != 0:
            return rc
        ka = scan.find_key_near(b, nxt, d, end, _K_A)
        if ka < 0:
            return scan.E_MISSING
        n, _, rc = common.parse_levels(b, ka, end, (dp, sp, dq, sq), inst,
                                       (records.SIDE_SELL, -1, 0, 1), u, rows, n)
        if rc != 0:
            return rc
        info[I_FIRST] = U
        info[I_LAST] = u
        info[I_NROWS] = n
        return scan.OK
    agg = scan.bytes_eq(b, es, ee, _L_AGG)
    if agg or scan.bytes_eq(b, es, ee, _L_TRADE):
        kid = scan.find_key(b, d, end, _K_A if agg else _K_T)
        kp = scan.find_key(b, d, end, _K_P)
        kq = scan.find_key(b, d, end, _K_Q)
        km = scan.find_key(b, d, end, _K_M)
        if kid < 0 or kp < 0 or kq < 0 or km < 0:
            return scan.E_MISSING
        tid, _, rc = scan.parse_int(b, kid, end)
        if rc != 0:
            return rc
        p, _, rc = scan.parse_grid(b, kp, end, dp, sp)
        if rc != 0:
            return rc
        q, _, rc = scan.parse_grid(b, kq, end, dq, sq)
        if rc != 0:
            return rc
        # m = buyer is the maker -> the seller was the aggressor
        if b[km] == 116:
            side = records.SIDE_SELL
        elif b[km] == 102:
            side = records.SIDE_BUY
        else:
            return scan.E_SYNTAX
        rows[0, R_KIND] = K_TRADE
        rows[0, R_INST] = inst
        rows[0, R_SIDE] = side
        rows[0, R_PRICE] = p
        rows[0, R_QTY] = q
        rows[0, R_SEQ] = tid
        rows[0, R_AUX1] = 0
        rows[0, R_AUX2] = 0
        info[I_KIND] = FR_TRADE
        info[I_LAST] = tid
        info[I_NROWS] = 1
        return scan.OK
    return scan.OK     # kline and other streams: nothing for the book


@njit(cache=True, nogil=True, _nrt=False)
def parse_snapshot(b, end, inst, grids, rows, info):
    """REST depth body -> K_L2 rows (seq = lastUpdateId); info[I_SNAP_ID] = lastUpdateId,
    info[I_SNAP_ROWS] = rows. Returns rc."""
    info[snapshot_sync.I_SNAP_ROWS] = 0
    k = scan.find_key(b, 0, end, _K_LAST_ID)
    kb = scan.find_key(b, 0, end, _K_BIDS)
    ka = scan.find_key(b, 0, end, _K_ASKS)
    if k < 0 or kb < 0 or ka < 0:
        return scan.E_MISSING
    last, _, rc = scan.parse_int(b, k, end)
    if rc != 0:
        return rc
    dp = grids[inst, 0]
    sp = grids[inst, 1]
    dq = grids[inst, 2]
    sq = grids[inst, 3]
    n, _, rc = common.parse_levels(b, kb, end, (dp, sp, dq, sq), inst,
                                   (records.SIDE_BUY, -1, 0, 1), last, rows, 0)
    if rc != 0:
        return rc
    n, _, rc = common.parse_levels(b, ka, end, (dp, sp, dq, sq), inst,
                                   (records.SIDE_SELL, -1, 0, 1), last, rows, n)
    if rc != 0:
        return rc
    info[snapshot_sync.I_SNAP_ID] = last
    info[snapshot_sync.I_SNAP_ROWS] = n
    return scan.OK


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def handle_frame(b, end, tsc, st, hdr, data):
    """One frame -> records (parse, CHAIN sync, book, publish). Returns ACT_* bits."""
    common.count_frame(st)
    rc = parse_frame(b, end, st.syms, st.lens, st.grids, st.rows, st.info)
    info = st.info
    kind = info[I_KIND]
    if rc != scan.OK:                         # an update of a book lost: that book resyncs
        return common.bad_frame_resync(st, rc, info[I_INST] if kind == FR_DEPTH else -1, tsc,
                                       VENUE_ID, common.RESYNC_SNAPSHOT, hdr, data)
    if kind == FR_DEPTH:
        return snapshot_sync.on_delta(st, info[I_INST], info[I_FIRST], info[I_LAST],
                                      info[I_NROWS], tsc, SYNC_RULE, hdr, data)
    if kind == FR_TRADE:
        st.cnt[N_TRADES] += 1
        return common.apply(st, st.rows, 1, tsc, 0, VENUE_ID, common.RESYNC_SNAPSHOT, hdr, data)
    if kind == FR_BBO:
        st.cnt[N_BBO] += 1
        return common.apply(st, st.rows, 1, tsc, 0, VENUE_ID, common.RESYNC_SNAPSHOT, hdr, data)
    st.cnt[N_IGNORED] += 1
    return 0


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def pump(fd, rx, ws, st, hdr, data, max_iters, lat, cal):
    """Up to ``max_iters`` frames from the socket through handle_frame (common.pump_frames)."""
    return common.pump_frames(handle_frame, fd, rx, ws, st, hdr, data, max_iters, lat, cal)


def load_instruments(meta: bytes, symbols: list[str] | None = None) -> list[Instrument]:
    """Instruments from exchangeInfo: md grid from quotePrecision/baseAssetPrecision, trading
    grid (PRICE_FILTER.tickSize, LOT_SIZE.stepSize) in ``extra``."""
    body = common.metadata_body(meta, "exchangeInfo")
    try:
        info = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise common.InstrumentError(f"binance exchangeInfo is not JSON: {e}") from None
    out = []
    for s in info.get("symbols", []):
        filt = {f.get("filterType"): f for f in s.get("filters", [])}
        if "PRICE_FILTER" not in filt or "LOT_SIZE" not in filt:
            continue
        # The md grid is the precision Binance prints prices/quantities with (quotePrecision /
        # baseAssetPrecision decimals): real books hold levels placed before a tickSize/stepSize
        # change that are off the trading grid (NKNUSDT has bids at 0.25974 with tick 0.0001),
        # and a book must hold them exactly. The trading grid goes to extra for order entry.
        tick = "0." + "0" * (int(s.get("quotePrecision", 8)) - 1) + "1"
        lot = "0." + "0" * (int(s.get("baseAssetPrecision", 8)) - 1) + "1"
        try:
            out.append(Instrument.make(s["symbol"], f"{s['baseAsset']}-{s['quoteAsset']}", tick, lot,
                                       order_tick=filt["PRICE_FILTER"].get("tickSize", "0"),
                                       order_lot=filt["LOT_SIZE"].get("stepSize", "0")))
        except (common.InstrumentError, KeyError):
            continue
    return common.select(out, symbols, common.configured_l2(meta))


def stream_path(instruments: list[Instrument]) -> str:
    streams = []
    for ins in instruments:
        s = ins.symbol.lower()
        streams += [f"{s}@depth@100ms", f"{s}@bookTicker", f"{s}@aggTrade"]
    return "/stream?streams=" + "/".join(streams)


def subscribe_messages(instruments: list[Instrument]) -> list[str]:
    return []      # the combined-stream URL carries the subscription


# Order book snapshot endpoints, every documented host and version: spot api/v1 and api/v3
# (api.binance.com, api1-4, api-gcp, data-api.binance.vision, testnet.binance.vision,
# api.binance.us), USD-M futures fapi/v1, COIN-M futures dapi/v1, options eapi/v1, and the
# European options vapi/v1.
_SNAPSHOT_PATH = re.compile(r"^(?:/[^/]+)*?/(?:api/v[13]|fapi/v1|dapi/v1|eapi/v1|vapi/v1)/depth/?$")


def snapshot_symbol(url: str) -> str | None:
    """The symbol of a REST depth-snapshot URL in any documented form, else None."""
    u = urlsplit(url)
    if not _SNAPSHOT_PATH.match(u.path):
        return None
    q = {k.lower(): v for k, v in parse_qs(u.query).items()}
    sym = q.get("symbol")
    return sym[0].upper() if sym else None


def sim_subscribed(msg: dict) -> set[str]:
    """The symbols a client's subscribe message asks for: none in the message (the
    combined-stream URL carries them), the venue simulator
    filters by stream."""
    return set()


def sim_frame_symbol(frame: bytes) -> str | None:
    """The symbol a frame is about, for the venue simulator: None (not filtered)."""
    return None


WARM_FRAMES = (
    b'{"stream":"abcusdt@depth@100ms","data":{"e":"depthUpdate","E":1,"s":"ABCUSDT","U":1,'
    b'"u":2,"b":[["1.00","2.0"]],"a":[["1.10","0.5"]]}}',
    b'{"stream":"abcusdt@bookTicker","data":{"u":3,"s":"ABCUSDT","b":"1.00","B":"2.0",'
    b'"a":"1.10","A":"0.5"}}',
    b'{"stream":"abcusdt@aggTrade","data":{"e":"aggTrade","E":1,"s":"ABCUSDT","a":7,"p":"1.05",'
    b'"q":"1.0","f":1,"l":1,"T":1,"m":true,"M":true}}',
    b'{"stream":"abcusdt@depth@100ms","data":{"e":"depthUpdate","E":1,"s":"ABCUSDT","U":1,"u":2,"b":[[',
)
WARM_SNAPSHOT = b'{"lastUpdateId":1,"bids":[["1.00","2.0"]],"asks":[["1.10","0.5"]]}'


class Feed(snapshot_sync.SnapshotSyncFeed):
    NAME = NAME
    VENUE_ID = VENUE_ID
    EXTRA_COUNTERS = ("buffered", "snapshots", "bbo")
    handle = staticmethod(handle_frame)
    pump = staticmethod(pump)
    parse_snapshot = staticmethod(parse_snapshot)
    WARM_INSTRUMENT = ("ABCUSDT", "ABC-USDT", "0.01", "0.1")
    WARM_FRAMES = WARM_FRAMES
    WARM_SNAPSHOT = WARM_SNAPSHOT

    def snapshot_path(self, ins: Instrument) -> str:
        return f"/api/v3/depth?symbol={ins.symbol}&limit={SNAPSHOT_LIMIT}"


warm = Feed.warm
