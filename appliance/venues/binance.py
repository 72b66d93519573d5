"""Binance spot: combined streams (depth diff + REST snapshot sync, aggTrade/trade, bookTicker).

Subscription is in the URL: ``/stream?streams=<sym>@depth@100ms/<sym>@bookTicker/<sym>@aggTrade``.
Frames are ``{"stream": ..., "data": {...}}``. Ping/pong is at the WebSocket protocol level
(the client library answers pings); no application ping.

Book sync (Binance's documented rule): depth updates are buffered until the REST snapshot
``/api/v3/depth?symbol=X&limit=1000`` arrives; updates with ``u <= lastUpdateId`` are dropped;
the first applied update must have ``U <= lastUpdateId + 1 <= u``; after that every update's
``U`` must be the previous ``u + 1``. Anything else is a gap: the book goes BOOK_INVALID(BR_GAP)
and a new snapshot is requested.
"""
from __future__ import annotations

import numpy as np
import orjson
from numba import njit

from appliance.transport import records
from appliance.venues import common, scan
from appliance.venues.common import (K_BBO, K_TRADE, R_AUX1, R_AUX2, R_INST, R_KIND, R_PRICE,
                                 R_QTY, R_SEQ, R_SIDE, Instrument)

NAME = "binance"
VENUE_ID = records.VENUE_BINANCE
# REST paths of the instrument metadata (the ``X.0`` files of the recordings hold these responses)
METADATA_PATHS = ("/api/v3/exchangeInfo",)
SNAPSHOT_LIMIT = 1000
MAX_BUFFERED = 4096          # depth frames buffered per symbol while waiting for a snapshot

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


@njit(cache=True, nogil=True, _nrt=False)
def parse_frame(b, end, syms, lens, grids, rows, info):
    """Parse one combined-stream frame into rows; info[I_*] says what it was. Returns rc."""
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
        n, nxt, rc = common.parse_levels(b, kb, end, dp, sp, dq, sq, inst, records.SIDE_BUY,
                                         -1, 0, 1, u, rows, 0)
        if rc != 0:
            return rc
        ka = scan.find_key_near(b, nxt, d, end, _K_A)
        if ka < 0:
            return scan.E_MISSING
        n, _, rc = common.parse_levels(b, ka, end, dp, sp, dq, sq, inst, records.SIDE_SELL,
                                       -1, 0, 1, u, rows, n)
        if rc != 0:
            return rc
        info[I_KIND] = FR_DEPTH
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
    """REST /api/v3/depth body -> K_L2 rows (seq = lastUpdateId). Returns rc."""
    info[I_KIND] = FR_SNAPSHOT
    info[I_INST] = inst
    info[I_NROWS] = 0
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
    n, _, rc = common.parse_levels(b, kb, end, dp, sp, dq, sq, inst, records.SIDE_BUY,
                                   -1, 0, 1, last, rows, 0)
    if rc != 0:
        return rc
    n, _, rc = common.parse_levels(b, ka, end, dp, sp, dq, sq, inst, records.SIDE_SELL,
                                   -1, 0, 1, last, rows, n)
    if rc != 0:
        return rc
    info[I_LAST] = last
    info[I_NROWS] = n
    return scan.OK


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


# per-book sync state
WAIT_SNAPSHOT = 0    # snapshot requested (or to be requested); depth frames are buffered
FIRST = 1            # snapshot applied; waiting for the first update that straddles it
LIVE = 2


class Feed(common.BaseFeed):
    NAME = NAME
    VENUE_ID = VENUE_ID
    EXTRA_COUNTERS = ("buffered", "snapshots", "bbo")

    def __init__(self, instruments, writer, book_cap: int | None = None):
        super().__init__(instruments, writer, book_cap)
        nb = len(self.instruments)
        self.state = [WAIT_SNAPSHOT] * nb
        self.last_u = [0] * nb
        self.requested = [False] * nb
        self.buffer: list[list[tuple[bytes, int]]] = [[] for _ in range(nb)]

    # -- snapshots -----------------------------------------------------------------------------
    def snapshot_requests(self) -> list[tuple[str, str]]:
        out = []
        for b, ins in enumerate(self.instruments):
            if self.state[b] == WAIT_SNAPSHOT and not self.requested[b]:
                self.requested[b] = True
                out.append((ins.symbol, f"/api/v3/depth?symbol={ins.symbol}&limit={SNAPSHOT_LIMIT}"))
        return out

    def on_snapshot(self, symbol: str, body: bytes, recv_tsc: int) -> None:
        b = self.index.get(symbol)
        if b is None:
            self.counters.ignored += 1
            return
        if self.state[b] != WAIT_SNAPSHOT:
            self.counters.ignored += 1
            return
        buf = np.frombuffer(body, np.uint8)
        rc = parse_snapshot(buf, len(buf), b, self.grids, self.rows, self.info)
        if rc != scan.OK:
            self._bad(body, rc, f"snapshot {symbol}")
            self.requested[b] = False      # ask again
            return
        self.counters.snapshots += 1
        self._reset_book(b)
        last = int(self.info[I_LAST])
        if self._apply(int(self.info[I_NROWS]), recv_tsc, records.F_SNAPSHOT) & common.A_FAILED:
            return                                 # resynced: a new snapshot is wanted
        self.last_u[b] = last
        self.state[b] = FIRST
        self.requested[b] = False
        self._validate(b, recv_tsc, self.last_u[b])
        pending, self.buffer[b] = self.buffer[b], []
        for frame, tsc in pending:
            self.on_frame(frame, tsc, _replayed=True)

    def on_reconnect(self) -> None:
        super().on_reconnect()
        nb = len(self.instruments)
        self.state = [WAIT_SNAPSHOT] * nb
        self.last_u = [0] * nb
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

    # -- frames --------------------------------------------------------------------------------
    def on_frame(self, frame: bytes, recv_tsc: int, _replayed: bool = False) -> None:
        if not _replayed:
            self.counters.frames += 1
        buf = np.frombuffer(frame, np.uint8)
        rc = parse_frame(buf, len(buf), self.syms, self.sym_lens, self.grids, self.rows, self.info)
        info = self.info
        kind = int(info[I_KIND])
        if rc != scan.OK:
            self._bad(frame, rc)
            b = int(info[I_INST])
            if b >= 0 and (b"depthUpdate" in frame):
                self._resync(b, records.BR_BAD_FRAME, recv_tsc)   # an update of b is lost
            return
        if kind == FR_DEPTH:
            self._on_depth(frame, recv_tsc)
        elif kind == FR_TRADE:
            self.counters.trades += 1
            self._apply(1, recv_tsc)
        elif kind == FR_BBO:
            self.counters.bbo += 1
            self._apply(1, recv_tsc)
        else:
            self.counters.ignored += 1

    def _on_depth(self, frame: bytes, tsc: int) -> None:
        info = self.info
        b = int(info[I_INST])
        U = int(info[I_FIRST])
        u = int(info[I_LAST])
        self.last_tsc[b] = tsc
        st = self.state[b]
        if st == WAIT_SNAPSHOT:
            if len(self.buffer[b]) >= MAX_BUFFERED:
                self.buffer[b].clear()
                self.counters.dropped += MAX_BUFFERED
                self.log.warning("binance %s: snapshot overdue, buffer of %d updates dropped",
                                 self.instruments[b].symbol, MAX_BUFFERED)
                self.requested[b] = False
            self.buffer[b].append((bytes(frame), tsc))
            self.counters.buffered += 1
            if self.status_sent[b] == 0:
                self._invalidate(b, records.BR_SNAPSHOT_PENDING, tsc)
            return
        last = self.last_u[b]
        if u <= last:
            self.counters.dropped += 1     # already contained in the snapshot / a duplicate
            return
        if st == FIRST:
            if U > last + 1:
                self._gap(b, last, U, tsc)
                return
        elif U != last + 1:
            self._gap(b, last, U, tsc)
            return
        if self._apply(int(info[I_NROWS]), tsc) & common.A_FAILED:
            return                             # resynced (crossed / rejected level)
        self.last_u[b] = u
        self.state[b] = LIVE
        self._validate(b, tsc, u)

    def _gap(self, b: int, last: int, first: int, tsc: int) -> None:
        self.counters.gaps += 1
        self.log.warning("binance %s: gap, expected update %d, got %d; refetching the snapshot",
                         self.instruments[b].symbol, last + 1, first)
        self._resync(b, records.BR_GAP, tsc)
