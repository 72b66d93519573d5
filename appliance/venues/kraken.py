"""Kraken WebSocket v1: book snapshot + deltas with a CRC32 verified on every delta, trades.

Subscription: ``{"event":"subscribe","pair":[...],"subscription":{"name":"book","depth":N}}`` and
the same with ``"trade"``. Data frames are arrays ``[channelID, payload..., channelName, pair]``;
events (systemStatus, subscriptionStatus, heartbeat, pong) are objects, parsed with orjson.
The client pings with ``{"event":"ping"}``.

Book sync: ``{"as":[...],"bs":[...]}`` is a snapshot (book rebuilt, BOOK_VALID); ``{"a":[...]}``
and/or ``{"b":[...]}`` are deltas (volume 0 deletes; a 4th element "r" marks a republish, applied
like any update); after each delta frame the book is truncated to the subscribed depth (Kraken
sends no delete for a level pushed out) and the frame's ``"c"`` checksum is verified: CRC32 over
the top 10 asks (best first) then the top 10 bids, each level as its price then volume string
exactly as Kraken prints them with the '.' removed and leading zeros stripped. A mismatch
invalidates the book (BR_CHECKSUM) and asks for a resubscribe (a fresh snapshot).

The print decimals of each pair are learned from the snapshot's strings (Kraken prints more
decimals than ``pair_decimals`` for some pairs: XBT/CHF "56218.30000" with pair_decimals 1).

Liveness: Kraken sends ``{"event":"heartbeat"}`` when a connection has had no other traffic for
about a second, and nothing per pair: a quiet pair is not stale; a connection with no frame at
all for ``stale_after_ms`` is dead (the gateway's timer).
"""
from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import numpy as np
import orjson
from numba import njit

from appliance import jit
from appliance.transport import records
from appliance.transport.intrinsics import bit_length
from appliance.venues import common, scan
from appliance.venues.common import (B_LAST_TSC, B_V0, B_VALID, K_L2, K_TRADE, N_CHECKSUMS_FAILED,
                                     N_CHECKSUMS_OK, N_DROPPED, N_HEARTBEATS, N_IGNORED, N_TRADES,
                                     N_TRUNCATED, R_INST, R_KIND, R_PRICE, R_QTY, R_SEQ, R_SIDE,
                                     Instrument)

NAME = "kraken"
VENUE_ID = records.VENUE_KRAKEN
# REST paths of the instrument metadata (the ``X.0`` files of the recordings hold these responses)
METADATA_PATHS = ("/0/public/AssetPairs",)

# ids the venue simulator shifts per loop of a recording: none (no ids in book or trade frames)
SIM_SHIFT_KEYS = ()
# the frame kind of a book delta (what the benchmarks time) and the recording that has most
BENCH_HOT = "FR_UPDATE"
BENCH_RECORDING = "KRAKEN.ws.50.0"
BOOK_DEPTH = 1000
CHECKSUM_LEVELS = 10

I_KIND = 0
I_INST = 1
I_NROWS = 2
I_HAS_CRC = 3
I_CRC = 4
I_PDEC = 5         # decimals of the first snapshot level's price string (-1: none seen)
I_QDEC = 6         # ... and of its volume string
FR_OTHER = 0
FR_EVENT = 1
FR_SNAPSHOT = 2
FR_UPDATE = 3
FR_TRADE = 4
FR_HEARTBEAT = 5

# per-book venue words: st.book[b, K_*]
K_DEPTH = B_V0         # subscribed depth: levels beyond it are deleted after each delta
K_SCALE = B_V0 + 1     # 4 words: price mul, price div, qty mul, qty div (ticks/lots -> printed digits)
K_CRC = B_V0 + 5       # the book's checksum as last computed ...
K_CRC_OK = B_V0 + 6    # ... 1 while no change has reached the top CHECKSUM_LEVELS since

_EL0 = 8           # info[8:16]: start index of each top-level element
_MAX_EL = 8
_L_BOOK = scan.lit("book")
_L_TRADE = scan.lit("trade")
_K_EVENT = scan.key("event")
_L_HEARTBEAT = scan.lit("heartbeat")


def _crc_tables() -> np.ndarray:
    """CRC-32 (IEEE 802.3, reflected, the zlib polynomial) lookup tables for slice-by-8:
    t[0] is the byte-at-a-time table, t[k][n] the CRC of byte n followed by k zero bytes."""
    t = np.zeros((8, 256), np.uint32)
    for n in range(256):
        c = n
        for _ in range(8):
            c = (0xEDB88320 ^ (c >> 1)) if c & 1 else (c >> 1)
        t[0, n] = c
    for k in range(1, 8):
        for n in range(256):
            c = int(t[k - 1, n])
            t[k, n] = (c >> 8) ^ int(t[0, c & 0xFF])
    return t


CRC_TABLE = _crc_tables()
_DIGITS2 = np.frombuffer("".join(f"{k:02d}" for k in range(100)).encode(), np.uint8).copy()


@njit(**jit.HELPER)
def _decimals_at(b, i, end):
    """Digits after the '.' of the JSON string at b[i] (0 without a point; -1 if no string)."""
    s, e, _ = scan.string_span(b, i, end)
    if s < 0:
        return -1
    for k in range(s, e):
        if b[k] == 46:
            return e - k - 1
    return 0


@njit(**jit.INTERNAL)
def _first_level_decimals(b, i, end, info):
    """info[I_PDEC], info[I_QDEC] from the first level of the level array at b[i]."""
    i = scan.skip_ws(b, i, end)
    if i >= end or b[i] != 91:
        return
    i = scan.skip_ws(b, i + 1, end)
    if i >= end or b[i] != 91:
        return
    i = scan.skip_ws(b, i + 1, end)
    pd = _decimals_at(b, i, end)
    j = scan.skip_value(b, i, end)
    if pd < 0 or j < 0:
        return
    j = scan.skip_ws(b, j, end)
    if j >= end or b[j] != 44:
        return
    qd = _decimals_at(b, scan.skip_ws(b, j + 1, end), end)
    if qd < 0:
        return
    info[I_PDEC] = pd
    info[I_QDEC] = qd


@njit(**jit.HELPER)
def _walk_book_object(b, i, end, inst, grids, rows, n, info):
    """Parse one ``{"as"|"bs"|"a"|"b": [...], "c": "..."}`` object; returns (n, next, rc, snap)."""
    dp = grids[inst, 0]
    sp = grids[inst, 1]
    dq = grids[inst, 2]
    sq = grids[inst, 3]
    snap = False
    i = scan.skip_ws(b, i, end)
    if i >= end or b[i] != 123:
        return n, i, scan.E_SYNTAX, snap
    i = scan.skip_ws(b, i + 1, end)
    while i < end and b[i] != 125:
        ks, ke, i = scan.string_span(b, i, end)
        if ks < 0:
            return n, i, scan.E_SYNTAX, snap
        i = scan.skip_ws(b, i, end)
        if i >= end or b[i] != 58:
            return n, i, scan.E_SYNTAX, snap
        i = scan.skip_ws(b, i + 1, end)
        klen = ke - ks
        k0 = b[ks]
        if (klen == 1 or (klen == 2 and b[ks + 1] == 115)) and (k0 == 97 or k0 == 98):
            side = records.SIDE_SELL if k0 == 97 else records.SIDE_BUY
            if klen == 2:
                snap = True
                if info[I_PDEC] < 0:
                    _first_level_decimals(b, i, end, info)
            n, i, rc = common.parse_levels(b, i, end, (dp, sp, dq, sq), inst, (side, -1, 0, 1), 0,
                                           rows, n)
            if rc != 0:
                return n, i, rc, snap
        elif klen == 1 and k0 == 99:
            v, i, rc = scan.parse_int(b, i, end)
            if rc != 0:
                return n, i, rc, snap
            info[I_HAS_CRC] = 1
            info[I_CRC] = v
        else:
            i = scan.skip_value(b, i, end)
            if i < 0:
                return n, end, scan.E_SYNTAX, snap
        i = scan.skip_ws(b, i, end)
        if i < end and b[i] == 44:
            i = scan.skip_ws(b, i + 1, end)
    if i >= end:
        return n, i, scan.E_SYNTAX, snap
    return n, i + 1, scan.OK, snap


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def parse_frame(b, end, syms, lens, grids, rows, info):
    """Parse one Kraken frame into rows; info[I_*] says what it was. Returns rc."""
    info[I_KIND] = FR_OTHER
    info[I_INST] = -1
    info[I_NROWS] = 0
    info[I_HAS_CRC] = 0
    info[I_CRC] = 0
    info[I_PDEC] = -1
    info[I_QDEC] = -1
    i = scan.skip_ws(b, 0, end)
    if i >= end:
        return scan.E_SYNTAX
    if b[i] == 123:
        info[I_KIND] = FR_EVENT
        ke = scan.find_key(b, i, end, _K_EVENT)
        if ke >= 0:
            es, ee, _ = scan.string_span(b, ke, end)
            if es >= 0 and scan.bytes_eq(b, es, ee, _L_HEARTBEAT):
                info[I_KIND] = FR_HEARTBEAT
        return scan.OK
    if b[i] != 91:
        return scan.E_SYNTAX
    # pass 1: element boundaries, kept in info[_EL0:]
    nel = 0
    i += 1
    while True:
        i = scan.skip_ws(b, i, end)
        if i >= end:
            return scan.E_SYNTAX
        if nel >= _MAX_EL:
            return scan.E_SYNTAX
        info[_EL0 + nel] = i
        nel += 1
        i = scan.skip_value(b, i, end)
        if i < 0:
            return scan.E_SYNTAX
        i = scan.skip_ws(b, i, end)
        if i >= end:
            return scan.E_SYNTAX
        if b[i] == 44:
            i += 1
            continue
        if b[i] == 93:
            break
        return scan.E_SYNTAX
    if nel < 4:
        return scan.E_SYNTAX
    ps, pe, _ = scan.string_span(b, info[_EL0 + nel - 1], end)
    cs, ce, _ = scan.string_span(b, info[_EL0 + nel - 2], end)
    if ps < 0 or cs < 0:
        return scan.E_SYNTAX
    inst = scan.match_symbol(b, ps, pe, syms, lens)
    if inst < 0:
        return scan.E_SYMBOL
    info[I_INST] = inst
    is_book = ce - cs >= 4 and scan.bytes_eq(b, cs, cs + 4, _L_BOOK)
    is_trade = scan.bytes_eq(b, cs, ce, _L_TRADE)
    n = 0
    if is_book:
        info[I_KIND] = FR_UPDATE         # set first: a bad book frame still names its book
        snap = False
        for k in range(1, nel - 2):
            n, _, rc, sn = _walk_book_object(b, info[_EL0 + k], end, inst, grids, rows, n, info)
            if rc != 0:
                return rc
            snap = snap or sn
        info[I_KIND] = FR_SNAPSHOT if snap else FR_UPDATE
        info[I_NROWS] = n
        return scan.OK
    if is_trade:
        g = (grids[inst, 0], grids[inst, 1], grids[inst, 2], grids[inst, 3])
        n, _, rc = common.parse_levels(b, info[_EL0 + 1], end, g, inst, (0, 3, 0, 1), 0, rows, 0)
        if rc != 0:
            return rc
        for k in range(n):
            rows[k, R_KIND] = K_TRADE
        info[I_KIND] = FR_TRADE
        info[I_NROWS] = n
        return scan.OK
    return scan.OK


@njit(**jit.HELPER)
def truncate_rows(px, nb, b, depth, rows):
    """Delete rows for the levels of book b beyond ``depth`` (worst first); returns how many."""
    m = 0
    for s in range(2):
        extra = nb[b, s] - depth
        for k in range(extra):
            if m >= rows.shape[0]:
                return m
            rows[m, R_KIND] = K_L2
            rows[m, R_INST] = b
            rows[m, R_SIDE] = s + 1
            rows[m, R_PRICE] = px[b, s, k]
            rows[m, R_QTY] = 0
            rows[m, R_SEQ] = 0
            m += 1
    return m


@njit(**jit.HELPER)
def _put_digits(v, buf, m):
    """Decimal digits of v > 0 (no leading zeros) appended at buf[m]; returns new m. Two digits
    per division, the digit count from the bit length."""
    if v <= 0:
        return m
    t = (bit_length(v) * 1233) >> 12           # floor(log10(v)) or one more
    nd = t + 1 - (1 if v < scan.POW10[t] else 0)
    k = m + nd
    while v >= 100:
        q = v // 100
        r = (v - q * 100) * 2
        k -= 2
        buf[k] = _DIGITS2[r]
        buf[k + 1] = _DIGITS2[r + 1]
        v = q
    if v >= 10:
        buf[k - 2] = _DIGITS2[2 * v]
        buf[k - 1] = _DIGITS2[2 * v + 1]
    else:
        buf[k - 1] = 48 + v
    return m + nd


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def crc32(buf, m, table):
    """zlib's CRC-32 of buf[0:m], eight bytes per step (slice-by-8 over ``table``, CRC_TABLE)."""
    c = np.uint32(0xFFFFFFFF)
    k = 0
    ff = np.uint32(0xFF)
    while k + 8 <= m:
        x = scan.load8(buf, k)
        lo = np.uint32(x & np.uint64(0xFFFFFFFF)) ^ c
        hi = np.uint32(x >> np.uint64(32))
        c = (table[7, lo & ff] ^ table[6, (lo >> np.uint32(8)) & ff]
             ^ table[5, (lo >> np.uint32(16)) & ff] ^ table[4, lo >> np.uint32(24)]
             ^ table[3, hi & ff] ^ table[2, (hi >> np.uint32(8)) & ff]
             ^ table[1, (hi >> np.uint32(16)) & ff] ^ table[0, hi >> np.uint32(24)])
        k += 8
    while k < m:
        c = table[0, (c ^ buf[k]) & ff] ^ (c >> np.uint32(8))
        k += 1
    return np.int64(c ^ np.uint32(0xFFFFFFFF))


@njit(cache=True, nogil=True, _nrt=False)
def checksum(px, qty, nb, b, scale, buf, table):
    """Kraken's CRC32 of book b. ``scale`` = int64[4]: price mul, price div, qty mul, qty div
    turning ticks/lots into the printed digits; ``buf`` holds the text, ``table`` is CRC_TABLE."""
    m = 0
    for s in (1, 0):
        cnt = nb[b, s]
        top = cnt - CHECKSUM_LEVELS
        if top < 0:
            top = 0
        k = cnt - 1
        while k >= top:
            pv = px[b, s, k] * scale[0]
            qv = qty[b, s, k] * scale[2]
            if scale[1] != 1:
                pv //= scale[1]
            if scale[3] != 1:
                qv //= scale[3]
            m = _put_digits(pv, buf, m)
            m = _put_digits(qv, buf, m)
            k -= 1
    return crc32(buf, m, table)


@njit(**jit.INTERNAL)
def _pow10(k):
    v = 1
    for _ in range(k):
        v *= 10
    return v


@njit(cache=True, nogil=True, _nrt=False)
def set_print(st, b, pdec, qdec):
    """How Kraken prints book b: ``pdec`` / ``qdec`` decimals -> the K_SCALE words."""
    for j in range(2):
        dec = st.grids[b, 2 * j]
        step = st.grids[b, 2 * j + 1]
        pr = pdec if j == 0 else qdec
        if pr >= dec:
            st.book[b, K_SCALE + 2 * j] = step * _pow10(pr - dec)
            st.book[b, K_SCALE + 2 * j + 1] = 1
        else:
            st.book[b, K_SCALE + 2 * j] = step
            st.book[b, K_SCALE + 2 * j + 1] = _pow10(dec - pr)


@njit(**jit.HELPER)
def _truncate(st, b, tsc, hdr, data):
    """Delete the levels of book b beyond its subscribed depth (Kraken sends no delete for a
    level pushed out). Returns ACT_* bits."""
    m = truncate_rows(st.px, st.nb, b, st.book[b, K_DEPTH], st.rows2)
    if m == 0:
        return 0
    st.cnt[N_TRUNCATED] += m
    return common.apply(st, st.rows2, m, tsc, 0, VENUE_ID, common.RESYNC_RESUBSCRIBE, hdr, data)


@njit(**jit.HELPER)
def _touches_top(st, b, n):
    """Whether rows[0:n] can change the top CHECKSUM_LEVELS of book b (a level at least as good
    as the current 10th best of its side, or a side shorter than that)."""
    for k in range(n):
        s = st.rows[k, R_SIDE] - 1
        cnt = st.nb[b, s]
        if cnt < CHECKSUM_LEVELS:
            return True
        tenth = st.px[b, s, cnt - CHECKSUM_LEVELS]
        p = st.rows[k, R_PRICE]
        if (s == 0 and p >= tenth) or (s == 1 and p <= tenth):
            return True
    return False


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def book_checksum(st, b):
    """Kraken's CRC32 of book b, recomputed only when its top levels changed since last time."""
    if st.book[b, K_CRC_OK] == 0:
        st.book[b, K_CRC] = checksum(st.px, st.qty, st.nb, b, st.book[b, K_SCALE:K_SCALE + 4],
                                     st.scratch, CRC_TABLE)
        st.book[b, K_CRC_OK] = 1
    return st.book[b, K_CRC]


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def handle_frame(b, end, tsc, st, hdr, data):
    """One frame -> records (parse, book, truncation, CRC32 check, publish). Returns ACT_* bits."""
    common.count_frame(st)
    rc = parse_frame(b, end, st.syms, st.lens, st.grids, st.rows, st.info)
    info = st.info
    kind = info[I_KIND]
    bi = info[I_INST]
    if rc != scan.OK:
        return common.bad_frame_resync(st, rc, bi if kind == FR_UPDATE or kind == FR_SNAPSHOT
                                       else -1, tsc, VENUE_ID, common.RESYNC_RESUBSCRIBE, hdr, data)
    if kind == FR_UPDATE:
        st.book[bi, B_LAST_TSC] = tsc
        if st.book[bi, B_VALID] == 0:
            st.cnt[N_DROPPED] += 1          # waiting for a fresh snapshot
            return 0
        n = info[I_NROWS]
        if st.book[bi, K_DEPTH] < CHECKSUM_LEVELS or _touches_top(st, bi, n):
            st.book[bi, K_CRC_OK] = 0
        act = common.apply(st, st.rows, n, tsc, 0, VENUE_ID, common.RESYNC_RESUBSCRIBE, hdr, data)
        if st.book[bi, B_VALID] == 0:
            return act
        act |= _truncate(st, bi, tsc, hdr, data)
        if info[I_HAS_CRC] != 0 and st.book[bi, B_VALID] != 0:
            want = info[I_CRC]
            got = book_checksum(st, bi)
            if got == want:
                st.cnt[N_CHECKSUMS_OK] += 1
            else:
                st.cnt[N_CHECKSUMS_FAILED] += 1
                act |= common.event(st, common.EV_CHECKSUM, bi, want, got)
                act |= common.resync(st, bi, records.BR_CHECKSUM, tsc, VENUE_ID,
                                     common.RESYNC_RESUBSCRIBE, hdr, data)
        return act
    if kind == FR_SNAPSHOT:
        st.book[bi, K_CRC_OK] = 0
        if info[I_PDEC] >= 0:
            set_print(st, bi, info[I_PDEC], info[I_QDEC])
        act = common.snapshot_rebuild(st, bi, info[I_NROWS], tsc, 0, VENUE_ID,
                                      common.RESYNC_RESUBSCRIBE, hdr, data)
        if st.book[bi, B_VALID] != 0:
            act |= _truncate(st, bi, tsc, hdr, data)
        return act
    if kind == FR_TRADE:
        st.cnt[N_TRADES] += info[I_NROWS]
        return common.apply(st, st.rows, info[I_NROWS], tsc, 0, VENUE_ID,
                            common.RESYNC_RESUBSCRIBE, hdr, data)
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


def _norm(asset: str) -> str:
    return {"XBT": "BTC", "XDG": "DOGE"}.get(asset, asset)


def load_instruments(meta: bytes, symbols: list[str] | None = None) -> list[Instrument]:
    """Instruments from AssetPairs: symbol = wsname ("XBT/CHF"), tick 10**-pair_decimals,
    lot 10**-lot_decimals."""
    body = common.metadata_body(meta, "AssetPairs")
    try:
        res = orjson.loads(body)["result"]
    except (orjson.JSONDecodeError, KeyError, TypeError) as e:
        raise common.InstrumentError(f"kraken AssetPairs is not usable: {e}") from None
    out = []
    for alt, p in res.items():
        ws = p.get("wsname")
        if not ws or "/" not in ws:
            continue
        base, quote = ws.split("/", 1)
        pd = int(p.get("pair_decimals", 0))
        ld = int(p.get("lot_decimals", 0))
        tick = "1" if pd == 0 else "0." + "0" * (pd - 1) + "1"
        lot = "1" if ld == 0 else "0." + "0" * (ld - 1) + "1"
        out.append(Instrument.make(ws, f"{_norm(base)}-{_norm(quote)}", tick, lot, altname=alt,
                                   price_print_dec=pd, qty_print_dec=ld))
    return common.select(out, symbols, common.configured_l2(meta))


def subscribe_messages(instruments: list[Instrument], depth: int = BOOK_DEPTH) -> list[str]:
    pairs = [i.symbol for i in instruments]
    return [orjson.dumps({"event": "subscribe", "pair": pairs,
                          "subscription": {"name": "book", "depth": depth}}).decode(),
            orjson.dumps({"event": "subscribe", "pair": pairs,
                          "subscription": {"name": "trade"}}).decode()]


def stream_path(instruments: list[Instrument]) -> str:
    return ""


# REST order book (Depth) endpoint, any version prefix and host: /0/public/Depth?pair=XBTUSD
_SNAPSHOT_PATH = re.compile(r"^(?:/[^/]+)*?/\d+/public/Depth/?$")


def snapshot_symbol(url: str) -> str | None:
    """The pair of a REST Depth URL (Kraken's REST names, e.g. "XBTUSD"), else None. The feed
    syncs from the WebSocket book snapshot; REST snapshots are recognised, never applied."""
    u = urlsplit(url)
    if not _SNAPSHOT_PATH.match(u.path):
        return None
    q = {k.lower(): v for k, v in parse_qs(u.query).items()}
    return q["pair"][0] if q.get("pair") else None


def sim_subscribed(msg: dict) -> set[str]:
    """The pairs a client's subscribe message asks for."""
    return common.strings_at(msg, "pair")


def sim_frame_symbol(frame: bytes) -> str | None:
    """The pair a frame is about: the last string of a channel message, or the ``pair`` of a
    subscriptionStatus; None for the rest."""
    f = frame.rstrip()
    if f.startswith(b"[") and f.endswith(b'"]'):
        start = f.rfind(b'"', 0, len(f) - 2)
        return f[start + 1:len(f) - 2].decode(errors="replace") if start >= 0 else None
    if f.startswith(b"{") and b'"subscriptionStatus"' in f:
        return common.string_after(f, b'"pair":"')
    return None


WARM_FRAMES = (
    b'{"connectionID":1,"event":"systemStatus","status":"online","version":"1.0.0"}',
    b'{"channelID":1,"channelName":"book-1000","event":"subscriptionStatus","pair":"ABC/USD",'
    b'"status":"subscribed","subscription":{"depth":1000,"name":"book"}}',
    b'[1,{"as":[["1.10000","0.50000000","1.0"]],"bs":[["1.00000","2.00000000","1.0"]]},'
    b'"book-1000","ABC/USD"]',
    b'[1,{"a":[["1.20000","0.30000000","1.1"]],"c":"12345"},"book-1000","ABC/USD"]',
    b'[2,[["1.05000","1.00000000","1.0","b","l",""]],"trade","ABC/USD"]',
    b'{"event":"heartbeat"}',
    b'[1,{"a":[["1.20000"',
)


class Feed(common.BaseFeed):
    NAME = NAME
    VENUE_ID = VENUE_ID
    EXTRA_COUNTERS = ("snapshots", "truncated")
    SCRATCH = CHECKSUM_LEVELS * 2 * 2 * 24
    handle = staticmethod(handle_frame)
    pump = staticmethod(pump)
    WARM_INSTRUMENT = ("ABC/USD", "ABC-USD", "0.00001", "0.00000001")
    WARM_FRAMES = WARM_FRAMES

    def __init__(self, instruments, writer, book_cap: int | None = None):
        super().__init__(instruments, writer, book_cap)
        for b, ins in enumerate(self.instruments):
            self.st.book[b, K_DEPTH] = BOOK_DEPTH
            set_print(self.st, b, ins.extra.get("price_print_dec", ins.price_dec),
                      ins.extra.get("qty_print_dec", ins.qty_dec))

    def ping_frame(self) -> str | None:
        return '{"event":"ping"}'

    def on_event(self, ev: dict, tsc: int) -> None:
        kind = ev.get("event")
        if kind == "subscriptionStatus":
            if ev.get("status") == "error":
                self.counters.errors += 1
                self.log.error("kraken subscription error: %s", ev.get("errorMessage"))
                return
            sub = ev.get("subscription") or {}
            b = self.index.get(ev.get("pair"))
            if b is not None and sub.get("name") == "book" and sub.get("depth"):
                self.st.book[b, K_DEPTH] = int(sub["depth"])
        else:
            self.counters.ignored += 1      # systemStatus, pong, ...


warm = Feed.warm
