"""Bitstamp WebSocket v2: diff_order_book + REST snapshot sync by microtimestamp, live_trades.

Subscription: one ``{"event":"bts:subscribe","data":{"channel":"diff_order_book_<pair>"}}`` and
one ``live_trades_<pair>`` per pair. Frames are ``{"data":{...},"channel":...,"event":...}``;
``data`` events (book diffs) and ``trade`` events are parsed by compiled code; bts:* events
(subscription_succeeded, heartbeat, request_reconnect, error) with orjson. The client pings with
``{"event":"bts:heartbeat"}``.

Book sync: diffs are buffered until the REST snapshot ``/api/v2/order_book/<pair>`` arrives;
diffs whose ``microtimestamp`` is not newer than the snapshot's are dropped, later ones applied
(amount 0 deletes); a diff not newer than the last one applied is dropped and counted.
Bitstamp diffs carry no sequence numbers, so a lost diff cannot be seen directly: a crossed
book, a bad frame or a stale pair invalidates the book and refetches the snapshot.
``bts:request_reconnect`` asks for a resubscribe.
"""
from __future__ import annotations

import numpy as np
import orjson
from numba import njit

from appliance.transport import records
from appliance.venues import common, scan
from appliance.venues.common import K_TRADE, R_AUX1, R_AUX2, R_INST, R_KIND, R_PRICE, R_QTY, R_SEQ, R_SIDE, Instrument

NAME = "bitstamp"
VENUE_ID = records.VENUE_BITSTAMP
# REST paths of the instrument metadata (the ``X.0`` files of the recordings hold these responses)
METADATA_PATHS = ("/api/v2/trading-pairs-info/",)
MAX_BUFFERED = 4096

I_KIND = 0
I_INST = 1
I_NROWS = 2
I_MTS = 3
FR_OTHER = 0
FR_EVENT = 1
FR_DIFF = 2
FR_TRADE = 3
FR_SNAPSHOT = 4

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


@njit(cache=True, nogil=True, _nrt=False)
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
    n, nxt, rc = common.parse_levels(b, kb, end, dp, sp, dq, sq, inst, records.SIDE_BUY,
                                     -1, 0, 1, mts, rows, 0)
    if rc != 0:
        return rc
    ka = scan.find_key_near(b, nxt, 0, end, _K_ASKS)
    if ka < 0:
        return scan.E_MISSING
    n, _, rc = common.parse_levels(b, ka, end, dp, sp, dq, sq, inst, records.SIDE_SELL,
                                   -1, 0, 1, mts, rows, n)
    if rc != 0:
        return rc
    info[I_MTS] = mts
    info[I_NROWS] = n
    return scan.OK


@njit(cache=True, nogil=True, _nrt=False)
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
        info[I_KIND] = FR_EVENT
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
        rc = _book_body(b, end, inst, grids, rows, info)
        if rc != 0:
            return rc
        info[I_KIND] = FR_DIFF
        return scan.OK
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
    """REST /api/v2/order_book/<pair> body -> K_L2 rows; info[I_MTS] = its microtimestamp."""
    info[I_KIND] = FR_SNAPSHOT
    info[I_INST] = inst
    info[I_NROWS] = 0
    return _book_body(b, end, inst, grids, rows, info)


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


WAIT_SNAPSHOT = 0
LIVE = 1


class Feed(common.BaseFeed):
    NAME = NAME
    VENUE_ID = VENUE_ID
    EXTRA_COUNTERS = ("buffered", "snapshots")

    def __init__(self, instruments, writer, book_cap: int | None = None):
        super().__init__(instruments, writer, book_cap)
        nb = len(self.instruments)
        self.state = [WAIT_SNAPSHOT] * nb
        self.last_mts = [0] * nb
        self.requested = [False] * nb
        self.buffer: list[list[tuple[bytes, int]]] = [[] for _ in range(nb)]

    def ping_frame(self) -> str | None:
        return '{"event":"bts:heartbeat"}'

    def snapshot_requests(self) -> list[tuple[str, str]]:
        out = []
        for b, ins in enumerate(self.instruments):
            if self.state[b] == WAIT_SNAPSHOT and not self.requested[b]:
                self.requested[b] = True
                out.append((ins.symbol, f"/api/v2/order_book/{ins.symbol}"))
        return out

    def on_snapshot(self, symbol: str, body: bytes, recv_tsc: int) -> None:
        b = self.index.get(symbol)
        if b is None or self.state[b] != WAIT_SNAPSHOT:
            self.counters.ignored += 1
            return
        buf = np.frombuffer(body, np.uint8)
        rc = parse_snapshot(buf, len(buf), b, self.grids, self.rows, self.info)
        if rc != scan.OK:
            self._bad(body, rc, f"snapshot {symbol}")
            self.requested[b] = False
            return
        self.counters.snapshots += 1
        mts = int(self.info[I_MTS])
        self._reset_book(b)
        self.requested[b] = False
        if self._apply(int(self.info[I_NROWS]), recv_tsc, records.F_SNAPSHOT) & common.A_FAILED:
            return
        self.last_mts[b] = mts
        self.state[b] = LIVE
        self._validate(b, recv_tsc, mts)
        pending, self.buffer[b] = self.buffer[b], []
        for frame, tsc in pending:
            self.on_frame(frame, tsc, _replayed=True)

    def on_reconnect(self) -> None:
        super().on_reconnect()
        nb = len(self.instruments)
        self.state = [WAIT_SNAPSHOT] * nb
        self.requested = [False] * nb
        self.buffer = [[] for _ in range(nb)]

    def _resync(self, b: int, reason: int, tsc: int) -> None:
        self._invalidate(b, reason, tsc)
        if self.state[b] == WAIT_SNAPSHOT:
            return      # already resyncing; a hole in the buffer shows up as a gap when applied
        self.counters.resyncs += 1
        self.state[b] = WAIT_SNAPSHOT
        self.requested[b] = False
        self.buffer[b] = []

    def _on_event(self, frame: bytes) -> None:
        try:
            ev = orjson.loads(frame)
        except orjson.JSONDecodeError:
            self._bad(frame, scan.E_SYNTAX, "not JSON")
            return
        kind = ev.get("event") if isinstance(ev, dict) else None
        if kind == "bts:heartbeat":
            self.counters.heartbeats += 1
        elif kind == "bts:request_reconnect":
            self.log.warning("bitstamp asks for a reconnect; books invalid until resynced")
            for b in range(len(self.instruments)):
                self._invalidate(b, records.BR_DISCONNECT, 0)
            self._resubscribe = True
        elif kind == "bts:error":
            self.counters.errors += 1
            self.log.error("bitstamp error event: %s", ev.get("data"))
        else:
            self.counters.ignored += 1

    def on_frame(self, frame: bytes, recv_tsc: int, _replayed: bool = False) -> None:
        if not _replayed:
            self.counters.frames += 1
        buf = np.frombuffer(frame, np.uint8)
        rc = parse_frame(buf, len(buf), self.syms, self.sym_lens, self.grids, self.rows, self.info)
        info = self.info
        kind = int(info[I_KIND])
        b = int(info[I_INST])
        if rc != scan.OK:
            self._bad(frame, rc)
            if b >= 0 and b"diff_order_book" in frame:
                self._resync(b, records.BR_BAD_FRAME, recv_tsc)
            return
        if kind == FR_EVENT:
            self._on_event(frame)
        elif kind == FR_DIFF:
            self._on_diff(frame, b, recv_tsc)
        elif kind == FR_TRADE:
            self.counters.trades += 1
            self._apply(1, recv_tsc)
        else:
            self.counters.ignored += 1

    def _on_diff(self, frame: bytes, b: int, tsc: int) -> None:
        self.last_tsc[b] = tsc
        if self.state[b] == WAIT_SNAPSHOT:
            if len(self.buffer[b]) >= MAX_BUFFERED:
                self.buffer[b].clear()
                self.counters.dropped += MAX_BUFFERED
                self.requested[b] = False
            self.buffer[b].append((bytes(frame), tsc))
            self.counters.buffered += 1
            if self.status_sent[b] == 0:
                self._invalidate(b, records.BR_SNAPSHOT_PENDING, tsc)
            return
        mts = int(self.info[I_MTS])
        if mts <= self.last_mts[b]:
            self.counters.dropped += 1          # contained in the snapshot
            return
        if self._apply(int(self.info[I_NROWS]), tsc) & common.A_FAILED:
            return
        self.last_mts[b] = mts
