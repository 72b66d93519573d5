"""Bitfinex WebSocket v2: SEQ_ALL sequence checking, P0 book snapshot + deltas, trades,
heartbeats, checksum frames when enabled.

After connect the client sends ``{"event":"conf","flags":65536|131072}`` (SEQ_ALL: every array
frame ends with a per-connection sequence number; OB_CHECKSUM: ``[chan,"cs",crc,seq]`` frames)
and one subscribe per channel: ``{"event":"subscribe","channel":"book","symbol":"tBTCUSD",
"prec":"P0","freq":"F0","len":"100"}`` and ``{"event":"subscribe","channel":"trades",...}``.
Events (info, conf, subscribed, error, pong) are objects parsed with orjson; data frames are
``[chanId, payload, seq]`` parsed by compiled code:

    [chan, [[price, count, amount], ...], seq]    book snapshot (amount > 0 bid, < 0 ask)
    [chan, [price, count, amount], seq]           book delta; count 0 deletes (amount +-1 = side)
    [chan, "te", [id, mts, amount, price], seq]   trade (amount < 0: seller was the aggressor)
    [chan, "tu", [...], seq]                      trade update (already published as "te")
    [chan, "hb", seq]                             heartbeat
    [chan, "cs", checksum, seq]                   book checksum (OB_CHECKSUM)

Sequence: the first array frame after connect sets the count; every next one must be exactly
one more, across all channels. A gap (lost frames) invalidates every book (BR_GAP) and asks for
a resubscribe. Checksum: CRC32 (signed) of the top 25 levels as ``bid price:bid amount:ask
price:ask amount`` pairs (asks' amounts negative), numbers in their shortest decimal form; a
mismatch invalidates the book (BR_CHECKSUM) and asks for a resubscribe.

Liveness: Bitfinex sends ``[chan,"hb",seq]`` on a channel that had nothing else for 15 s, so a
book channel silent (no update, no heartbeat) for ``stale_after_ms`` is stale: BOOK_INVALID
(BR_STALE) and a resubscribe (BOOK_HEARTBEAT).

Bitfinex publishes no tick or lot sizes (prices have 5 significant digits, amounts 8 decimals):
the grid is 10**-PRICE_DECIMALS for prices and 10**-8 for amounts.
"""
from __future__ import annotations

import re
import zlib
from urllib.parse import urlsplit

import orjson
from numba import njit

from appliance import jit
from appliance.transport import records
from appliance.venues import common, scan
from appliance.venues.common import (B_LAST_TSC, B_VALID, C_LAST_SEQ, K_L2, K_TRADE, N_HEARTBEATS,
                                     N_IGNORED, N_TRADES, R_AUX1, R_AUX2, R_INST, R_KIND, R_PRICE,
                                     R_QTY, R_SEQ, R_SIDE, Instrument)

NAME = "bitfinex"
VENUE_ID = records.VENUE_BITFINEX
# REST paths of the instrument metadata (the ``X.0`` files of the recordings hold these responses)
METADATA_PATHS = ("/v2/conf/pub:list:currency", "/v2/conf/pub:list:pair:exchange",
                  "/v2/conf/pub:list:pair:future")

# ids the venue simulator shifts per loop of a recording: none (sequence numbers and channel ids
# start afresh on every connection)
SIM_SHIFT_KEYS = ()
# the frame kind of a book delta (what the benchmarks time) and the recording that has most
BENCH_HOT = "FR_UPDATE"
BENCH_RECORDING = "BITFINEX.ws.11.0"
PRICE_DECIMALS = 10
QTY_DECIMALS = 8
BOOK_LEN = 100
FLAG_SEQ_ALL = 65536
FLAG_CHECKSUM = 131072
CHECKSUM_LEVELS = 25

CH_BOOK = 1
CH_TRADES = 2
CH_OTHER = 3
# channel table: st.tab[c] = (chanId, instrument, CH_*, -)
T_CHAN = 0
T_INST = 1
T_KIND = 2

I_KIND = 0
I_INST = 1
I_NROWS = 2
I_SEQ = 3
I_CHAN = 4
I_CRC = 5
FR_OTHER = 0
FR_EVENT = 1
FR_SNAPSHOT = 2
FR_UPDATE = 3
FR_TRADE = 4
FR_HEARTBEAT = 5
FR_CHECKSUM = 6
FR_TRADE_SNAPSHOT = 7
FR_UNKNOWN_CHANNEL = 8


@njit(**jit.HELPER)
def _entry(b, i, end, dp, dq, inst, rows, n, seq):
    """One ``[price, count, amount]`` at b[i] -> K_L2 row n. Returns (next, rc)."""
    if i >= end or b[i] != 91:
        return i, scan.E_SYNTAX
    if n >= rows.shape[0]:
        return i, scan.E_FULL
    p, i, rc = scan.parse_units(b, scan.skip_ws(b, i + 1, end), end, dp)
    if rc != 0:
        return i, rc
    i = scan.skip_ws(b, i, end)
    if i >= end or b[i] != 44:
        return i, scan.E_SYNTAX
    cnt, i, rc = scan.parse_int(b, scan.skip_ws(b, i + 1, end), end)
    if rc != 0:
        return i, rc
    i = scan.skip_ws(b, i, end)
    if i >= end or b[i] != 44:
        return i, scan.E_SYNTAX
    a, i, rc = scan.parse_units(b, scan.skip_ws(b, i + 1, end), end, dq)
    if rc != 0:
        return i, rc
    i = scan.skip_ws(b, i, end)
    if i >= end or b[i] != 93 or a == 0 or cnt < 0:
        return i, scan.E_SYNTAX
    rows[n, R_KIND] = K_L2
    rows[n, R_INST] = inst
    rows[n, R_SIDE] = records.SIDE_BUY if a > 0 else records.SIDE_SELL
    rows[n, R_PRICE] = p
    rows[n, R_QTY] = 0 if cnt == 0 else (a if a > 0 else -a)
    rows[n, R_SEQ] = seq
    rows[n, R_AUX1] = cnt
    rows[n, R_AUX2] = 0
    return i + 1, scan.OK


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def parse_frame(b, end, tab, rows, info):
    """Parse one Bitfinex frame; info[I_*] says what it was. Returns rc."""
    info[I_KIND] = FR_OTHER
    info[I_INST] = -1
    info[I_NROWS] = 0
    info[I_SEQ] = -1
    info[I_CHAN] = -1
    i = scan.skip_ws(b, 0, end)
    if i >= end:
        return scan.E_SYNTAX
    if b[i] == 123:
        info[I_KIND] = FR_EVENT
        return scan.OK
    if b[i] != 91:
        return scan.E_SYNTAX
    chan, i, rc = scan.parse_int(b, scan.skip_ws(b, i + 1, end), end)
    if rc != 0:
        return rc
    info[I_CHAN] = chan
    # the sequence number is the frame's last element: read it first
    j = end - 1
    while j > i and b[j] != 93:
        j -= 1
    k = j - 1
    while k > i and b[k] != 44:
        k -= 1
    if k <= i:
        return scan.E_SYNTAX
    seq, _, rc = scan.parse_int(b, scan.skip_ws(b, k + 1, j), j)
    if rc != 0:
        return rc
    info[I_SEQ] = seq
    ci = -1
    for c in range(tab.shape[0]):
        if tab[c, T_CHAN] == chan:
            ci = c
            break
    i = scan.skip_ws(b, i, end)
    if i >= end or b[i] != 44:
        return scan.E_SYNTAX
    i = scan.skip_ws(b, i + 1, end)
    if i >= end:
        return scan.E_SYNTAX
    if b[i] == 34:
        ss, se, i = scan.string_span(b, i, end)
        if ss < 0 or se - ss != 2:
            return scan.E_SYNTAX
        c0 = b[ss]
        c1 = b[ss + 1]
        if c0 == 104 and c1 == 98:          # "hb"
            info[I_KIND] = FR_HEARTBEAT
            if ci >= 0 and tab[ci, T_KIND] == CH_BOOK:
                info[I_INST] = tab[ci, T_INST]
            return scan.OK
        if ci < 0:
            info[I_KIND] = FR_UNKNOWN_CHANNEL
            return scan.OK
        inst = tab[ci, T_INST]
        info[I_INST] = inst
        if c0 == 99 and c1 == 115:          # "cs"
            i = scan.skip_ws(b, i, end)
            if i >= end or b[i] != 44:
                return scan.E_SYNTAX
            v, i, rc = scan.parse_int(b, scan.skip_ws(b, i + 1, end), end)
            if rc != 0:
                return rc
            info[I_CRC] = v
            info[I_KIND] = FR_CHECKSUM
            return scan.OK
        if c0 == 116 and c1 == 101 and tab[ci, T_KIND] == CH_TRADES:   # "te"
            i = scan.skip_ws(b, i, end)
            if i >= end or b[i] != 44:
                return scan.E_SYNTAX
            i = scan.skip_ws(b, i + 1, end)
            if i >= end or b[i] != 91:
                return scan.E_SYNTAX
            tid, i, rc = scan.parse_int(b, scan.skip_ws(b, i + 1, end), end)
            if rc != 0:
                return rc
            i = scan.skip_ws(b, i, end)
            if i >= end or b[i] != 44:
                return scan.E_SYNTAX
            i = scan.skip_value(b, i + 1, end)          # mts
            if i < 0:
                return scan.E_SYNTAX
            i = scan.skip_ws(b, i, end)
            if i >= end or b[i] != 44:
                return scan.E_SYNTAX
            a, i, rc = scan.parse_units(b, scan.skip_ws(b, i + 1, end), end, QTY_DECIMALS)
            if rc != 0:
                return rc
            i = scan.skip_ws(b, i, end)
            if i >= end or b[i] != 44:
                return scan.E_SYNTAX
            p, i, rc = scan.parse_units(b, scan.skip_ws(b, i + 1, end), end, PRICE_DECIMALS)
            if rc != 0:
                return rc
            if a == 0:
                return scan.E_SYNTAX
            rows[0, R_KIND] = K_TRADE
            rows[0, R_INST] = inst
            rows[0, R_SIDE] = records.SIDE_BUY if a > 0 else records.SIDE_SELL
            rows[0, R_PRICE] = p
            rows[0, R_QTY] = a if a > 0 else -a
            rows[0, R_SEQ] = tid
            rows[0, R_AUX1] = 0
            rows[0, R_AUX2] = 0
            info[I_KIND] = FR_TRADE
            info[I_NROWS] = 1
            return scan.OK
        return scan.OK                      # "tu" and others
    if ci < 0:
        info[I_KIND] = FR_UNKNOWN_CHANNEL
        return scan.OK
    inst = tab[ci, T_INST]
    info[I_INST] = inst
    if tab[ci, T_KIND] == CH_TRADES:
        info[I_KIND] = FR_TRADE_SNAPSHOT
        return scan.OK
    if tab[ci, T_KIND] != CH_BOOK:
        return scan.OK
    info[I_KIND] = FR_UPDATE            # set first: a bad book frame still names its book
    if b[i] != 91:
        return scan.E_SYNTAX
    i2 = scan.skip_ws(b, i + 1, end)
    n = 0
    if i2 < end and (b[i2] == 91 or b[i2] == 93):
        # snapshot: array of entries (possibly empty)
        i = i2
        while i < end and b[i] != 93:
            i, rc = _entry(b, i, end, PRICE_DECIMALS, QTY_DECIMALS, inst, rows, n, seq)
            if rc != 0:
                return rc
            n += 1
            i = scan.skip_ws(b, i, end)
            if i < end and b[i] == 44:
                i = scan.skip_ws(b, i + 1, end)
        for r in range(n):
            if rows[r, R_AUX1] == 0:
                return scan.E_SYNTAX       # a snapshot never deletes
        info[I_KIND] = FR_SNAPSHOT
    else:
        i, rc = _entry(b, i, end, PRICE_DECIMALS, QTY_DECIMALS, inst, rows, 0, seq)
        if rc != 0:
            return rc
        n = 1
        info[I_KIND] = FR_UPDATE
    info[I_NROWS] = n
    return scan.OK


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def handle_frame(b, end, tsc, st, hdr, data):
    """One frame -> records (parse, SEQ_ALL check, book, publish). Returns ACT_* bits."""
    common.count_frame(st)
    rc = parse_frame(b, end, st.tab, st.rows, st.info)
    info = st.info
    kind = info[I_KIND]
    if kind == FR_EVENT:
        return common.ACT_EVENT
    seq = info[I_SEQ]
    act = common.check_conn_seq(st, seq, tsc, VENUE_ID, hdr, data)
    bi = info[I_INST]
    if rc != scan.OK:
        return act | common.bad_frame_resync(st, rc, bi, tsc, VENUE_ID, common.RESYNC_RESUBSCRIBE,
                                             hdr, data)
    if kind == FR_UPDATE:
        return act | common.apply_live(st, bi, 1, tsc, VENUE_ID, common.RESYNC_RESUBSCRIBE, hdr,
                                       data)
    if kind == FR_SNAPSHOT:
        return act | common.snapshot_rebuild(st, bi, info[I_NROWS], tsc, seq, VENUE_ID,
                                             common.RESYNC_RESUBSCRIBE, hdr, data)
    if kind == FR_TRADE:
        st.cnt[N_TRADES] += 1
        return act | common.apply(st, st.rows, 1, tsc, 0, VENUE_ID, common.RESYNC_RESUBSCRIBE,
                                  hdr, data)
    if kind == FR_HEARTBEAT:
        st.cnt[N_HEARTBEATS] += 1
        if bi >= 0:
            st.book[bi, B_LAST_TSC] = tsc
        return act
    if kind == FR_CHECKSUM:
        if st.book[bi, B_VALID] != 0:
            act |= common.ACT_CHECK
        return act
    st.cnt[N_IGNORED] += 1
    return act


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def pump(fd, rx, ws, st, hdr, data, max_iters, lat, cal):
    """Up to ``max_iters`` frames from the socket through handle_frame (common.pump_frames)."""
    return common.pump_frames(handle_frame, fd, rx, ws, st, hdr, data, max_iters, lat, cal)


def _num(v: int, dec: int) -> str:
    """Shortest decimal form of v * 10**-dec (as Bitfinex/JavaScript print it, 1e-7 style
    for tiny numbers)."""
    neg = v < 0
    v = abs(v)
    s = str(v).rjust(dec + 1, "0")
    s = (s[:-dec] + "." + s[-dec:]).rstrip("0").rstrip(".") if dec else s
    if s.startswith("0.000000") and v:
        # JavaScript switches to exponent notation below 1e-6
        digits = str(v).rstrip("0")
        exp = len(str(v)) - 1 - dec
        s = digits[0] + ("." + digits[1:] if len(digits) > 1 else "") + f"e{exp}"
    return "-" + s if neg else s


def book_checksum(levels_bids: list[tuple[int, int]], levels_asks: list[tuple[int, int]]) -> int:
    """Bitfinex's signed CRC32 of the top 25 levels (ticks/lots, best first)."""
    parts = []
    for k in range(CHECKSUM_LEVELS):
        if k < len(levels_bids):
            p, q = levels_bids[k]
            parts += [_num(p, PRICE_DECIMALS), _num(q, QTY_DECIMALS)]
        if k < len(levels_asks):
            p, q = levels_asks[k]
            parts += [_num(p, PRICE_DECIMALS), _num(-q, QTY_DECIMALS)]
    c = zlib.crc32(":".join(parts).encode())
    return c - (1 << 32) if c >= 1 << 31 else c


def _split_pair(pair: str) -> tuple[str, str]:
    if ":" in pair:
        return tuple(pair.split(":", 1))
    return pair[:3], pair[3:]


def load_instruments(meta: bytes, symbols: list[str] | None = None) -> list[Instrument]:
    """Instruments from conf/pub:list:pair:exchange; symbol = "t" + pair ("tBTCUSD")."""
    body = common.metadata_body(meta, "pub:list:pair:exchange")
    try:
        pairs = orjson.loads(body)[0]
    except (orjson.JSONDecodeError, IndexError, TypeError) as e:
        raise common.InstrumentError(f"bitfinex pair list is not usable: {e}") from None
    tick = "0." + "0" * (PRICE_DECIMALS - 1) + "1"
    lot = "0." + "0" * (QTY_DECIMALS - 1) + "1"
    out = []
    for pair in pairs:
        base, quote = _split_pair(pair)
        out.append(Instrument.make("t" + pair, f"{base}-{quote}", tick, lot, pair=pair))
    return common.select(out, symbols, common.configured_l2(meta))


# REST book endpoint, v2 and v1, on any host (api-pub.bitfinex.com, api.bitfinex.com):
# /v2/book/{symbol}/{precision} and /v1/book/{pair}
_SNAPSHOT_V2 = re.compile(r"^(?:/[^/]+)*?/v2/book/(t[A-Za-z0-9:]+)/[A-Z0-9]+/?$")
_SNAPSHOT_V1 = re.compile(r"^(?:/[^/]+)*?/v1/book/([A-Za-z0-9:]+)/?$")


def snapshot_symbol(url: str) -> str | None:
    """The symbol ("tBTCUSD") of a REST book URL, else None. The feed syncs from the WebSocket
    book snapshot; REST snapshots are recognised, never applied."""
    path = urlsplit(url).path
    m = _SNAPSHOT_V2.match(path)
    if m:
        return m.group(1)
    m = _SNAPSHOT_V1.match(path)
    return "t" + m.group(1).upper() if m else None


def sim_subscribed(msg: dict) -> set[str]:
    """The symbols a client's subscribe message asks for: not filtered: frames
    name a channel id only the subscription replies map to a symbol."""
    return set()


def sim_frame_symbol(frame: bytes) -> str | None:
    """The symbol a frame is about, for the venue simulator: None (not filtered)."""
    return None


WARM_FRAMES = (
    b'{"event":"info","version":2,"serverId":"x","platform":{"status":1}}',
    b'{"event":"subscribed","channel":"book","chanId":5,"symbol":"tABCUSD","prec":"P0",'
    b'"freq":"F0","len":"100","pair":"ABCUSD"}',
    b'{"event":"subscribed","channel":"trades","chanId":6,"symbol":"tABCUSD","pair":"ABCUSD"}',
    b'[5,[[1.0,1,2.0],[1.1,1,-0.5]],1]',
    b'[5,[1.01,1,1.0],2]',
    b'[6,"te",[7,1,1.0,1.05],3]',
    b'[5,"hb",4]',
    b'[5,"cs",123,5]',
    b'[5,[1.01,1,',
)


def subscribe_messages(instruments: list[Instrument], checksum: bool = True) -> list[str]:
    flags = FLAG_SEQ_ALL | (FLAG_CHECKSUM if checksum else 0)
    out = [orjson.dumps({"event": "conf", "flags": flags}).decode()]
    for ins in instruments:
        out.append(orjson.dumps({"event": "subscribe", "channel": "book", "symbol": ins.symbol,
                                 "prec": "P0", "freq": "F0", "len": str(BOOK_LEN)}).decode())
        out.append(orjson.dumps({"event": "subscribe", "channel": "trades",
                                 "symbol": ins.symbol}).decode())
    return out


def stream_path(instruments: list[Instrument]) -> str:
    return ""


class Feed(common.BaseFeed):
    NAME = NAME
    VENUE_ID = VENUE_ID
    EXTRA_COUNTERS = ("snapshots", "channels")
    BOOK_HEARTBEAT = True
    TAB_ROWS = 256
    handle = staticmethod(handle_frame)
    pump = staticmethod(pump)
    WARM_INSTRUMENT = ("tABCUSD", "ABC-USD", "0." + "0" * 9 + "1", "0.00000001")
    WARM_FRAMES = WARM_FRAMES

    def __init__(self, instruments, writer, book_cap: int | None = None):
        super().__init__(instruments, writer, book_cap)
        self.n_chan = 0

    @property
    def tab(self):
        return self.st.tab

    def ping_frame(self) -> str | None:
        return '{"event":"ping","cid":1}'

    def on_event(self, ev: dict, tsc: int) -> None:
        kind = ev.get("event")
        if kind == "subscribed":
            b = self.index.get(ev.get("symbol"))
            chan = ev.get("chanId")
            if b is None or not isinstance(chan, int):
                self.counters.ignored += 1
                return
            kind_id = {"book": CH_BOOK, "trades": CH_TRADES}.get(ev.get("channel"), CH_OTHER)
            tab = self.st.tab
            slot = self.n_chan
            for c in range(self.n_chan):
                if tab[c, T_CHAN] == chan:
                    slot = c
            if slot >= tab.shape[0]:
                self.counters.errors += 1
                self.log.error("bitfinex: more than %d channels", tab.shape[0])
                return
            tab[slot] = (chan, b, kind_id, 0)
            self.n_chan = max(self.n_chan, slot + 1)
            self.counters.channels += 1
        elif kind == "error":
            self.counters.errors += 1
            self.log.error("bitfinex error event: %s", ev)
        elif kind == "info" and ev.get("code") in (20051, 20060):
            # server restart / maintenance: the venue asks us to reconnect
            self.log.warning("bitfinex info %s: books invalid until resubscribed", ev.get("code"))
            for b in range(len(self.instruments)):
                self._invalidate(b, records.BR_DISCONNECT, tsc, int(self.st.conn[C_LAST_SEQ]))
            self.counters.resyncs += 1
            self.st.conn[common.C_RESUB] = 1
        else:
            self.counters.ignored += 1

    def _on_check(self, frame: bytes, tsc: int) -> None:
        b = int(self.st.info[I_INST])
        want = int(self.st.info[I_CRC])
        got = book_checksum(self.book_levels(b, 0)[:CHECKSUM_LEVELS],
                            self.book_levels(b, 1)[:CHECKSUM_LEVELS])
        if got == want:
            self.counters.checksums_ok += 1
        else:
            self.counters.checksums_failed += 1
            self.log.warning("bitfinex %s: checksum mismatch (venue %d, book %d); resubscribing",
                             self.instruments[b].symbol, want, got)
            self._resync(b, records.BR_CHECKSUM, tsc)

    def on_reconnect(self) -> None:
        super().on_reconnect()
        self.st.tab[:] = -1
        self.n_chan = 0


warm = Feed.warm
