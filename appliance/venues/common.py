"""What every venue module shares: instruments, the feed state, the compiled apply-and-publish
step, the compiled status/resync/event helpers, and the Python side of a feed (``BaseFeed``).

Every venue is one module of this package with the same shape (NautilusTrader's adapters as the
model; the list of venues is :mod:`appliance.venues.registry`)::

    NAME, VENUE_ID, METADATA_PATHS              name, records.VENUE_*, REST metadata paths
    parse_frame(b, end, ..., rows, info) -> rc  compiled scan of one frame into rows (scan.* codes)
    handle_frame(b, end, tsc, st, hdr, data) -> act
                                                compiled: parse + sequence/sync rules + book apply
                                                + BBO/BATCH_END records + publish, one call per frame
    pump(fd, rx, ws, st, hdr, data, max_iters, lat, cal) -> code
                                                compiled: recv + WebSocket deframing
                                                (:mod:`wsframe`) + handle_frame for every frame
                                                (``pump_frames``); ``lat`` is the hist row that
                                                gets frame_to_publish, ``cal`` the clock's
    load_instruments(meta, symbols) -> [Instrument]
    subscribe_messages(instruments) -> [str]    text frames sent after connect
    stream_path(instruments) -> str             path+query appended to the ws URL
    snapshot_symbol(url) -> str | None          the symbol a REST book-snapshot URL is for, in every
                                                documented form of the venue's REST API (None: not
                                                a book snapshot)
    warm()                                      compile (or load from cache) the venue's kernels
    class Feed(BaseFeed)                        the rare paths in Python: events, snapshots,
                                                reconnects, logging

How a frame flows: ``handle_frame`` runs the venue's compiled ``parse_*`` over the raw bytes
into ``st.rows`` (int64[ROWS, 8], one row per level / trade / ticker, columns R_*) and frame
facts into ``st.info``; checks the venue's sequence / sync rule on them; updates the compiled
books and writes every record straight into the md ring with ``ring.begin_write`` /
``ring.end_write`` (L2_UPDATE, TRADE, BBO, then one BATCH_END per book touched). Nothing of a
frame is published unless the whole frame parsed, so a malformed frame never leaves half an
update on the ring. Book validity changes go out as RT_BOOK_STATUS records (BOOK_INVALID with a
BR_* reason until the book is resynchronised, then BOOK_VALID). Every record carries
``origin_tsc`` = the frame's receive TSC (replay passes the recording's receive time in ns).

``handle_frame`` returns 0 for a frame fully handled in compiled code, else ACT_* bits asking
Python for a rare path::

    ACT_EVENT     the frame is a venue event (subscription ack, error, ...): Feed._on_event(frame)
    ACT_BUFFER    the frame belongs to a book waiting for its REST snapshot: keep a copy
                  (book index in st.conn[C_BUF_BOOK])
    ACT_LOG       events were queued in st.evq (gap, crossed book, checksum failure, bad frame):
                  log them
    ACT_RESUB     the connection must be resubscribed (a fresh book comes with it)
    ACT_SNAPSHOT  a book went back to waiting for a REST snapshot
    ACT_CHECK     (Bitfinex) a checksum frame to verify in Python

The feed state is one namedtuple of plain arrays (``FeedState``), one argument to every kernel;
counters are int64 words of ``st.cnt`` (names in ``COUNTERS``), per-book words ``st.book[b, B_*]``,
per-connection words ``st.conn[C_*]``. All compiled kernels allocate nothing and are compiled
with ``_nrt=False``.
"""
from __future__ import annotations

import logging
from collections import namedtuple
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

import numpy as np
import orjson
from numba import njit

from appliance import jit
from appliance.engine import book
from appliance.transport import clock, hist, records, ring
from appliance.transport.intrinsics import load_relaxed, prefetch_write, store_relaxed
from appliance.venues import scan, wsframe

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


# --- feed state -----------------------------------------------------------------------------------

# per-book words: st.book[b, B_*]
B_VALID = 0          # 1 while the book is trusted
B_STATUS = 1         # last RT_BOOK_STATUS status published (0: none yet)
B_REASON = 2         # BR_* of the last BOOK_INVALID
B_LAST_TSC = 3       # receive TSC of the last frame (or venue heartbeat) for this book
B_EVER = 4           # 1 once the book has been valid on any connection
B_SYNC = 5           # sync state (snapshot_sync: SYNC_WAIT / SYNC_FIRST / SYNC_LIVE)
B_LAST_ID = 6        # last applied update id (snapshot_sync)
B_REQ = 7            # 1 = REST snapshot requested, not yet applied
B_BUFFERED = 8       # frames buffered while waiting for the snapshot
B_V0 = 9             # venue words B_V0 .. BOOK_WORDS-1 (e.g. Kraken's depth and print scale)
BOOK_WORDS = 16

# per-connection words: st.conn[C_*]
C_RESUB = 0          # 1 = resubscribe requested (read and cleared by Feed.wants_resubscribe)
C_NEXT_SEQ = 1       # next expected connection-wide sequence number (-1: not known yet)
C_LAST_SEQ = 2       # last connection-wide sequence number seen
C_REPLAY = 3         # 1 while Python replays buffered frames (not counted again as frames)
C_NEV = 4            # events queued in st.evq
C_EV_LOST = 5        # events dropped because st.evq was full
C_BUF_BOOK = 6       # book of the frame to buffer (ACT_BUFFER)
C_RC = 7             # scan.* code of the last bad frame
CONN_WORDS = 8

COUNTERS = ("frames", "records", "gaps", "resyncs", "checksums_ok", "checksums_failed", "errors",
            "dropped", "ignored", "off_grid", "crossed", "stale", "heartbeats", "trades",
            "buffered", "snapshots", "bbo", "truncated", "channels")
(N_FRAMES, N_RECORDS, N_GAPS, N_RESYNCS, N_CHECKSUMS_OK, N_CHECKSUMS_FAILED, N_ERRORS, N_DROPPED,
 N_IGNORED, N_OFF_GRID, N_CROSSED, N_STALE, N_HEARTBEATS, N_TRADES, N_BUFFERED, N_SNAPSHOTS, N_BBO,
 N_TRUNCATED, N_CHANNELS) = range(len(COUNTERS))
BASE_COUNTERS = COUNTERS[:N_TRADES + 1]

# actions handle_frame asks of Python (module docstring)
ACT_EVENT = 1
ACT_BUFFER = 2
ACT_LOG = 4
ACT_RESUB = 8
ACT_SNAPSHOT = 16
ACT_CHECK = 32

# how a venue resynchronises one book
RESYNC_SNAPSHOT = 0      # back to waiting for a REST snapshot (snapshot_sync venues)
RESYNC_RESUBSCRIBE = 1   # resubscribe the connection: the venue re-sends its snapshots

# events for Python to log: st.evq[k] = (EV_*, book, a, b)
EV_BAD_FRAME = 1         # a = scan rc
EV_GAP = 2               # a = expected id, b = received id
EV_CROSSED = 3           # a = best bid, b = best ask (ticks)
EV_BAD_ROW = 4           # the book rejected a level
EV_CHECKSUM = 5          # a = venue checksum, b = ours
EV_OVERDUE = 6           # a = frames dropped from the snapshot buffer
EV_SEQ_GAP = 7           # connection-wide sequence: a = expected, b = received
EVQ_LEN = 16

FeedState = namedtuple("FeedState", [
    "px", "qty", "nb",            # the books (appliance.engine.book layout)
    "rows", "rows2",              # parse rows; a second set for derived rows (Kraken truncation)
    "info", "res", "touched",     # frame facts, apply_rows result, apply_rows scratch
    "syms", "lens", "grids",      # symbol table and grids of the instruments (parser arguments)
    "book",                       # int64[N, BOOK_WORDS]
    "conn",                       # int64[CONN_WORDS]
    "cnt",                        # int64[len(COUNTERS)]
    "evq",                        # int64[EVQ_LEN, 4]
    "tab",                        # int64[M, 4] venue table (Bitfinex channels)
    "scratch",                    # uint8[K] venue scratch bytes (Kraken checksum text)
])


def new_state(instruments: list[Instrument], rows: int, cap: int, tab_rows: int = 1,
              scratch: int = 1) -> FeedState:
    nb = len(instruments)
    px, qty, n = book.new_books(nb, cap)
    syms, lens = scan.symbol_table([i.symbol for i in instruments])
    st = FeedState(px=px, qty=qty, nb=n,
                   rows=np.zeros((rows, 8), np.int64), rows2=np.zeros((2 * cap, 8), np.int64),
                   info=np.zeros(INFO_WORDS, np.int64), res=np.zeros(4, np.int64),
                   touched=np.zeros(nb, np.uint8), syms=syms, lens=lens,
                   grids=grid_arrays(instruments), book=np.zeros((nb, BOOK_WORDS), np.int64),
                   conn=np.zeros(CONN_WORDS, np.int64), cnt=np.zeros(len(COUNTERS), np.int64),
                   evq=np.zeros((EVQ_LEN, 4), np.int64), tab=np.full((max(tab_rows, 1), 4), -1, np.int64),
                   scratch=np.zeros(max(scratch, 1), np.uint8))
    st.conn[C_NEXT_SEQ] = -1
    return st


class Counters:
    """Named view of a feed's counter words (``st.cnt``): ``counters.frames`` reads and
    assigns the word; ``as_dict()`` has the base counters plus the venue's extras."""

    def __init__(self, words: np.ndarray, names: tuple):
        object.__setattr__(self, "_w", words)
        object.__setattr__(self, "_names", names)

    def __getattr__(self, name: str) -> int:
        try:
            return int(self._w[COUNTERS.index(name)])
        except ValueError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: int) -> None:
        try:
            self._w[COUNTERS.index(name)] = value
        except ValueError:
            raise AttributeError(name) from None

    def as_dict(self) -> dict:
        return {n: int(self._w[COUNTERS.index(n)]) for n in self._names}

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
# Records are written into the ring slot in place, one aligned 64-bit store per field word
# (offsets from the schema), so a record costs a handful of stores and no array views. Every
# word of the 32-byte payload is written (padding included): a reused slot never keeps bytes of
# the record it held before.

_U64 = np.uint64
_W_TYPE = _U64(records.TYPE_WORD_OFF)
_W_ORIGIN = _U64(records.ORIGIN_TSC_OFF)
_W_P0 = _U64(records.HEADER_SIZE)          # payload words: 32, 40, 48, 56
_W_P1 = _U64(records.HEADER_SIZE + 8)
_W_P2 = _U64(records.HEADER_SIZE + 16)
_W_P3 = _U64(records.HEADER_SIZE + 24)
assert (records.L2_PRICE_OFF, records.L2_QTY_OFF, records.field_offset(_L2, "venue_seq"),
        records.L2_SIDE_OFF) == (32, 40, 48, 56)
assert (records.TRADE_PRICE_OFF, records.TRADE_QTY_OFF, records.field_offset(_TRADE, "trade_id"),
        records.TRADE_SIDE_OFF) == (32, 40, 48, 56)
assert tuple(records.field_offset(_BATCH, f) for f in ("bid_price", "ask_price", "venue_seq",
                                                       "n_updates")) == (32, 40, 48, 56)
assert tuple(records.field_offset(_BBO, f) for f in ("bid_price", "bid_qty", "ask_price",
                                                     "ask_qty")) == (32, 40, 48, 56)
assert tuple(records.field_offset(_STATUS, f) for f in ("venue_seq", "status", "reason")) == (32, 40, 42)
PREFETCH_SLOTS = 8       # ring slots made ready for writing ahead of the head after each frame


@njit(**jit.HELPER)
def _put(data, slot, head, w):
    """Fill ring slot ``slot`` (taken with ring.begin_write): the header words from ``head``
    ``(rtype, venue, inst, flags, origin_tsc)`` and the 4 payload words ``w``."""
    rtype, venue, inst, flags, tsc = head
    w0, w1, w2, w3 = w
    off = _U64(slot) * _U64(data.shape[1])
    tw = (_U64(rtype) & _U64(0xFF)) | ((_U64(venue) & _U64(0xFF)) << _U64(8)) \
        | ((_U64(flags) & _U64(0xFFFF)) << _U64(16)) | ((_U64(inst) & _U64(0xFFFFFFFF)) << _U64(32))
    store_relaxed(data, off + _W_TYPE, tw)
    store_relaxed(data, off + _W_ORIGIN, tsc)
    store_relaxed(data, off + _W_P0, w0)
    store_relaxed(data, off + _W_P1, w1)
    store_relaxed(data, off + _W_P2, w2)
    store_relaxed(data, off + _W_P3, w3)


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def _emit(hdr, data, head, w):
    """One record published (begin_write, fill, end_write); ``head`` and ``w`` as for _put."""
    slot = ring.begin_write(hdr, data)
    _put(data, slot, head, w)
    ring.end_write(hdr, data, slot)


@njit(**jit.HELPER)
def prefetch_slots(hdr, data, k):
    """Bring the ``k`` ring slots after the next one into cache for writing, so the records of
    the next frame do not wait on memory (the next slot itself is left alone: a consumer on
    another core may be polling it)."""
    s = load_relaxed(hdr, _U64(ring.HEAD_OFF))
    mask = _U64(data.shape[0] - 1)
    rs = _U64(data.shape[1])
    for j in range(1, k + 1):
        prefetch_write(data, ((s + _U64(j)) & mask) * rs)


@njit(cache=True, nogil=True, _nrt=False)
def publish_status(hdr, data, venue, inst, status, reason, venue_seq, tsc):
    """One RT_BOOK_STATUS record."""
    _emit(hdr, data, (records.RT_BOOK_STATUS, venue, inst, 0, tsc),
          (venue_seq, (_U64(status) & _U64(0xFF)) | ((_U64(reason) & _U64(0xFFFF)) << _U64(16)),
           0, 0))


@njit(**jit.HELPER)
def apply_rows(st, rows, n, venue, tsc, flags, hdr, data):
    """Apply rows[0:n] to the feed's books (``st.px``, ``st.qty``, ``st.nb``) and publish their
    records, then one BATCH_END per book that L2 rows touched (``st.touched`` is a scratch
    uint8[B] array, zero on entry and on return).

    ``st.res`` (int64[4]) receives: [0] records published, [1] result bits A_*, [2] first
    crossed book (-1 if none), [3] first book with a rejected row (-1 if none)."""
    px, qty, nb, touched, res = st.px, st.qty, st.nb, st.touched, st.res
    res[0] = 0
    res[1] = 0
    res[2] = -1
    res[3] = -1
    cnt = 0
    nl = 0
    last_inst = -1
    last_seq = 0
    ntouched = 0
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
            _emit(hdr, data, (records.RT_L2_UPDATE, venue, inst, flags, tsc),
                  (rows[k, R_PRICE], rows[k, R_QTY], rows[k, R_SEQ], side))
            cnt += 1
            nl += 1
            if touched[inst] == 0:
                touched[inst] = 1
                ntouched += 1
            last_inst = inst
            last_seq = rows[k, R_SEQ]
        elif kind == K_TRADE:
            _emit(hdr, data, (records.RT_TRADE, venue, inst, 0, tsc),
                  (rows[k, R_PRICE], rows[k, R_QTY], rows[k, R_SEQ], rows[k, R_SIDE]))
            cnt += 1
        elif kind == K_BBO:
            _emit(hdr, data, (records.RT_BBO, venue, inst, 0, tsc),
                  (rows[k, R_PRICE], rows[k, R_QTY], rows[k, R_AUX1], rows[k, R_AUX2]))
            cnt += 1
    if nl > 0:
        # one BATCH_END per touched book (usually one: then no scan); the last carries F_LAST
        b = 0
        while ntouched > 0:
            if ntouched == 1 and touched[last_inst] != 0:
                b = last_inst
            elif touched[b] == 0:
                b += 1
                continue
            touched[b] = 0
            ntouched -= 1
            nbid = nb[b, 0]
            nask = nb[b, 1]
            bid = px[b, 0, nbid - 1] if nbid > 0 else 0
            ask = px[b, 1, nask - 1] if nask > 0 else 0
            if nbid > 0 and nask > 0 and bid >= ask:
                res[1] |= A_CROSSED
                if res[2] < 0:
                    res[2] = b
            fl = flags
            if b == last_inst:
                fl |= records.F_LAST
            _emit(hdr, data, (records.RT_BATCH_END, venue, b, fl, tsc), (bid, ask, last_seq, nl))
            cnt += 1
    prefetch_slots(hdr, data, PREFETCH_SLOTS)
    res[0] = cnt
    return cnt


@njit(**jit.HELPER)
def pump_frames(handle, fd, rx, ws, st, hdr, data, max_iters, lat, cal):
    """Every venue's ``pump``: up to ``max_iters`` frames from the socket (``wsframe.next_frame``)
    through the venue's ``handle`` (its handle_frame, a compile-time constant of each venue's
    pump). For every frame that published records, ``lat`` (a transport/hist.py row: the md
    gateway's ``frame_to_publish`` telemetry) gets the time from the recv() that completed it to
    its last record published, in ns (``cal``: clock calibration); ws[W_LAT] keeps it in ticks.
    When the socket has nothing more after it returned bytes and stayed quiet for
    ws[W_ACK_QUIET] ns, the pump sends their ACK itself (``wsframe.ack_now``; the module
    docstring of wsframe: deferred ACKs). Returns a wsframe P_* code (P_ACTION | act for a frame
    that needs Python)."""
    for _ in range(max_iters):
        r = wsframe.next_frame(fd, rx, ws)
        if r != wsframe.P_DATA:
            if r == wsframe.P_IDLE and ws[wsframe.W_ACK] != 0 and ws[wsframe.W_ACK_QUIET] >= 0 \
                    and clock.tsc_to_ns(cal, np.int64(wsframe.rdtsc()) - ws[wsframe.W_TSC]) \
                    >= ws[wsframe.W_ACK_QUIET]:
                ws[wsframe.W_ACK] = 0
                ws[wsframe.W_ACKS] += 1
                wsframe.ack_now(fd)
            return r
        s = ws[wsframe.W_S]
        e = ws[wsframe.W_E]
        h0 = load_relaxed(hdr, _U64(ring.HEAD_OFF))
        t0 = ws[wsframe.W_TSC]
        act = handle(rx[s:e], e - s, t0, st, hdr, data)
        d = np.int64(wsframe.rdtsc()) - t0
        ws[wsframe.W_LAT] = d
        ws[wsframe.W_FRAMES] += 1
        if load_relaxed(hdr, _U64(ring.HEAD_OFF)) != h0:
            ring.notify(hdr)             # the frame's records: wake a consumer asleep on them
            hist.record(lat, clock.tsc_to_ns(cal, d))
        if act != 0:
            return wsframe.P_ACTION | act
    return wsframe.P_BUDGET


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def parse_levels(b, i, end, grid, inst, layout, seq, rows, n):
    """Parse a JSON array of level arrays at b[i] (``[[p, q, ...], ...]``) into K_L2 rows from
    rows[n], on the instrument's ``grid`` ``(dec_p, step_p, dec_q, step_q)`` (its row of the
    feed's grids). ``layout`` is ``(side, side_elem, p_elem, q_elem)``: element ``p_elem`` is the
    price, ``q_elem`` the quantity; when ``side_elem`` >= 0 that element is a string whose first
    letter gives the side (b[uy]/b[id] or s[ell]/a[sk]/o), else every level gets ``side``.
    Returns (new n, next index, rc)."""
    dec_p, step_p, dec_q, step_q = grid
    side, side_elem, p_elem, q_elem = layout
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


# --- compiled status, resync and event helpers (called from every venue's handle_frame) -------

@njit(cache=True, nogil=True, _nrt=False)
def event(st, kind, b, a, c):
    """Queue an event for Python to log (dropped and counted in C_EV_LOST when the queue is
    full); returns ACT_LOG."""
    n = st.conn[C_NEV]
    if n < st.evq.shape[0]:
        st.evq[n, 0] = kind
        st.evq[n, 1] = b
        st.evq[n, 2] = a
        st.evq[n, 3] = c
        st.conn[C_NEV] = n + 1
    else:
        st.conn[C_EV_LOST] += 1
    return ACT_LOG


@njit(cache=True, nogil=True, _nrt=False)
def invalidate(st, b, reason, tsc, seq, venue, hdr, data):
    """Book b cannot be trusted: publish BOOK_INVALID(reason) once per invalid period."""
    was = st.book[b, B_VALID]
    st.book[b, B_VALID] = 0
    if was != 0 or st.book[b, B_STATUS] != records.BOOK_INVALID:
        publish_status(hdr, data, venue, b, records.BOOK_INVALID, reason, seq, tsc)
        st.book[b, B_STATUS] = records.BOOK_INVALID
        st.book[b, B_REASON] = reason
        st.cnt[N_RECORDS] += 1


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def validate(st, b, tsc, seq, venue, hdr, data):
    """Book b is synced: publish BOOK_VALID once per valid period."""
    if st.book[b, B_VALID] == 0:
        st.book[b, B_VALID] = 1
        st.book[b, B_EVER] = 1
        publish_status(hdr, data, venue, b, records.BOOK_VALID, records.BR_NONE, seq, tsc)
        st.book[b, B_STATUS] = records.BOOK_VALID
        st.book[b, B_REASON] = records.BR_NONE
        st.cnt[N_RECORDS] += 1


@njit(cache=True, nogil=True, _nrt=False)
def resync(st, b, reason, tsc, venue, mode, hdr, data):
    """Book b lost sync: invalid now, and a fresh book is fetched the venue's way (``mode``:
    RESYNC_SNAPSHOT = back to waiting for a REST snapshot, RESYNC_RESUBSCRIBE = resubscribe the
    connection). Returns the ACT_* bits for Python."""
    invalidate(st, b, reason, tsc, 0, venue, hdr, data)
    if mode == RESYNC_SNAPSHOT:
        if st.book[b, B_SYNC] == 0 and st.book[b, B_REQ] == 0:
            return ACT_SNAPSHOT        # already waiting and not yet asked for
        if st.book[b, B_SYNC] != 0:
            st.cnt[N_RESYNCS] += 1
        st.book[b, B_SYNC] = 0         # snapshot_sync.SYNC_WAIT
        st.book[b, B_REQ] = 0
        st.book[b, B_BUFFERED] = 0
        return ACT_SNAPSHOT
    st.cnt[N_RESYNCS] += 1
    st.conn[C_RESUB] = 1
    return ACT_RESUB


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def apply(st, rows, n, tsc, flags, venue, mode, hdr, data):
    """Apply rows[0:n] to the books and publish (``apply_rows``); a crossed book or a rejected
    level resyncs that book. Returns ACT_* bits; ``st.res[1] & A_FAILED`` says the frame did not
    leave its book consistent."""
    apply_rows(st, rows, n, venue, tsc, flags, hdr, data)
    st.cnt[N_RECORDS] += st.res[0]
    bits = st.res[1]
    act = 0
    if bits & A_BAD_ROW:
        b = st.res[3]
        st.cnt[N_ERRORS] += 1
        act |= event(st, EV_BAD_ROW, b, 0, 0)
        act |= resync(st, b, records.BR_BAD_FRAME, tsc, venue, mode, hdr, data)
    if bits & A_CROSSED:
        b = st.res[2]
        st.cnt[N_CROSSED] += 1
        nbid = st.nb[b, 0]
        nask = st.nb[b, 1]
        bid = st.px[b, 0, nbid - 1] if nbid > 0 else 0
        ask = st.px[b, 1, nask - 1] if nask > 0 else 0
        act |= event(st, EV_CROSSED, b, bid, ask)
        act |= resync(st, b, records.BR_CROSSED, tsc, venue, mode, hdr, data)
    return act


@njit(**jit.INTERNAL)
def bad_frame(st, rc):
    """Count a frame that did not parse; returns ACT_LOG (Python logs it, rate-limited)."""
    st.cnt[N_ERRORS] += 1
    if rc == scan.E_OFF_GRID:
        st.cnt[N_OFF_GRID] += 1
    st.conn[C_RC] = rc
    return event(st, EV_BAD_FRAME, -1, rc, 0)


@njit(**jit.HELPER)
def count_frame(st):
    if st.conn[C_REPLAY] == 0:
        st.cnt[N_FRAMES] += 1


@njit(**jit.HELPER)
def bad_frame_resync(st, rc, lost, tsc, venue, mode, hdr, data):
    """A frame that did not parse (``rc``): counted and logged (:func:`bad_frame`); ``lost`` >= 0
    is the book whose update or snapshot it carried, which resyncs the venue's way (``mode``).
    Returns ACT_* bits."""
    act = bad_frame(st, rc)
    if lost >= 0:
        act |= resync(st, lost, records.BR_BAD_FRAME, tsc, venue, mode, hdr, data)
    return act


@njit(**jit.HELPER)
def check_conn_seq(st, seq, tsc, venue, hdr, data):
    """A frame's connection-wide sequence number (-1: it has none), checked before anything
    else (a frame we cannot use still consumed its number): a jump invalidates every book and
    asks for a resubscribe. Returns ACT_* bits."""
    act = 0
    if seq >= 0:
        nxt = st.conn[C_NEXT_SEQ]
        if nxt >= 0 and seq != nxt:
            st.cnt[N_GAPS] += 1
            act |= event(st, EV_SEQ_GAP, -1, nxt, seq)
            invalidate_all(st, records.BR_GAP, tsc, venue, hdr, data)
            st.cnt[N_RESYNCS] += 1
            st.conn[C_RESUB] = 1
            act |= ACT_RESUB
        st.conn[C_NEXT_SEQ] = seq + 1
        st.conn[C_LAST_SEQ] = seq
    return act


@njit(**jit.HELPER)
def apply_live(st, b, n, tsc, venue, mode, hdr, data):
    """An update of book ``b`` in rows[0:n]: applied when the book is valid, else dropped
    (counted) until its fresh snapshot. Either way the book was heard from at ``tsc``."""
    st.book[b, B_LAST_TSC] = tsc
    if st.book[b, B_VALID] == 0:
        st.cnt[N_DROPPED] += 1
        return 0
    return apply(st, st.rows, n, tsc, 0, venue, mode, hdr, data)


@njit(**jit.INTERNAL)
def snapshot_rebuild(st, b, n, tsc, seq, venue, mode, hdr, data):
    """A snapshot of book b in rows[0:n] (from the stream): clear, apply with F_SNAPSHOT,
    valid if consistent. Returns ACT_* bits."""
    st.cnt[N_SNAPSHOTS] += 1
    st.book[b, B_LAST_TSC] = tsc
    book.clear(st.px, st.qty, st.nb, b)
    act = apply(st, st.rows, n, tsc, records.F_SNAPSHOT, venue, mode, hdr, data)
    if (st.res[1] & A_FAILED) == 0:
        validate(st, b, tsc, seq, venue, hdr, data)
    return act


@njit(cache=True, nogil=True, _nrt=False)
def invalidate_all(st, reason, tsc, venue, hdr, data):
    """Every book -> BOOK_INVALID(reason); returns how many were valid."""
    m = 0
    for b in range(st.book.shape[0]):
        m += st.book[b, B_VALID]
        invalidate(st, b, reason, tsc, st.conn[C_LAST_SEQ], venue, hdr, data)
    return m


@njit(cache=True, nogil=True, _nrt=False)
def reset_connection(st):
    """A fresh connection: empty books, nothing synced, no connection sequence known."""
    for b in range(st.book.shape[0]):
        book.clear(st.px, st.qty, st.nb, b)
        st.book[b, B_VALID] = 0
        st.book[b, B_LAST_TSC] = 0
        st.book[b, B_SYNC] = 0
        st.book[b, B_LAST_ID] = 0
        st.book[b, B_REQ] = 0
        st.book[b, B_BUFFERED] = 0
    st.conn[C_RESUB] = 0
    st.conn[C_NEXT_SEQ] = -1
    st.conn[C_LAST_SEQ] = 0


@njit(cache=True, nogil=True, _nrt=False)
def stale_books(st, now_tsc, stale_ticks, venue, mode, hdr, data):
    """Valid books with nothing (not even a venue heartbeat) for stale_ticks -> resync.
    Returns ACT_* bits."""
    act = 0
    for b in range(st.book.shape[0]):
        last = st.book[b, B_LAST_TSC]
        if st.book[b, B_VALID] != 0 and last != 0 and now_tsc - last > stale_ticks:
            st.cnt[N_STALE] += 1
            act |= resync(st, b, records.BR_STALE, now_tsc, venue, mode, hdr, data)
    return act


# --- the Python side of a feed -------------------------------------------------------------------

_EV_NAMES = {EV_GAP: "gap", EV_CROSSED: "crossed", EV_BAD_ROW: "bad level",
             EV_CHECKSUM: "checksum mismatch", EV_OVERDUE: "snapshot overdue",
             EV_SEQ_GAP: "sequence gap"}


class BaseFeed:
    """One venue connection's books and counters; the compiled ``handle``/``pump`` do the per-
    frame work, this class the rare paths (events, snapshots, reconnects, logging).

    Subclasses set ``handle`` and ``pump`` (the venue's compiled kernels, as staticmethods) and
    override ``_on_event`` / ``_on_check`` for the frames their kernel hands back."""
    NAME = "venue"
    VENUE_ID = records.VENUE_NONE
    EXTRA_COUNTERS: tuple = ()
    RESYNC = RESYNC_RESUBSCRIBE
    BOOK_HEARTBEAT = False    # the venue sends per-book heartbeats: a silent book is stale
    LOG_FIRST = 20            # log the first N bad frames, then one in LOG_EVERY
    LOG_EVERY = 1000
    ROWS = MAX_ROWS           # rows one frame may produce (venues with full-book snapshots raise it)
    CAP = BOOK_CAP            # levels per side kept per book
    TAB_ROWS = 1
    SCRATCH = 1
    handle = None             # staticmethod(handle_frame)
    pump = None               # staticmethod(pump)
    # the warm-up (``warm``): one instrument (symbol, name, tick, lot), frames of every kind the
    # kernel parses (the last one truncated), and the book capacity to warm with
    WARM_INSTRUMENT = ("ABC-USD", "ABC-USD", "0.01", "0.1")
    WARM_FRAMES: tuple = ()
    WARM_BOOK_CAP: int | None = None

    @classmethod
    def warm(cls) -> None:
        """Compile (or load from the numba cache) every kernel of the venue: a private feed runs
        ``WARM_FRAMES`` through its kernels (:func:`warm_feed`)."""
        feed = quiet(cls([Instrument.make(*cls.WARM_INSTRUMENT)], RecordWriter.local(1024),
                         book_cap=cls.WARM_BOOK_CAP))
        feed._warm_sync()
        warm_feed(feed, list(cls.WARM_FRAMES))

    def _warm_sync(self) -> None:
        """The warm-up of a venue's own sync path (a REST snapshot, ...), before the frames."""

    def __init__(self, instruments: list[Instrument], writer: RecordWriter, book_cap: int | None = None):
        if not instruments:
            raise InstrumentError(f"{self.NAME}: no instruments to subscribe")
        self.instruments = list(instruments)
        self.writer = writer
        self.hdr = writer.hdr
        self.data = writer.data
        self.index = {ins.symbol: i for i, ins in enumerate(self.instruments)}
        self.book_cap = book_cap or self.CAP
        self.st = new_state(self.instruments, max(self.ROWS, 2 * self.book_cap), self.book_cap,
                            self.TAB_ROWS, self.SCRATCH)
        self.counters = Counters(self.st.cnt, BASE_COUNTERS + tuple(
            c for c in self.EXTRA_COUNTERS if c not in BASE_COUNTERS))
        self.log = logging.getLogger(f"appliance.venues.{self.NAME}")
        self._bad_logged = 0
        self.cal = clock.calibration()
        # frame_to_publish latencies written by ``pump`` (a private row until the gateway points
        # it at its telemetry region with ``set_latency_row``)
        self.lat = hist.new_row()
        self._buf = np.zeros(1 << 16, np.uint8)
        self._mv = memoryview(self._buf)
        self._one = wsframe.new_state(1 << 12)     # on_frame's receive buffer (grown to fit)
        self._one_lat = hist.new_row()

    def writable(self, data: bytes) -> int:
        """Copy ``data`` into the feed's own writable buffer ``self._buf`` (grown to fit); returns
        its length. The Python paths (``on_snapshot``, a venue's REST answers) hand the kernels
        the same array type the socket pump does, with the end offset, so each kernel has one
        compiled specialisation instead of a second one for read-only ``bytes``."""
        n = len(data)
        if n > len(self._buf):
            self._buf = np.zeros(1 << (n - 1).bit_length(), np.uint8)
            self._mv = memoryview(self._buf)
        self._mv[:n] = data
        return n

    def set_latency_row(self, row: np.ndarray) -> None:
        """Record frame_to_publish into ``row`` (a mapped telemetry row, int64[hist.ROW])."""
        if row.dtype != np.int64 or row.shape != (hist.ROW,):
            raise ValueError(f"latency row must be int64[{hist.ROW}], got {row.dtype}{row.shape}")
        self.lat = row

    # views of the state (tools, tests)
    px = property(lambda self: self.st.px)
    qty = property(lambda self: self.st.qty)
    nb = property(lambda self: self.st.nb)
    rows = property(lambda self: self.st.rows)
    info = property(lambda self: self.st.info)
    grids = property(lambda self: self.st.grids)
    syms = property(lambda self: self.st.syms)
    sym_lens = property(lambda self: self.st.lens)
    valid = property(lambda self: self.st.book[:, B_VALID])
    last_tsc = property(lambda self: self.st.book[:, B_LAST_TSC])
    last_id = property(lambda self: self.st.book[:, B_LAST_ID])
    last_seq = property(lambda self: int(self.st.conn[C_LAST_SEQ]))

    # -- frames ---------------------------------------------------------------------------------
    def on_frame(self, frame: bytes, recv_tsc: int) -> None:
        """One frame (a whole message's payload) through the compiled kernel, then whatever rare
        path it asks for. The Python paths (a reassembled fragmented message, frames buffered
        until a snapshot, replays, tests) enter through the venue's ``pump``, the socket's own
        entry point, with the frame as one WebSocket frame in a private receive buffer (fd -1):
        so ``handle_frame`` needs no Python entry point, whose compile would optimise and emit
        the venue's whole parse a second time. The pump's frame_to_publish time goes to a
        private row (a buffered frame's time since its recv() is not the gateway's latency)."""
        n = len(frame)
        hl = 2 if n < 126 else 4 if n < 1 << 16 else 10
        rx, ws = self._one
        if n > ws[wsframe.W_MAX]:
            rx, ws = self._one = wsframe.new_state(1 << max(n - 1, 127).bit_length())
        rx[0] = 0x80 | wsframe.OP_TEXT
        if hl == 2:
            rx[1] = n
        elif hl == 4:
            rx[1], rx[2], rx[3] = 126, n >> 8, n & 0xFF
        else:
            rx[1] = 127
            rx[2:10] = np.frombuffer(n.to_bytes(8, "big"), np.uint8)
        rx[hl:hl + n] = np.frombuffer(frame, np.uint8)
        ws[wsframe.W_POS], ws[wsframe.W_FILL], ws[wsframe.W_TSC] = 0, hl + n, recv_tsc
        r = self.pump(-1, rx, ws, self.st, self.hdr, self.data, 1, self._one_lat, self.cal)
        if r & wsframe.P_ACTION:
            self.after(r & (wsframe.P_ACTION - 1), frame, recv_tsc)
        elif r != wsframe.P_BUDGET:         # cannot happen: a whole frame, sized to fit
            self.counters.errors += 1
            self.log.error("%s: frame of %d bytes not handled (pump: %s)", self.NAME, n,
                           wsframe.CODE_NAMES.get(r, r))

    def after(self, act: int, frame, tsc: int) -> None:
        """The rare paths a frame asked for (``act``: ACT_* bits of handle_frame)."""
        if act & ACT_LOG:
            self._drain_events(frame)
        if act & ACT_EVENT:
            self._on_event(bytes(frame), tsc)
        if act & ACT_CHECK:
            self._on_check(bytes(frame), tsc)

    def _on_event(self, frame: bytes, tsc: int) -> None:
        """A frame the kernel handed back as a venue event (ACT_EVENT): a JSON object for
        ``on_event``; anything else is counted and logged as a bad frame."""
        try:
            ev = orjson.loads(frame)
        except orjson.JSONDecodeError:
            self._bad(frame, scan.E_SYNTAX, "event")
            return
        if isinstance(ev, dict):
            self.on_event(ev, tsc)
        else:
            self.counters.ignored += 1

    def on_event(self, ev: dict, tsc: int) -> None:
        """A venue event (subscription acks, errors, requests to reconnect): venues that act on
        some override this; the rest are counted as ignored."""
        self.counters.ignored += 1

    def _on_check(self, frame: bytes, tsc: int) -> None:
        pass

    def _drain_events(self, frame) -> None:
        st = self.st
        n = int(st.conn[C_NEV])
        st.conn[C_NEV] = 0
        for k in range(n):
            kind, b, a, c = (int(x) for x in st.evq[k])
            self._on_log_event(kind, b, a, c, frame)
        if st.conn[C_EV_LOST]:
            self.log.warning("%s: %d events were not logged (queue full)", self.NAME,
                             int(st.conn[C_EV_LOST]))
            st.conn[C_EV_LOST] = 0

    def _on_log_event(self, kind: int, b: int, a: int, c: int, frame) -> None:
        sym = self.instruments[b].symbol if 0 <= b < len(self.instruments) else ""
        if kind == EV_BAD_FRAME:
            self._log_bad(frame, a)
        elif kind == EV_GAP:
            self.log.warning("%s %s: gap, expected update %d, got %d; resyncing", self.NAME, sym, a, c)
        elif kind == EV_SEQ_GAP:
            self.log.warning("%s: sequence gap, expected %d, got %d; resubscribing", self.NAME, a, c)
        elif kind == EV_CROSSED:
            ins = self.instruments[b]
            self.log.warning("%s %s: book crossed (bid %s >= ask %s); resyncing", self.NAME, sym,
                             ins.price_str(a), ins.price_str(c))
        elif kind == EV_BAD_ROW:
            self.log.warning("%s %s: the book rejected a level (non-positive price or negative "
                             "quantity); resyncing", self.NAME, sym)
        elif kind == EV_CHECKSUM:
            self.log.warning("%s %s: checksum mismatch (venue %d, book %d); resyncing", self.NAME,
                             sym, a, c)
        elif kind == EV_OVERDUE:
            self.log.warning("%s %s: snapshot overdue, buffer of %d updates dropped", self.NAME,
                             sym, a)
        else:
            self.log.warning("%s: event %s book %s (%d, %d)", self.NAME, _EV_NAMES.get(kind, kind),
                             sym, a, c)

    def _log_bad(self, frame, rc: int, what: str = "") -> None:
        self._bad_logged += 1
        if self._bad_logged <= self.LOG_FIRST or self._bad_logged % self.LOG_EVERY == 0:
            shown = bytes(frame[:200]) if frame is not None else b""
            self.log.warning("%s: bad frame (%s%s): %r", self.NAME, scan.ERROR_NAMES.get(rc, rc),
                             f", {what}" if what else "", shown)

    def _bad(self, frame, rc: int, what: str = "") -> None:
        """Count and log a frame or body the Python side could not use."""
        self.counters.errors += 1
        if rc == scan.E_OFF_GRID:
            self.counters.off_grid += 1
        self._log_bad(frame, rc, what)

    # -- status (Python callers: events, connection changes) ----------------------------------
    def _invalidate(self, b: int, reason: int, tsc: int, seq: int = 0) -> None:
        invalidate(self.st, b, reason, tsc, seq, self.VENUE_ID, self.hdr, self.data)

    def _validate(self, b: int, tsc: int, seq: int = 0) -> None:
        validate(self.st, b, tsc, seq, self.VENUE_ID, self.hdr, self.data)

    def _apply(self, n: int, tsc: int, flags: int = 0) -> int:
        """Apply rows[0:n] from Python (tools, tests); returns the A_* result bits."""
        act = apply(self.st, self.st.rows, n, tsc, flags, self.VENUE_ID, self.RESYNC, self.hdr,
                    self.data)
        if act & ~ACT_RESUB:
            self.after(act & ~ACT_RESUB, None, tsc)
        return int(self.st.res[1])

    def _resync(self, b: int, reason: int, tsc: int) -> None:
        act = resync(self.st, b, reason, tsc, self.VENUE_ID, self.RESYNC, self.hdr, self.data)
        if act & ~ACT_RESUB:
            self.after(act & ~ACT_RESUB, None, tsc)

    def is_valid(self, symbol: str) -> bool:
        return bool(self.st.book[self.index[symbol], B_VALID])

    # -- interface ------------------------------------------------------------------------------
    def snapshot_requests(self) -> list[tuple[str, str]]:
        return []

    def on_snapshot(self, symbol: str, body: bytes, recv_tsc: int) -> None:
        self.counters.ignored += 1

    def wants_resubscribe(self) -> bool:
        r = bool(self.st.conn[C_RESUB])
        self.st.conn[C_RESUB] = 0
        return r

    def on_disconnect(self) -> None:
        """Every book -> BOOK_INVALID(BR_DISCONNECT)."""
        invalidate_all(self.st, records.BR_DISCONNECT, 0, self.VENUE_ID, self.hdr, self.data)

    def on_stale_connection(self, now_tsc: int) -> None:
        """The connection went silent (or a frame stopped arriving mid-way): every valid book ->
        BOOK_INVALID(BR_STALE), before the gateway drops the connection."""
        self.counters.stale += int(invalidate_all(self.st, records.BR_STALE, now_tsc,
                                                  self.VENUE_ID, self.hdr, self.data))

    def on_reconnect(self) -> None:
        reset_connection(self.st)

    def check_stale(self, now_tsc: int, stale_ns: int) -> None:
        """Per-book staleness, only where the venue sends per-book heartbeats (BOOK_HEARTBEAT):
        elsewhere a quiet book on a live connection is simply quiet, and the connection's own
        silence timer (the gateway) covers a dead feed."""
        if not self.BOOK_HEARTBEAT:
            return
        ticks_per_s = int(self.cal[2]) if int(self.cal[2]) > 0 else 1_000_000_000
        stale_ticks = stale_ns * ticks_per_s // 1_000_000_000
        act = stale_books(self.st, now_tsc, stale_ticks, self.VENUE_ID, self.RESYNC, self.hdr,
                          self.data)
        if act & ~ACT_RESUB:
            self.after(act & ~ACT_RESUB, None, now_tsc)
        if act:
            self.log.warning("%s: book(s) silent for %.1f s (no update, no heartbeat); resyncing",
                             self.NAME, stale_ns / 1e9)

    def unsynced(self) -> dict[str, str]:
        """Books not valid now: symbol -> why (the BR_* reason name, or "no data")."""
        out = {}
        for b, ins in enumerate(self.instruments):
            w = self.st.book[b]
            if w[B_VALID]:
                continue
            if w[B_STATUS] == 0:
                out[ins.symbol] = "no data"
            else:
                out[ins.symbol] = REASON_NAMES.get(int(w[B_REASON]), str(int(w[B_REASON])))
        return out

    def never_synced(self) -> dict[str, str]:
        """Books that were never valid: symbol -> why."""
        un = self.unsynced()
        return {ins.symbol: un.get(ins.symbol, "no data") for b, ins in enumerate(self.instruments)
                if not self.st.book[b, B_EVER]}

    def ping_frame(self) -> str | None:
        return None

    def top(self, symbol: str, depth: int = 10) -> dict:
        b = self.index[symbol]
        ins = self.instruments[b]
        out = {}
        for side, key in ((0, "bids"), (1, "asks")):
            levels = []
            for k in range(min(depth, int(self.st.nb[b, side]))):
                p, q = book.level(self.st.px, self.st.qty, self.st.nb, b, side, k)
                levels.append([ins.price_str(p), ins.qty_str(q)])
            out[key] = levels
        return out

    def book_levels(self, b: int, side: int) -> list[tuple[int, int]]:
        """All levels of a side as (ticks, lots), best first (tests, tools)."""
        return book.side_levels(self.st.px, self.st.qty, self.st.nb, b, side)


REASON_NAMES = {records.BR_NONE: "none", records.BR_GAP: "gap", records.BR_CHECKSUM: "checksum",
                records.BR_CROSSED: "crossed", records.BR_STALE: "stale",
                records.BR_DISCONNECT: "disconnected", records.BR_SNAPSHOT_PENDING: "snapshot pending",
                records.BR_BAD_FRAME: "bad frame"}


_QUIET = logging.getLogger("appliance.venues.warm")
_QUIET.propagate = False
_QUIET.setLevel(logging.CRITICAL + 1)


# -- what a venue simulator needs to know of a venue's protocol (``sim_subscribed`` /
# ``sim_frame_symbol`` of each venue module; appliance.sim.venue sends a client only the frames of
# what it subscribed to) ---------------------------------------------------------------------------
def strings_at(msg: dict, *keys: str) -> set[str]:
    """The strings of the lists ``msg[key]`` (a subscribe message's symbols)."""
    out = set()
    for k in keys:
        v = msg.get(k)
        if isinstance(v, list):
            out.update(x for x in v if isinstance(x, str))
    return out


def string_after(frame: bytes, key: bytes) -> str | None:
    """The JSON string that follows ``key`` (e.g. ``b'"product_id":"'``) in a frame, else None."""
    i = frame.find(key)
    if i < 0:
        return None
    j = frame.find(b'"', i + len(key))
    return frame[i + len(key):j].decode(errors="replace")


def quiet(feed: BaseFeed) -> BaseFeed:
    """The feed with its logging off (warm-up runs deliberately bad frames)."""
    feed.log = _QUIET
    return feed


def warm_feed(feed: BaseFeed, frames: list[bytes]) -> None:
    """Compile (or load from the cache) a feed's kernels by running them once: ``frames``
    through ``handle``, the same bytes as WebSocket frames through ``pump`` (fd -1: no socket),
    and the state helpers. Leaves the feed reset. Used by each venue module's ``warm()``."""
    from appliance.venues import wsframe
    quiet(feed)
    for f in frames:
        feed.on_frame(f, 1)
    rx, ws = wsframe.new_state(1 << 16)
    wire = b"".join(wsframe.frame_bytes(f) for f in frames)[:len(rx)]
    rx[:len(wire)] = np.frombuffer(wire, np.uint8)
    ws[wsframe.W_FILL] = len(wire)
    ws[wsframe.W_TSC] = 1
    while True:
        r = feed.pump(-1, rx, ws, feed.st, feed.hdr, feed.data, 64, feed.lat, feed.cal)
        if r == wsframe.P_NEED or r in (wsframe.P_PROTOCOL, wsframe.P_TOO_BIG):
            break
        if r & wsframe.P_ACTION:
            feed.after(r & (wsframe.P_ACTION - 1), bytes(rx[ws[wsframe.W_S]:ws[wsframe.W_E]]), 1)
    feed.on_stale_connection(1)
    feed.on_disconnect()
    feed.check_stale(2, 1)
    feed.on_reconnect()
    feed.st.cnt[:] = 0
    feed.st.conn[C_NEV] = 0
