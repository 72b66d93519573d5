"""What every venue module shares: instruments, counters, the record writer, the compiled
apply-and-publish step and the book-sync base class.

The venue module interface (the gateway, the simulator and replay code against exactly this;
``appliance/venues/<venue>.py`` exposes)::

    NAME: str                                   e.g. "binance"
    VENUE_ID: int                               records.VENUE_*
    load_instruments(meta: bytes, symbols: list[str] | None) -> list[Instrument]
        from the venue metadata (the recording's X.0 body); instrument id = list index.
        ``symbols`` are venue symbols (or the recording's "BASE-QUOTE" names); None = every one
        the metadata's trailing ``configuration:`` line names, else all.
    subscribe_messages(instruments) -> list[str]  text frames to send after connect
    stream_path(instruments) -> str               path+query appended to the ws base URL
    class Feed(BaseFeed):
        Feed(instruments, writer)
        on_frame(frame: bytes, recv_tsc: int) -> None     parse + book sync + publish; bad input
                                                          is counted, logged and resynced, never
                                                          raised
        snapshot_requests() -> list[(symbol, REST path+query)]   snapshots needed now
        on_snapshot(symbol, body: bytes, recv_tsc) -> None
        wants_resubscribe() -> bool             a checksum failure or gap asks for a resubscribe
                                                (reading it clears the request)
        on_disconnect() -> None                 every book -> invalid (BR_DISCONNECT)
        on_reconnect() -> None
        check_stale(now_tsc, stale_ns) -> None  books silent for stale_ns -> invalid (BR_STALE)
        ping_frame() -> str | None              application-level ping, if the venue needs one
        counters: Counters
        top(symbol, depth=10) -> {"bids": [[price, qty], ...], "asks": [...]}  decimal strings

How a frame flows: the venue's compiled ``parse_*`` function scans the raw bytes into rows of
``rows`` (int64[MAX_ROWS, 8], one row per level / trade / ticker, columns R_*) and frame facts
into ``info``; the venue's Python ``on_frame`` checks the sequence rules on ``info`` (a few
comparisons per frame, never a loop over levels) and calls ``apply_rows``, which updates the
compiled books and writes every record straight into the md ring with ``ring.begin_write`` /
``ring.end_write`` (L2_UPDATE, TRADE, BBO, then one BATCH_END per book touched). Nothing of a
frame is published unless the whole frame parsed, so a malformed frame never leaves half an
update on the ring. Book validity changes go out as RT_BOOK_STATUS records (BOOK_INVALID with a
BR_* reason until the book is resynchronised, then BOOK_VALID).

Every record carries ``origin_tsc`` = the frame's ``recv_tsc`` (replay passes the recording's
receive time in ns).

All compiled parse/apply kernels allocate nothing and are compiled with ``_nrt=False`` (no
reference counting on the per-frame path); scratch space (rows, info, symbol tables) is owned by
the Feed and passed in.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

import numpy as np
from numba import njit

from appliance.engine import book
from appliance.transport import records, ring
from appliance.venues import scan

MAX_ROWS = 8192          # rows one frame may produce (a 1000-level snapshot per side fits)
BOOK_CAP = 4096          # levels per side kept per book
INFO_WORDS = 16

# row columns
R_KIND = 0
R_INST = 1
R_SIDE = 2
R_PRICE = 3
R_QTY = 4
R_SEQ = 5
R_AUX1 = 6
R_AUX2 = 7
# row kinds: the record type they become
K_L2 = records.RT_L2_UPDATE
K_TRADE = records.RT_TRADE
K_BBO = records.RT_BBO

# apply_rows result bits
A_CROSSED = 1        # a touched book is crossed after the frame
A_BAD_ROW = 2        # a row was rejected by the book (bad price/qty)
A_FAILED = A_CROSSED | A_BAD_ROW

_L2 = records.L2_UPDATE
_TRADE = records.TRADE
_BATCH = records.BATCH_END
_BBO = records.BBO
_STATUS = records.BOOK_STATUS


class InstrumentError(ValueError):
    """Venue metadata does not describe a usable instrument."""


class OffGridError(ValueError):
    """A decimal string is not a whole number of ticks / lots."""


def grid(step: str) -> tuple[int, int]:
    """(decimals, step in 10**-decimals units) of a tick or lot size given as a decimal string."""
    try:
        d = Decimal(step)
    except InvalidOperation:
        raise InstrumentError(f"grid step {step!r} is not a decimal number") from None
    if not d.is_finite() or d <= 0:
        raise InstrumentError(f"grid step {step!r} must be a positive decimal")
    text = step.strip()
    dec = len(text.split(".", 1)[1]) if "." in text and "e" not in text.lower() else 0
    dec = max(dec, -d.normalize().as_tuple().exponent)
    units = d.scaleb(dec)
    if units != units.to_integral_value():
        raise InstrumentError(f"grid step {step!r} does not fit {dec} decimals")
    return dec, int(units)


def to_grid(text: str, dec: int, step: int) -> int:
    """Decimal string -> whole grid steps, exactly (no float); OffGridError if it does not fit."""
    try:
        d = Decimal(text)
    except InvalidOperation:
        raise OffGridError(f"{text!r} is not a decimal number") from None
    units = d.scaleb(dec)
    if units != units.to_integral_value() or int(units) % step:
        raise OffGridError(f"{text!r} is not a multiple of {Decimal(step).scaleb(-dec)}")
    return int(units) // step


def from_grid(v: int, dec: int, step: int) -> str:
    """Grid steps -> decimal string with ``dec`` decimals (the venue's usual formatting)."""
    u = int(v) * step
    neg = u < 0
    u = abs(u)
    if dec == 0:
        s = str(u)
    else:
        digits = str(u).rjust(dec + 1, "0")
        s = digits[:-dec] + "." + digits[-dec:]
    return "-" + s if neg else s


@dataclass(frozen=True)
class Instrument:
    """One tradable instrument of a venue; prices in ticks, quantities in lots."""
    symbol: str                  # the venue's symbol as it appears in frames (e.g. "NKNUSDT")
    name: str                    # "BASE-QUOTE"
    tick: str                    # tick size as the metadata gives it
    lot: str                     # lot size as the metadata gives it
    price_dec: int
    price_step: int              # tick in 10**-price_dec units
    qty_dec: int
    qty_step: int
    extra: dict = field(default_factory=dict, compare=False)   # per-venue facts (REST symbol...)

    @classmethod
    def make(cls, symbol: str, name: str, tick: str, lot: str, **extra) -> "Instrument":
        pd, ps = grid(tick)
        qd, qs = grid(lot)
        return cls(symbol, name, tick, lot, pd, ps, qd, qs, dict(extra))

    def price_ticks(self, text: str) -> int:
        return to_grid(text, self.price_dec, self.price_step)

    def qty_lots(self, text: str) -> int:
        return to_grid(text, self.qty_dec, self.qty_step)

    def price_str(self, ticks: int) -> str:
        return from_grid(ticks, self.price_dec, self.price_step)

    def qty_str(self, lots: int) -> str:
        return from_grid(lots, self.qty_dec, self.qty_step)


def grid_arrays(instruments: list[Instrument]) -> np.ndarray:
    """int64[N, 4]: price_dec, price_step, qty_dec, qty_step per instrument (parser argument)."""
    g = np.zeros((max(len(instruments), 1), 4), np.int64)
    for i, ins in enumerate(instruments):
        g[i] = (ins.price_dec, ins.price_step, ins.qty_dec, ins.qty_step)
    return g


def select(instruments: list[Instrument], symbols: list[str] | None,
           configured: list[str] | None) -> list[Instrument]:
    """Pick instruments by venue symbol or BASE-QUOTE name, keeping the requested order."""
    want = symbols if symbols is not None else configured
    if want is None:
        return instruments
    by = {}
    for ins in instruments:
        by.setdefault(ins.symbol, ins)
        by.setdefault(ins.name, ins)
    out = []
    for s in want:
        if s not in by:
            raise InstrumentError(f"instrument {s!r} is not in the venue metadata")
        if by[s] not in out:
            out.append(by[s])
    return out


def configured_l2(meta: bytes) -> list[str] | None:
    """The l2_book list of a recording's trailing ``configuration: {...}`` line, if any."""
    import orjson
    idx = meta.rfind(b"\nconfiguration: ")
    if idx < 0 and meta.startswith(b"configuration: "):
        idx = -1
    elif idx < 0:
        return None
    try:
        conf = orjson.loads(meta[idx + 16:].strip())
    except orjson.JSONDecodeError:
        return None
    got = conf.get("l2_book") or conf.get("trades")
    return list(got) if got else None


def metadata_body(meta: bytes, url_part: str) -> bytes:
    """The body of the line of an X.0 metadata file whose URL contains ``url_part``; a bare JSON
    body is returned as is."""
    s = meta.lstrip()
    if s[:1] in (b"{", b"["):
        return s
    for line in meta.splitlines():
        head, sep, body = line.partition(b": ")
        if sep and b" -> " in head and url_part.encode() in head:
            return body
    raise InstrumentError(f"metadata has no response from a URL containing {url_part!r}")


class Counters:
    """Per-feed counters (plain ints, read by the gateway's telemetry and by replay)."""
    BASE = ("frames", "records", "gaps", "resyncs", "checksums_ok", "checksums_failed", "errors")

    def __init__(self, *extras: str):
        self._names = self.BASE + tuple(extras)
        for n in self._names:
            setattr(self, n, 0)

    def as_dict(self) -> dict:
        return {n: getattr(self, n) for n in self._names}

    def __repr__(self) -> str:
        return "Counters(" + ", ".join(f"{k}={v}" for k, v in self.as_dict().items()) + ")"


class RecordWriter:
    """The md ring a feed publishes into: ``hdr``/``data`` of a ring.RingWriter (gateway) or of
    ``ring.local_ring`` (replay, tests)."""

    def __init__(self, hdr: np.ndarray, data: np.ndarray):
        if data.ndim != 2 or data.shape[1] != records.MD_RECORD_SIZE:
            raise ValueError(f"md ring must hold {records.MD_RECORD_SIZE}-byte records, "
                             f"got shape {data.shape}")
        self.hdr = hdr
        self.data = data

    @classmethod
    def local(cls, capacity: int = 1 << 16) -> "RecordWriter":
        hdr, data = ring.local_ring(records.MD_RECORD_SIZE, capacity)
        return cls(hdr, data)

    @classmethod
    def of(cls, ring_writer) -> "RecordWriter":
        return cls(ring_writer.hdr, ring_writer.data)


# --- compiled publishing --------------------------------------------------------------------

@njit(cache=True, nogil=True, _nrt=False)
def _head(hdr, data, slot, rtype, venue, inst, flags, tsc):
    r = data[slot].view(_L2)
    r[0].rtype = rtype
    r[0].venue = venue
    r[0].flags = flags
    r[0].instrument = inst
    r[0].origin_tsc = tsc


@njit(cache=True, nogil=True, _nrt=False)
def publish_status(hdr, data, venue, inst, status, reason, venue_seq, tsc):
    """One RT_BOOK_STATUS record."""
    slot = ring.begin_write(hdr, data)
    _head(hdr, data, slot, records.RT_BOOK_STATUS, venue, inst, 0, tsc)
    r = data[slot].view(_STATUS)
    r[0].venue_seq = venue_seq
    r[0].status = status
    r[0].reason = reason
    ring.end_write(hdr, data, slot)


@njit(cache=True, nogil=True, _nrt=False)
def apply_rows(rows, n, px, qty, nb, venue, tsc, flags, hdr, data, touched, res):
    """Apply rows[0:n] to the books and publish their records, then one BATCH_END per book that
    L2 rows touched (``touched`` is a scratch uint8[B] array, zero on entry and on return).

    res (int64[4]) receives: [0] records published, [1] result bits A_*, [2] first crossed book
    (-1 if none), [3] first book with a rejected row (-1 if none)."""
    res[0] = 0
    res[1] = 0
    res[2] = -1
    res[3] = -1
    cnt = 0
    nl = 0
    last_inst = -1
    last_seq = 0
    for k in range(n):
        kind = rows[k, R_KIND]
        inst = rows[k, R_INST]
        if kind == K_L2:
            side = rows[k, R_SIDE]
            rc = book.update(px, qty, nb, inst, side - 1, rows[k, R_PRICE], rows[k, R_QTY])
            if rc == book.BAD_ARG:
                res[1] |= A_BAD_ROW
                if res[3] < 0:
                    res[3] = inst
                continue
            slot = ring.begin_write(hdr, data)
            _head(hdr, data, slot, records.RT_L2_UPDATE, venue, inst, flags, tsc)
            r = data[slot].view(_L2)
            r[0].price = rows[k, R_PRICE]
            r[0].qty = rows[k, R_QTY]
            r[0].venue_seq = rows[k, R_SEQ]
            r[0].side = side
            ring.end_write(hdr, data, slot)
            cnt += 1
            nl += 1
            touched[inst] = 1
            last_inst = inst
            last_seq = rows[k, R_SEQ]
        elif kind == K_TRADE:
            slot = ring.begin_write(hdr, data)
            _head(hdr, data, slot, records.RT_TRADE, venue, inst, 0, tsc)
            t = data[slot].view(_TRADE)
            t[0].price = rows[k, R_PRICE]
            t[0].qty = rows[k, R_QTY]
            t[0].trade_id = rows[k, R_SEQ]
            t[0].side = rows[k, R_SIDE]
            ring.end_write(hdr, data, slot)
            cnt += 1
        elif kind == K_BBO:
            slot = ring.begin_write(hdr, data)
            _head(hdr, data, slot, records.RT_BBO, venue, inst, 0, tsc)
            q = data[slot].view(_BBO)
            q[0].bid_price = rows[k, R_PRICE]
            q[0].bid_qty = rows[k, R_QTY]
            q[0].ask_price = rows[k, R_AUX1]
            q[0].ask_qty = rows[k, R_AUX2]
            ring.end_write(hdr, data, slot)
            cnt += 1
    if nl > 0:
        # one BATCH_END per touched book (usually one); the last carries F_LAST
        for b in range(touched.shape[0]):
            if touched[b] == 0:
                continue
            touched[b] = 0
            nbid = nb[b, 0]
            nask = nb[b, 1]
            bid = px[b, 0, nbid - 1] if nbid > 0 else 0
            ask = px[b, 1, nask - 1] if nask > 0 else 0
            if nbid > 0 and nask > 0 and bid >= ask:
                res[1] |= A_CROSSED
                if res[2] < 0:
                    res[2] = b
            slot = ring.begin_write(hdr, data)
            fl = flags
            if b == last_inst:
                fl |= records.F_LAST
            _head(hdr, data, slot, records.RT_BATCH_END, venue, b, fl, tsc)
            e = data[slot].view(_BATCH)
            e[0].bid_price = bid
            e[0].ask_price = ask
            e[0].venue_seq = last_seq
            e[0].n_updates = nl
            ring.end_write(hdr, data, slot)
            cnt += 1
    res[0] = cnt
    return cnt


@njit(cache=True, nogil=True, _nrt=False)
def parse_levels(b, i, end, dec_p, step_p, dec_q, step_q, inst, side, side_elem, p_elem,
                 q_elem, seq, rows, n):
    """Parse a JSON array of level arrays at b[i] (``[[p, q, ...], ...]``) into K_L2 rows from
    rows[n]. Element ``p_elem`` is the price, ``q_elem`` the quantity; when ``side_elem`` >= 0
    that element is a string whose first letter gives the side (b[uy]/b[id] or s[ell]/a[sk]/o),
    else every level gets ``side``. Returns (new n, next index, rc)."""
    i = scan.skip_ws(b, i, end)
    if i >= end or b[i] != 91:
        return n, i, scan.E_SYNTAX
    i = scan.skip_ws(b, i + 1, end)
    if i < end and b[i] == 93:
        return n, i + 1, scan.OK
    while i < end:
        if b[i] != 91:
            return n, i, scan.E_SYNTAX
        if n >= rows.shape[0]:
            return n, i, scan.E_FULL
        i += 1
        el = 0
        p = 0
        q = 0
        got = 0
        s = side
        while True:
            i = scan.skip_ws(b, i, end)
            if i >= end:
                return n, i, scan.E_SYNTAX
            if el == p_elem:
                p, i, rc = scan.parse_grid(b, i, end, dec_p, step_p)
                if rc != 0:
                    return n, i, rc
                got |= 1
            elif el == q_elem:
                q, i, rc = scan.parse_grid(b, i, end, dec_q, step_q)
                if rc != 0:
                    return n, i, rc
                got |= 2
            elif el == side_elem:
                ss, se, i = scan.string_span(b, i, end)
                if ss < 0 or se == ss:
                    return n, i, scan.E_SYNTAX
                c = b[ss]
                if c == 98:            # b: buy / bid
                    s = records.SIDE_BUY
                elif c == 115 or c == 97 or c == 111:   # s: sell, a: ask, o: offer
                    s = records.SIDE_SELL
                else:
                    return n, i, scan.E_SYNTAX
                got |= 4
            else:
                i = scan.skip_value(b, i, end)
                if i < 0:
                    return n, end, scan.E_SYNTAX
            el += 1
            i = scan.skip_ws(b, i, end)
            if i >= end:
                return n, i, scan.E_SYNTAX
            if b[i] == 44:
                i += 1
                continue
            if b[i] == 93:
                i += 1
                break
            return n, i, scan.E_SYNTAX
        if (got & 3) != 3 or (side_elem >= 0 and (got & 4) == 0) or q < 0:
            return n, i, scan.E_SYNTAX
        rows[n, R_KIND] = K_L2
        rows[n, R_INST] = inst
        rows[n, R_SIDE] = s
        rows[n, R_PRICE] = p
        rows[n, R_QTY] = q
        rows[n, R_SEQ] = seq
        rows[n, R_AUX1] = 0
        rows[n, R_AUX2] = 0
        n += 1
        i = scan.skip_ws(b, i, end)
        if i >= end:
            return n, i, scan.E_SYNTAX
        if b[i] == 44:
            i = scan.skip_ws(b, i + 1, end)
            continue
        if b[i] == 93:
            return n, i + 1, scan.OK
        return n, i, scan.E_SYNTAX
    return n, i, scan.E_SYNTAX


@njit(cache=True, nogil=True, _nrt=False)
def stale_books(last_tsc, valid, now_tsc, stale_ticks, out):
    """Indices of valid books whose last frame is older than stale_ticks into out; returns count."""
    m = 0
    for b in range(last_tsc.shape[0]):
        if valid[b] != 0 and last_tsc[b] != 0 and now_tsc - last_tsc[b] > stale_ticks:
            out[m] = b
            m += 1
    return m


# --- the shared book-sync base class ------------------------------------------------------------

class BaseFeed:
    """State every venue feed keeps: books, validity, counters, the writer, logging.

    Subclasses implement ``on_frame`` and the venue's sync rules, calling ``_apply``,
    ``_invalidate``, ``_validate``, ``_reset_book`` and ``_bad``."""
    NAME = "venue"
    VENUE_ID = records.VENUE_NONE
    EXTRA_COUNTERS: tuple = ()
    LOG_FIRST = 20            # log the first N bad frames, then one in LOG_EVERY
    LOG_EVERY = 1000

    ROWS = MAX_ROWS           # rows one frame may produce (venues with full-book snapshots raise it)
    CAP = BOOK_CAP            # levels per side kept per book

    def __init__(self, instruments: list[Instrument], writer: RecordWriter, book_cap: int | None = None):
        if not instruments:
            raise InstrumentError(f"{self.NAME}: no instruments to subscribe")
        self.instruments = list(instruments)
        self.writer = writer
        self.index = {ins.symbol: i for i, ins in enumerate(self.instruments)}
        nb = len(self.instruments)
        self.book_cap = book_cap or self.CAP
        self.px, self.qty, self.nb = book.new_books(nb, self.book_cap)
        self.rows = np.zeros((max(self.ROWS, 2 * self.book_cap), 8), np.int64)
        self.info = np.zeros(INFO_WORDS, np.int64)
        self.res = np.zeros(4, np.int64)
        self.touched = np.zeros(nb, np.uint8)
        self.grids = grid_arrays(self.instruments)
        self.syms, self.sym_lens = scan.symbol_table([i.symbol for i in self.instruments])
        self.valid = np.zeros(nb, np.uint8)
        self.status_sent = np.zeros(nb, np.int64)     # last status published (0 none)
        self.last_tsc = np.zeros(nb, np.int64)
        self.counters = Counters("dropped", "ignored", "off_grid", "crossed", "stale",
                                 "heartbeats", "trades", *self.EXTRA_COUNTERS)
        self.log = logging.getLogger(f"appliance.venues.{self.NAME}")
        self._resubscribe = False
        self._bad_logged = 0
        self._stale_out = np.zeros(nb, np.int64)
        self._cal = None

    # -- status --------------------------------------------------------------------------------
    def _invalidate(self, b: int, reason: int, tsc: int, seq: int = 0) -> None:
        """Book b cannot be trusted: publish BOOK_INVALID(reason) once per invalid period."""
        was = self.valid[b]
        self.valid[b] = 0
        if was or self.status_sent[b] != records.BOOK_INVALID:
            publish_status(self.writer.hdr, self.writer.data, self.VENUE_ID, b,
                           records.BOOK_INVALID, reason, seq, tsc)
            self.status_sent[b] = records.BOOK_INVALID
            self.counters.records += 1

    def _validate(self, b: int, tsc: int, seq: int = 0) -> None:
        if not self.valid[b]:
            self.valid[b] = 1
            publish_status(self.writer.hdr, self.writer.data, self.VENUE_ID, b,
                           records.BOOK_VALID, records.BR_NONE, seq, tsc)
            self.status_sent[b] = records.BOOK_VALID
            self.counters.records += 1

    def _reset_book(self, b: int) -> None:
        book.clear(self.px, self.qty, self.nb, b)

    def is_valid(self, symbol: str) -> bool:
        return bool(self.valid[self.index[symbol]])

    # -- applying ------------------------------------------------------------------------------
    def _apply(self, n: int, tsc: int, flags: int = 0) -> int:
        """Apply rows[0:n] and publish; a crossed or rejected book is invalidated and resynced.
        Returns the result bits (callers stop on A_CROSSED | A_BAD_ROW: the book was resynced)."""
        w = self.writer
        apply_rows(self.rows, n, self.px, self.qty, self.nb, self.VENUE_ID, tsc, flags,
                   w.hdr, w.data, self.touched, self.res)
        self.counters.records += int(self.res[0])
        bits = int(self.res[1])
        if bits & A_BAD_ROW:
            b = int(self.res[3])
            self.counters.errors += 1
            self.log.warning("%s %s: the book rejected a level (non-positive price or negative "
                             "quantity); resyncing", self.NAME, self.instruments[b].symbol)
            self._resync(b, records.BR_BAD_FRAME, tsc)
        if bits & A_CROSSED:
            b = int(self.res[2])
            self.counters.crossed += 1
            self.log.warning("%s %s: book crossed (bid %s >= ask %s); resyncing", self.NAME,
                             self.instruments[b].symbol,
                             self.instruments[b].price_str(book.best(self.px, self.qty, self.nb, b, 0)[0]),
                             self.instruments[b].price_str(book.best(self.px, self.qty, self.nb, b, 1)[0]))
            self._resync(b, records.BR_CROSSED, tsc)
        return bits

    def _resync(self, b: int, reason: int, tsc: int) -> None:
        """Venue-specific: mark invalid and start getting a fresh book (snapshot/resubscribe)."""
        self._invalidate(b, reason, tsc)
        self.counters.resyncs += 1
        self._resubscribe = True

    def _bad(self, frame: bytes, rc: int, what: str = "") -> None:
        """Count and log (rate-limited, truncated) a frame we could not use."""
        self.counters.errors += 1
        if rc == scan.E_OFF_GRID:
            self.counters.off_grid += 1
        self._bad_logged += 1
        if self._bad_logged <= self.LOG_FIRST or self._bad_logged % self.LOG_EVERY == 0:
            self.log.warning("%s: bad frame (%s%s): %r", self.NAME, scan.ERROR_NAMES.get(rc, rc),
                             f", {what}" if what else "", bytes(frame[:200]))

    # -- interface -----------------------------------------------------------------------------
    def snapshot_requests(self) -> list[tuple[str, str]]:
        return []

    def on_snapshot(self, symbol: str, body: bytes, recv_tsc: int) -> None:
        self.counters.ignored += 1

    def wants_resubscribe(self) -> bool:
        r = self._resubscribe
        self._resubscribe = False
        return r

    def on_disconnect(self) -> None:
        for b in range(len(self.instruments)):
            self._invalidate(b, records.BR_DISCONNECT, int(self.last_tsc[b]))

    def on_reconnect(self) -> None:
        for b in range(len(self.instruments)):
            self._reset_book(b)
            self.valid[b] = 0
            self.last_tsc[b] = 0

    def check_stale(self, now_tsc: int, stale_ns: int) -> None:
        if self._cal is None:
            from appliance.transport import clock
            self._cal = clock.calibration()
        ticks_per_s = int(self._cal[2]) if int(self._cal[2]) > 0 else 1_000_000_000
        stale_ticks = stale_ns * ticks_per_s // 1_000_000_000
        m = stale_books(self.last_tsc, self.valid, now_tsc, stale_ticks, self._stale_out)
        for k in range(m):
            b = int(self._stale_out[k])
            self.counters.stale += 1
            self.log.warning("%s %s: no data for %.1f s; book marked stale", self.NAME,
                             self.instruments[b].symbol, stale_ns / 1e9)
            self._resync(b, records.BR_STALE, now_tsc)

    def ping_frame(self) -> str | None:
        return None

    def top(self, symbol: str, depth: int = 10) -> dict:
        b = self.index[symbol]
        ins = self.instruments[b]
        out = {}
        for side, key in ((0, "bids"), (1, "asks")):
            levels = []
            for k in range(min(depth, int(self.nb[b, side]))):
                p, q = book.level(self.px, self.qty, self.nb, b, side, k)
                levels.append([ins.price_str(p), ins.qty_str(q)])
            out[key] = levels
        return out

    def book_levels(self, b: int, side: int) -> list[tuple[int, int]]:
        """All levels of a side as (ticks, lots), best first (tests, tools)."""
        return book.side_levels(self.px, self.qty, self.nb, b, side)
