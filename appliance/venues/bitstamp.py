"""Bitstamp WebSocket v2: diff_order_book + REST snapshot sync by microtimestamp, live_trades.

Subscription: one ``{"event":"bts:subscribe","data":{"channel":"diff_order_book_<pair>"}}`` and
one ``live_trades_<pair>`` per pair. Frames are ``{"data":{...},"channel":...,"event":...}``;
``data`` events (book diffs) and ``trade`` events are parsed by compiled code; bts:* events
(subscription_succeeded, heartbeat, request_reconnect, error) with orjson. The client pings with
``{"event":"bts:heartbeat"}``.

Book sync (:mod:`snapshot_sync` MONOTONIC): diffs are buffered until the REST snapshot
``/api/v2/order_book/<pair>/`` arrives; diffs whose ``microtimestamp`` is not newer than the
snapshot's are dropped, later ones applied (amount 0 deletes); a diff not newer than the last
one applied is dropped and counted. Bitstamp diffs carry no sequence numbers, so a lost diff
cannot be seen directly: a crossed book or a bad frame invalidates the book and refetches the
snapshot. ``bts:request_reconnect`` asks for a resubscribe.

Liveness: diff_order_book sends only when a book changes, so a quiet pair is not stale; the
client's ``bts:heartbeat`` requests are answered, so a connection with no frame at all for
``stale_after_ms`` is dead (the gateway's timer).
"""
from __future__ import annotations

import re
from urllib.parse import urlsplit

import orjson
from numba import njit

from appliance import jit
from appliance.transport import records
from appliance.venues import common, scan, snapshot_sync
from appliance.venues.common import (K_TRADE, N_HEARTBEATS, N_IGNORED, N_TRADES, R_AUX1, R_AUX2,
                                     R_INST, R_KIND, R_PRICE, R_QTY, R_SEQ, R_SIDE, Instrument)

NAME = "bitstamp"
VENUE_ID = records.VENUE_BITSTAMP
# how the stream's updates follow the REST snapshot (snapshot_sync.on_delta):
# microtimestamps only increase
SYNC_RULE = (snapshot_sync.MONOTONIC, snapshot_sync.MAX_BUFFERED, VENUE_ID)
# REST paths of the instrument metadata (the ``X.0`` files of the recordings hold these responses)
METADATA_PATHS = ("/api/v2/trading-pairs-info/",)

# ids and times the venue simulator shifts per loop of a recording (appliance.sim.venue):
# microtimestamps (stream and snapshot alike), timestamps, trade ids
SIM_SHIFT_KEYS = (("microtimestamp",), ("timestamp",), ("id",))
# the frame kind of a book delta (what the benchmarks time) and the recording that has most
BENCH_HOT = "FR_DIFF"
BENCH_RECORDING = "BITSTAMP.ws.1.0"

I_KIND = 0
I_INST = 1
I_NROWS = 2
I_MTS = 3
FR_OTHER = 0
FR_EVENT = 1
FR_DIFF = 2
FR_TRADE = 3
FR_SNAPSHOT = 4
FR_HEARTBEAT = 5

_K_CHANNEL = scan.key("channel")
_K_DATA = scan.key("data")
_K_EVENT = scan.key("event")
_K_MTS = scan.key("microtimestamp")
_K_BIDS = scan.key("bids")
_K_ASKS = scan.key("asks")
_K_ID = scan.key("id")
_K_AMOUNT = scan.key("amount_str")
_K_PRICE = scan.key("price_str")
_K_TYPE = scan.key("type")
_L_DIFF = scan.lit("diff_order_book_")
_L_TRADES = scan.lit("live_trades_")
_L_DATA = scan.lit("data")
_L_TRADE = scan.lit("trade")
_L_HEARTBEAT = scan.lit("bts:heartbeat")


@njit(**jit.HELPER)
def _book_body(b, end, inst, grids, rows, info):
    # keys in Bitstamp's order (microtimestamp, bids, asks): one pass; any order still works
    km = scan.find_key(b, 0, end, _K_MTS)
    kb = scan.find_key_near(b, km, 0, end, _K_BIDS)
    if km < 0 or kb < 0:
        return scan.E_MISSING
    mts, _, rc = scan.parse_int(b, km, end)
    if rc != 0:
        return rc
    dp = grids[inst, 0]
    sp = grids[inst, 1]
    dq = grids[inst, 2]
    sq = grids[inst, 3]
    n, nxt, rc = common.parse_levels(b, kb, end, (dp, sp, dq, sq), inst,
                                     (records.SIDE_BUY, -1, 0, 1), mts, rows, 0)
    if rc != 0:
        return rc
    ka = scan.find_key_near(b, nxt, 0, end, _K_ASKS)
    if ka < 0:
        return scan.E_MISSING
    n, _, rc = common.parse_levels(b, ka, end, (dp, sp, dq, sq), inst,
                                   (records.SIDE_SELL, -1, 0, 1), mts, rows, n)
    if rc != 0:
        return rc
    info[I_MTS] = mts
    info[I_NROWS] = n
    info[snapshot_sync.I_SNAP_ID] = mts
    info[snapshot_sync.I_SNAP_ROWS] = n
    return scan.OK


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def parse_frame(b, end, syms, lens, grids, rows, info):
    """Parse one Bitstamp frame; info[I_*] says what it was. Returns rc."""
    info[I_KIND] = FR_OTHER
    info[I_INST] = -1
    info[I_NROWS] = 0
    info[I_MTS] = 0
    # Bitstamp puts "channel" and "event" after the data object: look there first
    kd = scan.find_key(b, 0, end, _K_DATA)
    tail = scan.skip_value(b, kd, end) if kd >= 0 else 0
    if tail < 0:
        tail = 0
    ke = scan.find_key_near(b, tail, 0, end, _K_EVENT)
    kc = scan.find_key_near(b, tail, 0, end, _K_CHANNEL)
    if ke < 0:
        return scan.E_MISSING
    es, ee, _ = scan.string_span(b, ke, end)
    if es < 0:
        return scan.E_SYNTAX
    is_data = scan.bytes_eq(b, es, ee, _L_DATA)
    is_trade = scan.bytes_eq(b, es, ee, _L_TRADE)
    if not (is_data or is_trade):
        info[I_KIND] = FR_HEARTBEAT if scan.bytes_eq(b, es, ee, _L_HEARTBEAT) else FR_EVENT
        return scan.OK
    if kc < 0:
        return scan.E_MISSING
    cs, ce, _ = scan.string_span(b, kc, end)
    if cs < 0:
        return scan.E_SYNTAX
    nd = _L_DIFF.shape[0]
    nt = _L_TRADES.shape[0]
    if is_data and ce - cs > nd and scan.bytes_eq(b, cs, cs + nd, _L_DIFF):
        inst = scan.match_symbol(b, cs + nd, ce, syms, lens)
        if inst < 0:
            return scan.E_SYMBOL
        info[I_INST] = inst
        info[I_KIND] = FR_DIFF          # set first: a bad diff still names its book
        return _book_body(b, end, inst, grids, rows, info)
    if is_trade and ce - cs > nt and scan.bytes_eq(b, cs, cs + nt, _L_TRADES):
        inst = scan.match_symbol(b, cs + nt, ce, syms, lens)
        if inst < 0:
            return scan.E_SYMBOL
        info[I_INST] = inst
        kid = scan.find_key(b, 0, end, _K_ID)
        ka = scan.find_key(b, 0, end, _K_AMOUNT)
        kp = scan.find_key(b, 0, end, _K_PRICE)
        kt = scan.find_key(b, 0, end, _K_TYPE)
        km = scan.find_key(b, 0, end, _K_MTS)
        if kid < 0 or ka < 0 or kp < 0 or kt < 0:
            return scan.E_MISSING
        tid, _, rc = scan.parse_int(b, kid, end)
        if rc != 0:
            return rc
        q, _, rc = scan.parse_grid(b, ka, end, grids[inst, 2], grids[inst, 3])
        if rc != 0:
            return rc
        p, _, rc = scan.parse_grid(b, kp, end, grids[inst, 0], grids[inst, 1])
        if rc != 0:
            return rc
        typ, _, rc = scan.parse_int(b, kt, end)
        if rc != 0 or (typ != 0 and typ != 1):
            return scan.E_SYNTAX
        if km >= 0:
            mts, _, rc = scan.parse_int(b, km, end)
            if rc == 0:
                info[I_MTS] = mts
        rows[0, R_KIND] = K_TRADE
        rows[0, R_INST] = inst
        rows[0, R_SIDE] = records.SIDE_BUY if typ == 0 else records.SIDE_SELL
        rows[0, R_PRICE] = p
        rows[0, R_QTY] = q
        rows[0, R_SEQ] = tid
        rows[0, R_AUX1] = 0
        rows[0, R_AUX2] = 0
        info[I_KIND] = FR_TRADE
        info[I_NROWS] = 1
        return scan.OK
    return scan.OK


@njit(cache=True, nogil=True, _nrt=False)
def parse_snapshot(b, end, inst, grids, rows, info):
    """REST order_book body -> K_L2 rows; info[I_SNAP_ID] = its microtimestamp."""
    info[snapshot_sync.I_SNAP_ROWS] = 0
    return _book_body(b, end, inst, grids, rows, info)


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def handle_frame(b, end, tsc, st, hdr, data):
    """One frame -> records (parse, MONOTONIC sync, book, publish). Returns ACT_* bits."""
    common.count_frame(st)
    rc = parse_frame(b, end, st.syms, st.lens, st.grids, st.rows, st.info)
    info = st.info
    kind = info[I_KIND]
    if rc != scan.OK:                          # a diff of a book lost: that book resyncs
        return common.bad_frame_resync(st, rc, info[I_INST] if kind == FR_DIFF else -1, tsc,
                                       VENUE_ID, common.RESYNC_SNAPSHOT, hdr, data)
    if kind == FR_DIFF:
        m = info[I_MTS]
        return snapshot_sync.on_delta(st, info[I_INST], m, m, info[I_NROWS], tsc, SYNC_RULE,
                                      hdr, data)
    if kind == FR_TRADE:
        st.cnt[N_TRADES] += 1
        return common.apply(st, st.rows, 1, tsc, 0, VENUE_ID, common.RESYNC_SNAPSHOT, hdr, data)
    if kind == FR_HEARTBEAT:
        st.cnt[N_HEARTBEATS] += 1
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
    """Instruments from trading-pairs-info: symbol = url_symbol, tick 10**-counter_decimals,
    lot 10**-base_decimals."""
    body = common.metadata_body(meta, "trading-pairs-info")
    try:
        pairs = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise common.InstrumentError(f"bitstamp trading-pairs-info is not JSON: {e}") from None
    out = []
    for p in pairs:
        try:
            cd = int(p["counter_decimals"])
            bd = int(p["base_decimals"])
            name = p["name"].replace("/", "-")
            sym = p["url_symbol"]
        except (KeyError, TypeError, ValueError):
            continue
        tick = "1" if cd == 0 else "0." + "0" * (cd - 1) + "1"
        lot = "1" if bd == 0 else "0." + "0" * (bd - 1) + "1"
        out.append(Instrument.make(sym, name, tick, lot))
    return common.select(out, symbols, common.configured_l2(meta))


def subscribe_messages(instruments: list[Instrument]) -> list[str]:
    out = []
    for prefix in ("diff_order_book_", "live_trades_"):
        for ins in instruments:
            out.append(orjson.dumps({"event": "bts:subscribe",
                                     "data": {"channel": prefix + ins.symbol}}).decode())
    return out


def stream_path(instruments: list[Instrument]) -> str:
    return ""


# Order book snapshot endpoints: v2 /api/v2/order_book/{pair}/ (with or without the trailing
# slash, any ?group=), and v1 /api/order_book/ (BTC/USD only), on www.bitstamp.net or any host.
_SNAPSHOT_V2 = re.compile(r"^(?:/[^/]+)*?/api/v2/order_book/([A-Za-z0-9]+)/?$")
_SNAPSHOT_V1 = re.compile(r"^(?:/[^/]+)*?/api/order_book/?$")


def snapshot_symbol(url: str) -> str | None:
    """The pair (url_symbol) of a REST order_book URL in any documented form, else None."""
    path = urlsplit(url).path
    m = _SNAPSHOT_V2.match(path)
    if m:
        return m.group(1).lower()
    if _SNAPSHOT_V1.match(path):
        return "btcusd"
    return None


def sim_subscribed(msg: dict) -> set[str]:
    """The channel a client's ``bts:subscribe`` message asks for."""
    data = msg.get("data")
    ch = data.get("channel") if isinstance(data, dict) else None
    return {ch} if isinstance(ch, str) and "subscribe" in str(msg.get("event", "")) else set()


def sim_frame_symbol(frame: bytes) -> str | None:
    """The channel a frame is on, else None."""
    return common.string_after(frame, b'"channel":"')


WARM_FRAMES = (
    b'{"data":{"timestamp":"1","microtimestamp":"2","bids":[["1.00","2.0"]],"asks":[["1.10",'
    b'"0.5"]]},"channel":"diff_order_book_abcusd","event":"data"}',
    b'{"data":{"id":7,"timestamp":"1","amount":1.0,"amount_str":"1.0","price":1.05,"price_str":'
    b'"1.05","type":0,"microtimestamp":"3"},"channel":"live_trades_abcusd","event":"trade"}',
    b'{"event":"bts:heartbeat","channel":"","data":{"status":"success"}}',
    b'{"event":"bts:subscription_succeeded","channel":"live_trades_abcusd","data":{}}',
    b'{"data":{"timestamp":"1","microtimestamp":"4","bids":[["1.00"',
)
WARM_SNAPSHOT = b'{"timestamp":"1","microtimestamp":"1","bids":[["1.00","2.0"]],"asks":[["1.10","0.5"]]}'


class Feed(snapshot_sync.SnapshotSyncFeed):
    NAME = NAME
    VENUE_ID = VENUE_ID
    handle = staticmethod(handle_frame)
    pump = staticmethod(pump)
    parse_snapshot = staticmethod(parse_snapshot)
    WARM_INSTRUMENT = ("abcusd", "ABC-USD", "0.01", "0.1")
    WARM_FRAMES = WARM_FRAMES
    WARM_SNAPSHOT = WARM_SNAPSHOT

    def snapshot_path(self, ins: Instrument) -> str:
        return f"/api/v2/order_book/{ins.symbol}/"

    def ping_frame(self) -> str | None:
        return '{"event":"bts:heartbeat"}'

    def on_event(self, ev: dict, tsc: int) -> None:
        kind = ev.get("event")
        if kind == "bts:request_reconnect":
            self.log.warning("bitstamp asks for a reconnect; books invalid until resynced")
            for b in range(len(self.instruments)):
                self._invalidate(b, records.BR_DISCONNECT, tsc)
            self.st.conn[common.C_RESUB] = 1
        elif kind == "bts:error":
            self.counters.errors += 1
            self.log.error("bitstamp error event: %s", ev.get("data"))
        else:
            self.counters.ignored += 1


warm = Feed.warm
