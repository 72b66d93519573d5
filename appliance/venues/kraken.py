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
"""
from __future__ import annotations

import numpy as np
import orjson
from numba import njit

from appliance.transport import records
from appliance.venues import common, scan
from appliance.venues.common import K_L2, K_TRADE, R_INST, R_KIND, R_PRICE, R_QTY, R_SEQ, R_SIDE, Instrument

NAME = "kraken"
VENUE_ID = records.VENUE_KRAKEN
# REST paths of the instrument metadata (the ``X.0`` files of the recordings hold these responses)
METADATA_PATHS = ("/0/public/AssetPairs",)
BOOK_DEPTH = 1000
CHECKSUM_LEVELS = 10

I_KIND = 0
I_INST = 1
I_NROWS = 2
I_HAS_CRC = 3
I_CRC = 4
FR_OTHER = 0
FR_EVENT = 1
FR_SNAPSHOT = 2
FR_UPDATE = 3
FR_TRADE = 4

_EL0 = 8           # info[8:16]: start index of each top-level element
_MAX_EL = 8
_L_BOOK = scan.lit("book")
_L_TRADE = scan.lit("trade")


def _crc_table() -> np.ndarray:
    t = np.zeros(256, np.uint32)
    for n in range(256):
        c = n
        for _ in range(8):
            c = (0xEDB88320 ^ (c >> 1)) if c & 1 else (c >> 1)
        t[n] = c
    return t


CRC_TABLE = _crc_table()


@njit(cache=True, nogil=True, _nrt=False)
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
            n, i, rc = common.parse_levels(b, i, end, dp, sp, dq, sq, inst, side, -1, 0, 1, 0,
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


@njit(cache=True, nogil=True, _nrt=False)
def parse_frame(b, end, syms, lens, grids, rows, info):
    """Parse one Kraken frame into rows; info[I_*] says what it was. Returns rc."""
    info[I_KIND] = FR_OTHER
    info[I_INST] = -1
    info[I_NROWS] = 0
    info[I_HAS_CRC] = 0
    info[I_CRC] = 0
    i = scan.skip_ws(b, 0, end)
    if i >= end:
        return scan.E_SYNTAX
    if b[i] == 123:
        info[I_KIND] = FR_EVENT
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
        n, _, rc = common.parse_levels(b, info[_EL0 + 1], end, grids[inst, 0], grids[inst, 1],
                                       grids[inst, 2], grids[inst, 3], inst, 0, 3, 0, 1, 0,
                                       rows, 0)
        if rc != 0:
            return rc
        for k in range(n):
            rows[k, R_KIND] = K_TRADE
        info[I_KIND] = FR_TRADE
        info[I_NROWS] = n
        return scan.OK
    return scan.OK


@njit(cache=True, nogil=True, _nrt=False)
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


@njit(cache=True, nogil=True, _nrt=False)
def _put_digits(v, buf, m):
    """Decimal digits of v > 0 (no leading zeros) appended at buf[m]; returns new m."""
    if v <= 0:
        return m
    nd = 0
    t = v
    while t > 0:
        nd += 1
        t //= 10
    k = m + nd - 1
    while v > 0:
        buf[k] = 48 + v % 10
        v //= 10
        k -= 1
    return m + nd


@njit(cache=True, nogil=True, _nrt=False)
def checksum(px, qty, nb, b, scale, buf, table):
    """Kraken's CRC32 of book b. ``scale`` = int64[4]: price mul, price div, qty mul, qty div
    turning ticks/lots into the printed digits."""
    m = 0
    for s in (1, 0):
        cnt = nb[b, s]
        top = cnt - CHECKSUM_LEVELS
        if top < 0:
            top = 0
        k = cnt - 1
        while k >= top:
            m = _put_digits(px[b, s, k] * scale[0] // scale[1], buf, m)
            m = _put_digits(qty[b, s, k] * scale[2] // scale[3], buf, m)
            k -= 1
    c = np.uint32(0xFFFFFFFF)
    for k in range(m):
        c = table[(c ^ buf[k]) & np.uint32(0xFF)] ^ (c >> np.uint32(8))
    return np.int64(c ^ np.uint32(0xFFFFFFFF))


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


def _decimals(s: str) -> int:
    return len(s.split(".", 1)[1]) if "." in s else 0


class Feed(common.BaseFeed):
    NAME = NAME
    VENUE_ID = VENUE_ID
    EXTRA_COUNTERS = ("snapshots", "truncated")

    def __init__(self, instruments, writer, book_cap: int | None = None):
        super().__init__(instruments, writer, book_cap)
        nb = len(self.instruments)
        self.depth = [BOOK_DEPTH] * nb
        self.scale = np.zeros((nb, 4), np.int64)
        for b, ins in enumerate(self.instruments):
            self._set_print(b, ins.extra.get("price_print_dec", ins.price_dec),
                            ins.extra.get("qty_print_dec", ins.qty_dec))
        self.crc_buf = np.zeros(CHECKSUM_LEVELS * 2 * 2 * 24, np.uint8)
        self.trunc_rows = np.zeros((2 * self.book_cap, 8), np.int64)

    def _set_print(self, b: int, pdec: int, qdec: int) -> None:
        ins = self.instruments[b]
        row = []
        for dec, step, pr in ((ins.price_dec, ins.price_step, pdec), (ins.qty_dec, ins.qty_step, qdec)):
            if pr >= dec:
                row += [step * 10 ** (pr - dec), 1]
            else:
                row += [step, 10 ** (dec - pr)]
        self.scale[b] = row

    def ping_frame(self) -> str | None:
        return '{"event":"ping"}'

    def _on_event(self, frame: bytes) -> None:
        try:
            ev = orjson.loads(frame)
        except orjson.JSONDecodeError:
            self._bad(frame, scan.E_SYNTAX, "event")
            return
        kind = ev.get("event") if isinstance(ev, dict) else None
        if kind == "heartbeat":
            self.counters.heartbeats += 1
        elif kind == "subscriptionStatus":
            if ev.get("status") == "error":
                self.counters.errors += 1
                self.log.error("kraken subscription error: %s", ev.get("errorMessage"))
                return
            sub = ev.get("subscription") or {}
            b = self.index.get(ev.get("pair"))
            if b is not None and sub.get("name") == "book" and sub.get("depth"):
                self.depth[b] = int(sub["depth"])
        elif kind in ("systemStatus", "pong"):
            self.counters.ignored += 1
        else:
            self.counters.ignored += 1

    def on_frame(self, frame: bytes, recv_tsc: int) -> None:
        self.counters.frames += 1
        buf = np.frombuffer(frame, np.uint8)
        rc = parse_frame(buf, len(buf), self.syms, self.sym_lens, self.grids, self.rows, self.info)
        info = self.info
        kind = int(info[I_KIND])
        b = int(info[I_INST])
        if rc != scan.OK:
            self._bad(frame, rc)
            if b >= 0 and b'"book' in frame:
                self._resync(b, records.BR_BAD_FRAME, recv_tsc)
            return
        if kind == FR_EVENT:
            self._on_event(frame)
        elif kind == FR_SNAPSHOT:
            self._on_snapshot_frame(frame, b, recv_tsc)
        elif kind == FR_UPDATE:
            self._on_update(b, recv_tsc)
        elif kind == FR_TRADE:
            self.counters.trades += int(info[I_NROWS])
            self._apply(int(info[I_NROWS]), recv_tsc)
        else:
            self.counters.ignored += 1

    def _on_snapshot_frame(self, frame: bytes, b: int, tsc: int) -> None:
        # learn how Kraken prints this pair (rare frame: orjson is fine here)
        try:
            payload = orjson.loads(frame)[1]
            lvl = (payload.get("as") or payload.get("bs"))[0]
            self._set_print(b, _decimals(lvl[0]), _decimals(lvl[1]))
        except (orjson.JSONDecodeError, IndexError, TypeError, AttributeError):
            pass
        self.counters.snapshots += 1
        self.last_tsc[b] = tsc
        self._reset_book(b)
        if self._apply(int(self.info[I_NROWS]), tsc, records.F_SNAPSHOT) & common.A_FAILED:
            return
        self._truncate(b, tsc)
        self._validate(b, tsc)

    def _truncate(self, b: int, tsc: int) -> None:
        m = truncate_rows(self.px, self.nb, b, self.depth[b], self.trunc_rows)
        if m:
            self.counters.truncated += m
            self.rows[:m] = self.trunc_rows[:m]
            self._apply(m, tsc)

    def _on_update(self, b: int, tsc: int) -> None:
        self.last_tsc[b] = tsc
        if not self.valid[b]:
            self.counters.dropped += 1      # waiting for a fresh snapshot
            return
        has_crc = int(self.info[I_HAS_CRC])
        want = int(self.info[I_CRC])
        self._apply(int(self.info[I_NROWS]), tsc)
        if not self.valid[b]:
            return
        self._truncate(b, tsc)
        if has_crc:
            got = int(checksum(self.px, self.qty, self.nb, b, self.scale[b], self.crc_buf, CRC_TABLE))
            if got == want:
                self.counters.checksums_ok += 1
            else:
                self.counters.checksums_failed += 1
                self.log.warning("kraken %s: checksum mismatch (venue %d, book %d); resubscribing",
                                 self.instruments[b].symbol, want, got)
                self._resync(b, records.BR_CHECKSUM, tsc)
