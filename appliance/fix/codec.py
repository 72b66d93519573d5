"""Compiled FIX 4.x order codec: order records -> wire bytes, wire bytes -> exec records.

Encoder
-------
``encode_order(rec, out, off, begin, comp, seq, utc_ns, tcache, instr, syms)`` renders one order record
(records.NEW_ORDER / CANCEL / REPLACE / MASS_CANCEL, a uint8[128] row) as a complete FIX message
into ``out[off:]`` and returns the number of bytes written, or a negative E_* code (nothing
usable written). ``begin`` is the prebuilt ``8=FIX.4.4<SOH>`` and ``comp`` the prebuilt
``49=SENDER<SOH>56=TARGET<SOH>`` of the session (``session_constants``). Field order, which is
exactly what simplefix produces when the same pairs are appended in this order::

    8 9 35 49 56 34 52 | D: 11 [21] 55 54 38 40 [44] 59 [18] 60
                       | F: 41 11 55 54 38 60
                       | G: 41 11 [21] 55 54 38 40 [44] 59 [18] 60
                       | q: 11 530 [55] 60
                       | H: 11 55 54          (encode_status_request, for reconciliation)
    10

21 (HandlInst = 1, automated execution, no broker intervention) only when ``begin`` is FIX.4.2,
where NewOrderSingle and OrderCancelReplaceRequest require it (FIX 4.2 has no OrderMassCancelRequest:
the gateway cancels order by order there); 44 is present for limit orders only; 18 (ExecInst) only when F_POST_ONLY ("6") and/or
F_REDUCE_ONLY ("E") is set; 55 on a mass cancel only for scope 1 (by instrument). SendingTime (52)
and TransactTime (60) are the same ``utc_ns`` rendered YYYYMMDD-HH:MM:SS.sss (callers take it from
``clock.tsc_to_utc_ns(cal, rdtsc())``). ``tcache`` (``new_time_cache()``, uint8[32], one per
encoder) keeps the last rendered millisecond, so messages within the same millisecond copy 21
bytes instead of running the calendar arithmetic again. ClOrdIDs are the u64 ids in decimal.

Instruments: ``instr`` is int64[n, INSTR_COLS] (PX_DEC, PX_MANT, QTY_DEC, QTY_MANT, SYM_LEN) and
``syms`` uint8[n, SYM_MAX]. A price of ``ticks`` is the decimal ``ticks * PX_MANT * 10**-PX_DEC``
and is rendered with exactly PX_DEC decimals (tick 0.05 -> mant 5, dec 2); quantities alike. No
float is involved anywhere. ``instrument_tables`` builds both arrays from decimal strings.

Parser
------
``parse_messages(buf, start, end, st, instr, syms, out, rx_tsc)`` walks complete messages in
``buf[start:end]`` and writes one exec record (records.ACK / FILL / REJECT, uint8[128] rows of
``out``) per in-sequence ExecutionReport (35=8) or OrderCancelReject (35=9). It returns one P_*
code and leaves its state in ``st`` (int64[ST_SIZE]):

    P_NEED_MORE    every complete message was consumed; st[ST_POS] is where the next (partial or
                   absent) message starts: keep buf[st[ST_POS]:end] and read more.
    P_OUT_FULL     ``out`` is full; publish st[ST_NOUT] records, then call again from st[ST_POS].
    P_SESSION_MSG  buf[st[ST_MSG_OFF]:st[ST_MSG_OFF] + st[ST_MSG_LEN]] is a valid message for the
                   session layer: an admin/other message type, or any message whose MsgSeqNum is
                   not st[ST_EXPECT_SEQ] (gap, duplicate, reset). st[ST_POS] is already past it.
                   The session layer handles it, updates st[ST_EXPECT_SEQ], and calls again.

Only in-sequence app messages are handled here (and st[ST_EXPECT_SEQ] advanced); every other
situation is the session layer's. Bad input never stops the stream: bytes that are not a FIX
message start are skipped to the next ``8=FIX`` (st[ST_GARBAGE_BYTES], st[ST_RESYNCS]), a message
with a wrong CheckSum is dropped without consuming its sequence number (st[ST_BAD_CHECKSUM]), an
ER/OCR whose fields cannot be decoded is skipped after its sequence number is consumed
(st[ST_BAD_MSG]). Every such event is counted so the gateway can log it.

Exec record mapping: 35=8 with 150=F (trade; FIX 4.2: 150=1 partial fill / 2 fill) -> FILL;
150=8 (rejected) -> REJECT
(is_cancel_reject 0, reason from 103); any other ExecType (new, canceled, replaced, pending,
order status I, expired...) -> ACK carrying exec_type and ord_status letters; 35=9 -> REJECT with
is_cancel_reject 1 and reason from 102. FIX 4.2 ExecTransType (20): 3 (status) makes the report
an ACK with exec_type I whatever its 150 (a 4.2 status reply carries the order's state in 150),
1 (cancel) and 2 (correct) of an earlier execution become ACKs with exec_type H / G (trade cancel /
correct: never a second fill). Header: venue and session from st[ST_VENUE]/st[ST_SESSION],
instrument from Symbol (55; unknown symbol -> st[ST_UNKNOWN_SYMBOL] counted, instrument
0xFFFFFFFF), origin_tsc = ``rx_tsc`` (when the bytes were received), F_POSS_DUP for 43=Y.
FILL.fee is Commission (12) in 1e-8 units; FILL.exec_id is the FNV-1a 64 hash of ExecID (17).
"""
from __future__ import annotations

from decimal import Decimal

import numpy as np
from numba import njit

from appliance import jit
from appliance.transport import records as R
from appliance.transport.intrinsics import bit_length

SOH = 1
SYM_MAX = 32
INSTR_COLS = 7
PX_DEC, PX_MANT, QTY_DEC, QTY_MANT, SYM_LEN, PX_MAX, QTY_MAX = range(INSTR_COLS)
UNITS_LIMIT = 10 ** 18   # |ticks * mant| and |lots * mant| stay below this (no int64 overflow)
COMP_ID_MAX = 64
FEE_DEC = 8
MAX_BODY_LEN = 65535
VENUE_ID_LEN = 24
TEXT_LEN = 48
NO_INSTRUMENT = 0xFFFFFFFF

# encoder result codes (negative; >= 0 is the number of bytes written)
E_OUT_FULL = -1        # fewer than MAX_MSG bytes left in the output buffer
E_BAD_RTYPE = -2       # record is not an order kind
E_BAD_INSTRUMENT = -3  # instrument index outside the instrument table
E_BAD_SIDE = -4
E_BAD_QTY = -5         # qty <= 0 (price may be any integer)
E_BAD_ORD_TYPE = -6
E_BAD_TIF = -7
E_BAD_SCOPE = -8       # mass cancel scope not 1 or 7
E_BAD_PRICE = -9       # |price ticks| too large for the instrument's tick mantissa
E_NAMES = {E_OUT_FULL: "output buffer full", E_BAD_RTYPE: "not an order record",
           E_BAD_INSTRUMENT: "unknown instrument", E_BAD_SIDE: "bad side", E_BAD_QTY: "qty <= 0 or too large",
           E_BAD_ORD_TYPE: "bad ord_type", E_BAD_TIF: "bad time in force",
           E_BAD_SCOPE: "bad mass-cancel scope", E_BAD_PRICE: "price out of range"}
MAX_MSG = 512          # an encoded order never exceeds this plus the session's constant bytes

# parser result codes
P_NEED_MORE = 0
P_OUT_FULL = 1
P_SESSION_MSG = 2

# parser state words (int64)
ST_POS = 0
ST_NOUT = 1
ST_MSG_OFF = 2
ST_MSG_LEN = 3
ST_EXPECT_SEQ = 4
ST_MSG_SEQ = 5         # MsgSeqNum of the last message framed (the session message on P_SESSION_MSG)
ST_MSG_TYPE = 6        # first byte of its MsgType
ST_GARBAGE_BYTES = 7
ST_RESYNCS = 8
ST_BAD_CHECKSUM = 9
ST_BAD_MSG = 10
ST_UNKNOWN_SYMBOL = 11
ST_VENUE = 12
ST_SESSION = 13
ST_APP_MSGS = 14       # ER/OCR turned into records
ST_SIZE = 16

# field offsets of the schema (derived from the dtypes of records.py)
_O_RTYPE = R.RTYPE_OFF
_O_VENUE = R.VENUE_OFF
_O_FLAGS = R.FLAGS_OFF
_O_INSTR = R.INSTRUMENT_OFF
_O_ORIGIN = R.ORIGIN_TSC_OFF
_O_CLORD = R.NEW_ORDER.fields["clord_id"][1]
_N_PRICE = R.NEW_ORDER.fields["price"][1]
_N_QTY = R.NEW_ORDER.fields["qty"][1]
_N_SIDE = R.NEW_ORDER.fields["side"][1]
_N_ORDTYPE = R.NEW_ORDER.fields["ord_type"][1]
_N_TIF = R.NEW_ORDER.fields["tif"][1]
_C_ORIG = R.CANCEL.fields["orig_clord_id"][1]
_C_QTY = R.CANCEL.fields["qty"][1]
_C_SIDE = R.CANCEL.fields["side"][1]
_R_ORIG = R.REPLACE.fields["orig_clord_id"][1]
_R_PRICE = R.REPLACE.fields["price"][1]
_R_QTY = R.REPLACE.fields["qty"][1]
_R_SIDE = R.REPLACE.fields["side"][1]
_R_ORDTYPE = R.REPLACE.fields["ord_type"][1]
_R_TIF = R.REPLACE.fields["tif"][1]
_M_SCOPE = R.MASS_CANCEL.fields["scope"][1]
# a REPLACE is a NEW_ORDER with orig_clord_id before its price: the order fields they share sit
# _R_SHIFT bytes further on (what _check_order / _order_fields rely on)
_R_SHIFT = _R_PRICE - _N_PRICE
assert (_R_QTY, _R_SIDE, _R_ORDTYPE, _R_TIF) == (_N_QTY + _R_SHIFT, _N_SIDE + _R_SHIFT,
                                                 _N_ORDTYPE + _R_SHIFT, _N_TIF + _R_SHIFT)
_X_CLORD = R.ACK.fields["clord_id"][1]
_X_ORIG = R.ACK.fields["orig_clord_id"][1]
_X_SESSION = R.ACK.fields["session"][1]
_A_PRICE = R.ACK.fields["price"][1]
_A_QTY = R.ACK.fields["qty"][1]
_A_LEAVES = R.ACK.fields["leaves_qty"][1]
_A_CUM = R.ACK.fields["cum_qty"][1]
_A_VID = R.ACK.fields["venue_order_id"][1]
_A_EXECTYPE = R.ACK.fields["exec_type"][1]
_A_ORDSTATUS = R.ACK.fields["ord_status"][1]
_A_SIDE = R.ACK.fields["side"][1]
_F_LASTPX = R.FILL.fields["last_price"][1]
_F_LASTQTY = R.FILL.fields["last_qty"][1]
_F_LEAVES = R.FILL.fields["leaves_qty"][1]
_F_CUM = R.FILL.fields["cum_qty"][1]
_F_FEE = R.FILL.fields["fee"][1]
_F_EXECID = R.FILL.fields["exec_id"][1]
_F_ORDSTATUS = R.FILL.fields["ord_status"][1]
_F_SIDE = R.FILL.fields["side"][1]
_F_LIQ = R.FILL.fields["liquidity"][1]
_J_REASON = R.REJECT.fields["reason"][1]
_J_ISCXL = R.REJECT.fields["is_cancel_reject"][1]
_J_ORDSTATUS = R.REJECT.fields["ord_status"][1]
_J_TEXT = R.REJECT.fields["text"][1]

_TIF_CHAR = np.array([0, ord("1"), ord("3"), ord("4"), ord("0")], dtype=np.uint8)  # by TIF_*


class CodecError(ValueError):
    """An order record could not be encoded (the message names why)."""


# ------------------------------------------------------------------------------------------------
# tables built once in Python
# ------------------------------------------------------------------------------------------------
def _decimal_parts(text: str, what: str) -> tuple[int, int]:
    d = Decimal(text)
    if not d.is_finite() or d <= 0:
        raise ValueError(f"{what}: {text!r} is not a positive decimal")
    sign, digits, exp = d.normalize().as_tuple()
    mant = int("".join(map(str, digits)))
    if exp > 0:
        mant *= 10 ** exp
        exp = 0
    if -exp > MAX_DEC:
        raise ValueError(f"{what}: {text!r} has more than {MAX_DEC} decimals")
    return mant, -exp


def instrument_tables(instruments) -> tuple[np.ndarray, np.ndarray]:
    """``instruments``: sequence of (symbol, tick_size, lot_size) with sizes as decimal strings
    (e.g. ("BTCUSDT", "0.01", "0.00001")). Returns (instr int64[n, INSTR_COLS], syms uint8[n, 32])."""
    n = len(instruments)
    instr = np.zeros((max(n, 1), INSTR_COLS), dtype=np.int64)
    syms = np.zeros((max(n, 1), SYM_MAX), dtype=np.uint8)
    for i, (sym, tick, lot) in enumerate(instruments):
        sb = sym.encode() if isinstance(sym, str) else bytes(sym)
        if not 0 < len(sb) <= SYM_MAX or b"\x01" in sb or b"=" in sb:
            raise ValueError(f"instrument {i}: symbol {sym!r} must be 1..{SYM_MAX} bytes without SOH or '='")
        pm, pd = _decimal_parts(str(tick), f"instrument {sym}: tick_size")
        qm, qd = _decimal_parts(str(lot), f"instrument {sym}: lot_size")
        instr[i] = (pd, pm, qd, qm, len(sb), UNITS_LIMIT // pm, UNITS_LIMIT // qm)
        syms[i, :len(sb)] = np.frombuffer(sb, dtype=np.uint8)
    if n == 0:
        instr = instr[:0]
        syms = syms[:0]
    return instr, syms


def session_constants(begin_string: str, sender: str, target: str) -> tuple[np.ndarray, np.ndarray]:
    """The prebuilt constant bytes of a session: ``8=BEGIN<SOH>`` and ``49=S<SOH>56=T<SOH>``."""
    for name, v in (("begin_string", begin_string), ("sender_comp_id", sender), ("target_comp_id", target)):
        if not v or "\x01" in v or "=" in v or len(v) > COMP_ID_MAX:
            raise ValueError(f"{name}: {v!r} must be 1..{COMP_ID_MAX} characters without SOH or '='")
    b = f"8={begin_string}\x01".encode()
    c = f"49={sender}\x0156={target}\x01".encode()
    return np.frombuffer(b, dtype=np.uint8).copy(), np.frombuffer(c, dtype=np.uint8).copy()


def new_time_cache() -> np.ndarray:
    """Per-encoder cache of the last rendered timestamp (bytes 0..20) and its millisecond + 1
    (bytes 24..31; 0 = empty)."""
    return np.zeros(32, dtype=np.uint8)


def new_parser_state(expect_seq: int = 1, venue: int = R.VENUE_SIM, session: int = 0) -> np.ndarray:
    st = np.zeros(ST_SIZE, dtype=np.int64)
    st[ST_EXPECT_SEQ] = expect_seq
    st[ST_VENUE] = venue
    st[ST_SESSION] = session
    return st


# ------------------------------------------------------------------------------------------------
# little-endian field access on uint8 rows
# ------------------------------------------------------------------------------------------------
@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def ld_u64(b, o):
    v = np.uint64(0)
    for i in range(8):
        v |= np.uint64(b[o + i]) << np.uint64(8 * i)
    return v


@njit(**jit.HELPER)
def ld_i64(b, o):
    return np.int64(ld_u64(b, o))


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def ld_u32(b, o):
    return np.uint32(b[o]) | (np.uint32(b[o + 1]) << np.uint32(8)) | \
        (np.uint32(b[o + 2]) << np.uint32(16)) | (np.uint32(b[o + 3]) << np.uint32(24))


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def st_u64(b, o, v):
    x = np.uint64(v)
    for i in range(8):
        b[o + i] = np.uint8((x >> np.uint64(8 * i)) & np.uint64(0xFF))


@njit(**jit.HELPER)
def st_u32(b, o, v):
    x = np.uint32(v)
    for i in range(4):
        b[o + i] = np.uint8((x >> np.uint32(8 * i)) & np.uint32(0xFF))


@njit(**jit.HELPER)
def st_u16(b, o, v):
    b[o] = np.uint8(v & 0xFF)
    b[o + 1] = np.uint8((v >> 8) & 0xFF)


# ------------------------------------------------------------------------------------------------
# encoder pieces
# ------------------------------------------------------------------------------------------------
MAX_DEC = 18      # decimals of a tick or lot size at most (put_decimal's power-of-ten table)
_POW10 = np.array([10 ** i for i in range(20)], dtype=np.uint64)
_DIGIT_PAIRS = np.frombuffer(b"".join(b"%02d" % i for i in range(100)), np.uint8).copy()


@njit(**jit.HELPER)
def _n_digits(v):
    """Decimal digits of uint64 ``v`` (1 for 0): one ``lzcnt``, a multiply and one compare
    (bits * log10(2) ~ bits * 1233 / 4096), no division and no loop: a digit-count loop's exit
    is a branch the predictor gets wrong on a cold path."""
    w = v | np.uint64(1)
    t = (bit_length(w) * 1233) >> 12
    return t + 1 - (1 if w < _POW10[t] else 0)


@njit(**jit.HELPER)
def _put_digits(out, q, x):
    """The decimal digits of uint64 ``x`` ending just before out[q], two per division."""
    while x >= np.uint64(100):
        r = x % np.uint64(100)
        x //= np.uint64(100)
        q -= 2
        out[q] = _DIGIT_PAIRS[2 * r]
        out[q + 1] = _DIGIT_PAIRS[2 * r + 1]
    if x >= np.uint64(10):
        out[q - 2] = _DIGIT_PAIRS[2 * x]
        out[q - 1] = _DIGIT_PAIRS[2 * x + 1]
    else:
        out[q - 1] = np.uint8(48 + x)


@njit(**jit.HELPER)
def put_padded(out, e, x, n):
    """Exactly ``n`` decimal digits of uint64 ``x`` (leading zeros; higher digits dropped) ending
    just before out[e], two per division."""
    q = e
    k = n
    while k >= 2:
        r = x % np.uint64(100)
        x //= np.uint64(100)
        q -= 2
        out[q] = _DIGIT_PAIRS[2 * r]
        out[q + 1] = _DIGIT_PAIRS[2 * r + 1]
        k -= 2
    if k == 1:
        out[q - 1] = np.uint8(48 + x % np.uint64(10))


@njit(**jit.HELPER)
def put_uint(out, p, v):
    """Decimal digits of uint64 ``v`` at out[p:]; returns the position after them."""
    x = np.uint64(v)
    e = p + _n_digits(x)
    _put_digits(out, e, x)
    return e


@njit(**jit.HELPER)
def put_tag(out, p, tag):
    p = put_uint(out, p, tag)
    out[p] = 61  # '='
    return p + 1


@njit(**jit.HELPER)
def put_decimal(out, p, value, dec):
    """Signed integer ``value`` scaled by 10**-dec, with exactly ``dec`` decimals."""
    if value < 0:
        out[p] = 45  # '-'
        p += 1
        x = np.uint64(-value)
    else:
        x = np.uint64(value)
    if dec <= 0:
        return put_uint(out, p, x)
    pw = _POW10[dec]
    ip = x // pw
    fp = x - ip * pw
    e = p + _n_digits(ip)             # the integer part, "0" at least
    _put_digits(out, e, ip)
    out[e] = 46  # '.'
    put_padded(out, e + 1 + dec, fp, dec)     # the fraction, exactly dec digits
    return e + 1 + dec


@njit(cache=True, nogil=True, _nrt=False, inline="always", no_cpython_wrapper=True)
def put_bytes(out, p, src, n):
    for i in range(n):
        out[p + i] = src[i]
    return p + n


@njit(**jit.HELPER)
def _put2(out, p, v):
    out[p] = np.uint8(48 + v // 10)
    out[p + 1] = np.uint8(48 + v % 10)


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def put_utc_timestamp(out, p, utc_ns):
    """YYYYMMDD-HH:MM:SS.sss of UTC ns since the epoch (civil-from-days, integers only)."""
    ms_total = utc_ns // 1_000_000
    days = ms_total // 86_400_000
    ms_day = ms_total - days * 86_400_000
    z = days + 719468
    era = (z if z >= 0 else z - 146096) // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    if m <= 2:
        y += 1
    _put2(out, p, y // 100)
    _put2(out, p + 2, y % 100)
    _put2(out, p + 4, m)
    _put2(out, p + 6, d)
    out[p + 8] = 45  # '-'
    secs = ms_day // 1000
    ms = ms_day - secs * 1000
    _put2(out, p + 9, secs // 3600)
    out[p + 11] = 58
    _put2(out, p + 12, (secs // 60) % 60)
    out[p + 14] = 58
    _put2(out, p + 15, secs % 60)
    out[p + 17] = 46
    out[p + 18] = np.uint8(48 + ms // 100)
    _put2(out, p + 19, ms % 100)
    return p + 21


@njit(**jit.HELPER)
def _field_uint(out, p, tag, v):
    p = put_tag(out, p, tag)
    p = put_uint(out, p, v)
    out[p] = SOH
    return p + 1


@njit(cache=True, nogil=True, _nrt=False, inline="always", no_cpython_wrapper=True)
def _field_char(out, p, tag, c):
    p = put_tag(out, p, tag)
    out[p] = c
    out[p + 1] = SOH
    return p + 2


@njit(**jit.HELPER)
def _field_decimal(out, p, tag, v, dec):
    p = put_tag(out, p, tag)
    p = put_decimal(out, p, v, dec)
    out[p] = SOH
    return p + 1


@njit(**jit.HELPER)
def _field_symbol(out, p, instr, syms, i):
    p = put_tag(out, p, 55)
    n = instr[i, SYM_LEN]
    for k in range(n):
        out[p + k] = syms[i, k]
    out[p + n] = SOH
    return p + n + 1


@njit(**jit.HELPER)
def _field_time_cached(out, p, tag, utc_ns, tcache):
    """tag=<utc_ns rendered>, from the cache when it holds the same millisecond; when it holds
    another millisecond of the same second only the three millisecond digits are rendered (a
    live order is usually the first of its millisecond, seldom of its second)."""
    p = put_tag(out, p, tag)
    ms1 = utc_ns // 1_000_000 + 1
    held = ld_i64(tcache, 24)
    if held != ms1:
        if held > 0 and (held - 1) // 1000 == (ms1 - 1) // 1000:
            ms = (ms1 - 1) % 1000
            tcache[18] = np.uint8(48 + ms // 100)
            _put2(tcache, 19, ms % 100)
        else:
            put_utc_timestamp(tcache, 0, utc_ns)
        st_u64(tcache, 24, ms1)
    for k in range(21):
        out[p + k] = tcache[k]
    out[p + 21] = SOH
    return p + 22


@njit(**jit.HELPER)
def _field_time_copy(out, p, src):
    """60=<the 21 timestamp bytes already rendered at out[src:]> (TransactTime = SendingTime)."""
    out[p] = 54  # '6'
    out[p + 1] = 48
    out[p + 2] = 61
    for k in range(21):
        out[p + 3 + k] = out[src + k]
    out[p + 24] = SOH
    return p + 25


@njit(**jit.HELPER)
def _field_exec_inst(out, p, flags):
    post = (flags & R.F_POST_ONLY) != 0
    red = (flags & R.F_REDUCE_ONLY) != 0
    if not (post or red):
        return p
    p = put_tag(out, p, 18)
    if post:
        out[p] = 54  # '6' participate, don't initiate
        p += 1
        if red:
            out[p] = 32
            p += 1
    if red:
        out[p] = 69  # 'E' do not increase
        p += 1
    out[p] = SOH
    return p + 1


@njit(**jit.HELPER)
def _begin_message(out, off, begin, comp, msgtype, seq, utc_ns, tcache):
    """Writes 8=..|9=NNN|35=X|49..|56..|34=seq|52=ts| assuming a 3-digit BodyLength; returns
    (position after the header, body start, position of the rendered timestamp)."""
    p = put_bytes(out, off, begin, begin.shape[0])
    out[p] = 57  # '9'
    out[p + 1] = 61
    out[p + 5] = SOH
    body = p + 6
    p = body
    out[p] = 51  # '3'
    out[p + 1] = 53  # '5'
    out[p + 2] = 61
    out[p + 3] = msgtype
    out[p + 4] = SOH
    p = put_bytes(out, p + 5, comp, comp.shape[0])
    p = _field_uint(out, p, 34, seq)
    ts = p + 3
    p = _field_time_cached(out, p, 52, utc_ns, tcache)
    return p, body, ts


@njit(**jit.HELPER)
def _finish_message(out, off, blen_pos, body, end):
    """Fills BodyLength (moving the body when it is not 3 digits long) and appends CheckSum.
    Returns the total message length."""
    blen = end - body
    nd = _n_digits(np.uint64(blen))
    if nd != 3:
        shift = nd - 3
        if shift > 0:
            for i in range(end - 1, body - 1, -1):
                out[i + shift] = out[i]
        else:
            for i in range(body, end):
                out[i + shift] = out[i]
        end += shift
        out[blen_pos + 2 + nd] = SOH
    put_uint(out, blen_pos + 2, blen)
    s = np.uint32(0)
    for i in range(off, end):
        s += np.uint32(out[i])
    s &= np.uint32(0xFF)
    out[end] = 49  # '1'
    out[end + 1] = 48  # '0'
    out[end + 2] = 61
    out[end + 3] = np.uint8(48 + s // np.uint32(100))
    out[end + 4] = np.uint8(48 + (s // np.uint32(10)) % np.uint32(10))
    out[end + 5] = np.uint8(48 + s % np.uint32(10))
    out[end + 6] = SOH
    return end + 7 - off


@njit(cache=True, nogil=True, _nrt=False, inline="always", no_cpython_wrapper=True)
def is_fix42(begin):
    """True when the prebuilt ``8=FIX.4.2<SOH>`` is FIX 4.2 (the one dialect difference the
    encoder knows: HandlInst)."""
    return begin.shape[0] >= 9 and begin[6] == 52 and begin[8] == 50


@njit(**jit.HELPER)
def _check_common(rec, instr):
    inst = ld_u32(rec, _O_INSTR)
    if inst >= np.uint32(instr.shape[0]):
        return E_BAD_INSTRUMENT
    return 0


@njit(**jit.HELPER)
def _check_side(side):
    if side != R.SIDE_BUY and side != R.SIDE_SELL:
        return E_BAD_SIDE
    return 0


@njit(**jit.HELPER)
def _check_type_tif(ord_type, tif):
    if ord_type != R.ORD_LIMIT and ord_type != R.ORD_MARKET:
        return E_BAD_ORD_TYPE
    if tif < 1 or tif > 4:
        return E_BAD_TIF
    return 0


@njit(**jit.HELPER)
def _order_values(rec, d):
    """(side, ord_type, tif, qty, price, flags) of a NEW_ORDER (``d`` 0) or REPLACE (``d``
    _R_SHIFT) record, read once, before anything is written."""
    return (np.int64(rec[_N_SIDE + d]), np.int64(rec[_N_ORDTYPE + d]), np.int64(rec[_N_TIF + d]),
            ld_i64(rec, _N_QTY + d), ld_i64(rec, _N_PRICE + d),
            np.int64(rec[_O_FLAGS]) | (np.int64(rec[_O_FLAGS + 1]) << 8))


@njit(**jit.HELPER)
def _check_order(o, instr, inst):
    """0 or the E_* code of an order's side, type, time in force, quantity and limit price
    (``o``: :func:`_order_values`)."""
    side, ot, tif, qty, px, _flags = o
    e = _check_side(side)
    if e == 0:
        e = _check_type_tif(ot, tif)
    if e == 0 and (qty <= 0 or qty > instr[inst, QTY_MAX]):
        e = E_BAD_QTY
    if e == 0 and ot == R.ORD_LIMIT and (px > instr[inst, PX_MAX] or px < -instr[inst, PX_MAX]):
        e = E_BAD_PRICE
    return e


@njit(**jit.HELPER)
def _order_fields(out, p, begin, instr, syms, inst, clord, o, ts):
    """The fields a NewOrderSingle and an OrderCancelReplaceRequest share, from ClOrdID on:
    11 [21 on FIX 4.2] 55 54 38 40 [44] 59 [18] 60 (``o``: :func:`_order_values`)."""
    side, ot, tif, qty, px, flags = o
    p = _field_uint(out, p, 11, clord)
    if is_fix42(begin):
        p = _field_char(out, p, 21, 49)
    p = _field_symbol(out, p, instr, syms, inst)
    p = _field_char(out, p, 54, 48 + side)
    p = _field_decimal(out, p, 38, qty * instr[inst, QTY_MANT], instr[inst, QTY_DEC])
    p = _field_char(out, p, 40, 50 if ot == R.ORD_LIMIT else 49)
    if ot == R.ORD_LIMIT:
        p = _field_decimal(out, p, 44, px * instr[inst, PX_MANT], instr[inst, PX_DEC])
    p = _field_char(out, p, 59, _TIF_CHAR[tif])
    p = _field_exec_inst(out, p, flags)
    return _field_time_copy(out, p, ts)


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def encode_order(rec, out, off, begin, comp, seq, utc_ns, tcache, instr, syms):
    """One order record -> one FIX message at out[off:]; bytes written or a negative E_* code."""
    if out.shape[0] - off < MAX_MSG + begin.shape[0] + comp.shape[0]:
        return E_OUT_FULL
    rt = rec[_O_RTYPE]
    e = _check_common(rec, instr)
    if e != 0 and rt != R.RT_MASS_CANCEL:
        return e
    inst = ld_u32(rec, _O_INSTR)
    clord = ld_u64(rec, _O_CLORD)
    if rt == R.RT_NEW_ORDER:
        o = _order_values(rec, 0)
        e = _check_order(o, instr, inst)
        if e != 0:
            return e
        p, body, ts = _begin_message(out, off, begin, comp, 68, seq, utc_ns, tcache)  # 'D'
        p = _order_fields(out, p, begin, instr, syms, inst, clord, o, ts)
    elif rt == R.RT_CANCEL:
        side = rec[_C_SIDE]
        qty = ld_i64(rec, _C_QTY)
        e = _check_side(side)
        if e == 0 and (qty <= 0 or qty > instr[inst, QTY_MAX]):
            e = E_BAD_QTY
        if e != 0:
            return e
        p, body, ts = _begin_message(out, off, begin, comp, 70, seq, utc_ns, tcache)  # 'F'
        p = _field_uint(out, p, 41, ld_u64(rec, _C_ORIG))
        p = _field_uint(out, p, 11, clord)
        p = _field_symbol(out, p, instr, syms, inst)
        p = _field_char(out, p, 54, 48 + side)
        p = _field_decimal(out, p, 38, qty * instr[inst, QTY_MANT], instr[inst, QTY_DEC])
        p = _field_time_copy(out, p, ts)
    elif rt == R.RT_REPLACE:
        o = _order_values(rec, _R_SHIFT)
        e = _check_order(o, instr, inst)
        if e != 0:
            return e
        orig = ld_u64(rec, _R_ORIG)
        p, body, ts = _begin_message(out, off, begin, comp, 71, seq, utc_ns, tcache)  # 'G'
        p = _field_uint(out, p, 41, orig)
        p = _order_fields(out, p, begin, instr, syms, inst, clord, o, ts)
    elif rt == R.RT_MASS_CANCEL:
        scope = rec[_M_SCOPE]
        if scope != 1 and scope != 7:
            return E_BAD_SCOPE
        if scope == 1 and e != 0:
            return e
        p, body, ts = _begin_message(out, off, begin, comp, 113, seq, utc_ns, tcache)  # 'q'
        p = _field_uint(out, p, 11, clord)
        p = _field_uint(out, p, 530, scope)
        if scope == 1:
            p = _field_symbol(out, p, instr, syms, inst)
        p = _field_time_copy(out, p, ts)
    else:
        return E_BAD_RTYPE
    return _finish_message(out, off, off + begin.shape[0], body, p)


@njit(cache=True, nogil=True, _nrt=False)
def encode_status_request(out, off, begin, comp, seq, utc_ns, tcache, instr, syms, order):
    """OrderStatusRequest (35=H: 11 55 54) for reconciliation of ``order`` ``(clord_id (uint64),
    instrument, side)``; bytes written or E_* code."""
    clord_id, instrument, side = order
    if out.shape[0] - off < MAX_MSG + begin.shape[0] + comp.shape[0]:
        return E_OUT_FULL
    if instrument < 0 or instrument >= instr.shape[0]:
        return E_BAD_INSTRUMENT
    if _check_side(side) != 0:
        return E_BAD_SIDE
    p, body, ts = _begin_message(out, off, begin, comp, 72, seq, utc_ns, tcache)  # 'H'
    p = _field_uint(out, p, 11, clord_id)
    p = _field_symbol(out, p, instr, syms, instrument)
    p = _field_char(out, p, 54, 48 + side)
    return _finish_message(out, off, off + begin.shape[0], body, p)


# ------------------------------------------------------------------------------------------------
# parser pieces
# ------------------------------------------------------------------------------------------------
@njit(**jit.HELPER)
def _find_start(buf, pos, end):
    """Next index >= pos where ``8=FIX`` starts, or -1 when not in buf[pos:end] (a possible
    prefix of it at the very end is not skipped: returns its index)."""
    i = pos
    while i < end:
        if buf[i] == 56:  # '8'
            k = 1
            ok = True
            while k < 5 and i + k < end:
                c = buf[i + k]
                if (k == 1 and c != 61) or (k == 2 and c != 70) or (k == 3 and c != 73) or (k == 4 and c != 88):
                    ok = False
                    break
                k += 1
            if ok:
                return i
        i += 1
    return -1


@njit(**jit.HELPER)
def _parse_uint(buf, a, b):
    """Unsigned decimal in buf[a:b]; -1 when empty, not all digits or longer than 18 digits."""
    if b <= a or b - a > 18:
        return -1
    v = np.int64(0)
    for i in range(a, b):
        c = buf[i]
        if c < 48 or c > 57:
            return -1
        v = v * 10 + (c - 48)
    return v


@njit(**jit.HELPER)
def _parse_u64(buf, a, b):
    """uint64 decimal (ClOrdID); (ok, value)."""
    if b <= a or b - a > 20:
        return False, np.uint64(0)
    v = np.uint64(0)
    for i in range(a, b):
        c = buf[i]
        if c < 48 or c > 57:
            return False, np.uint64(0)
        d = np.uint64(c - 48)
        if v > np.uint64(1844674407370955161) or (v == np.uint64(1844674407370955161) and d > np.uint64(5)):
            return False, np.uint64(0)
        v = v * np.uint64(10) + d
    return True, v


@njit(**jit.HELPER)
def _parse_scaled(buf, a, b, dec):
    """Decimal text in buf[a:b] as an integer scaled by 10**dec; (ok, value). Digits beyond
    ``dec`` decimals must be zeros (else not ok)."""
    if b <= a:
        return False, np.int64(0)
    neg = False
    i = a
    if buf[i] == 45:
        neg = True
        i += 1
    v = np.int64(0)
    ndig = 0
    frac = -1
    extra_nonzero = False
    while i < b:
        c = buf[i]
        if c == 46:
            if frac >= 0:
                return False, np.int64(0)
            frac = 0
        elif 48 <= c <= 57:
            if frac >= dec:
                if c != 48:
                    extra_nonzero = True
            else:
                if ndig >= 18:
                    return False, np.int64(0)
                v = v * 10 + (c - 48)
                if v != 0:
                    ndig += 1
                if frac >= 0:
                    frac += 1
        else:
            return False, np.int64(0)
        i += 1
    if extra_nonzero:
        return False, np.int64(0)
    if frac < 0:
        frac = 0
    while frac < dec:
        if ndig >= 18:
            return False, np.int64(0)
        v *= 10
        if v != 0:
            ndig += 1
        frac += 1
    return True, (-v if neg else v)


@njit(**jit.HELPER)
def _to_units(buf, a, b, dec, mant):
    """Decimal text -> integer ticks/lots of an instrument; (ok, value). Values off the grid are
    not ok."""
    ok, v = _parse_scaled(buf, a, b, dec)
    if not ok or mant <= 0:
        return False, np.int64(0)
    q = v // mant
    if q * mant != v:
        return False, np.int64(0)
    return True, q


@njit(**jit.HELPER)
def _fnv1a(buf, a, b):
    h = np.uint64(14695981039346656037)
    for i in range(a, b):
        h ^= np.uint64(buf[i])
        h *= np.uint64(1099511628211)
    return h


@njit(**jit.HELPER)
def _lookup_symbol(buf, a, b, instr, syms):
    n = b - a
    for i in range(instr.shape[0]):
        if instr[i, SYM_LEN] != n:
            continue
        same = True
        for k in range(n):
            if syms[i, k] != buf[a + k]:
                same = False
                break
        if same:
            return i
    return -1


# frame results
_FR_OK = 0
_FR_PARTIAL = 1
_FR_GARBAGE = 2
_FR_BAD_CHECKSUM = 3


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def _frame(buf, pos, end):
    """Frame the message starting at buf[pos] (which starts with ``8=FIX`` or a prefix of it).
    Returns (result, body start, body end = index of the CheckSum tag, message end)."""
    i = pos + 2
    lim = min(end, pos + 40)
    while i < lim and buf[i] != SOH:
        i += 1
    if i >= lim:
        return (_FR_PARTIAL if end - pos < 40 else _FR_GARBAGE), 0, 0, 0
    # BodyLength
    i += 1
    if i + 2 > end:
        return _FR_PARTIAL, 0, 0, 0
    if buf[i] != 57 or buf[i + 1] != 61:
        return _FR_GARBAGE, 0, 0, 0
    j = i + 2
    blen = 0
    nd = 0
    while j < end and buf[j] != SOH:
        c = buf[j]
        if c < 48 or c > 57 or nd >= 6:
            return _FR_GARBAGE, 0, 0, 0
        blen = blen * 10 + (c - 48)
        nd += 1
        j += 1
    if j >= end:
        return _FR_PARTIAL, 0, 0, 0
    if nd == 0 or blen > MAX_BODY_LEN or blen < 5:
        return _FR_GARBAGE, 0, 0, 0
    body = j + 1
    bend = body + blen
    mend = bend + 7
    if mend > end:
        return _FR_PARTIAL, 0, 0, 0
    if buf[bend - 1] != SOH or buf[bend] != 49 or buf[bend + 1] != 48 or buf[bend + 2] != 61 or buf[bend + 6] != SOH:
        return _FR_GARBAGE, 0, 0, 0
    cs = 0
    for k in range(3):
        c = buf[bend + 3 + k]
        if c < 48 or c > 57:
            return _FR_GARBAGE, 0, 0, 0
        cs = cs * 10 + (c - 48)
    s = np.uint32(0)
    for k in range(pos, bend):
        s += np.uint32(buf[k])
    if (s & np.uint32(0xFF)) != np.uint32(cs):
        return _FR_BAD_CHECKSUM, body, bend, mend
    return _FR_OK, body, bend, mend


@njit(**jit.HELPER)
def _copy_text(row, o, cap, buf, a, b):
    n = min(b - a, cap)
    for k in range(n):
        row[o + k] = buf[a + k]


@njit(**jit.HELPER)
def _decode_app(buf, body, bend, mtype, st, instr, syms, row, rx_tsc):
    """Decode an ER (mtype '8') or OCR ('9') body into ``row``. False when malformed."""
    # field spans (start, end) of interest; -1 = absent
    a11 = -1; b11 = -1; a41 = -1; b41 = -1; a37 = -1; b37 = -1; a17 = -1; b17 = -1
    a44 = -1; b44 = -1; a38 = -1; b38 = -1; a31 = -1; b31 = -1; a32 = -1; b32 = -1
    a151 = -1; b151 = -1; a14 = -1; b14 = -1; a12 = -1; b12 = -1; a58 = -1; b58 = -1
    a55 = -1; b55 = -1
    exec_type = 0
    ord_status = 0
    side = 0
    liq = 0
    reason = 0
    trans = 0
    possdup = False
    i = body
    while i < bend:
        tag = 0
        while i < bend and buf[i] != 61:
            c = buf[i]
            if c < 48 or c > 57:
                return False
            tag = tag * 10 + (c - 48)
            i += 1
        i += 1
        a = i
        while i < bend and buf[i] != SOH:
            i += 1
        b = i
        i += 1
        if tag == 11:
            a11 = a; b11 = b
        elif tag == 41:
            a41 = a; b41 = b
        elif tag == 37:
            a37 = a; b37 = b
        elif tag == 17:
            a17 = a; b17 = b
        elif tag == 150:
            exec_type = buf[a] if b > a else 0
        elif tag == 39:
            ord_status = buf[a] if b > a else 0
        elif tag == 54:
            side = (buf[a] - 48) if b == a + 1 else 0
        elif tag == 55:
            a55 = a; b55 = b
        elif tag == 44:
            a44 = a; b44 = b
        elif tag == 38:
            a38 = a; b38 = b
        elif tag == 31:
            a31 = a; b31 = b
        elif tag == 32:
            a32 = a; b32 = b
        elif tag == 151:
            a151 = a; b151 = b
        elif tag == 14:
            a14 = a; b14 = b
        elif tag == 12:
            a12 = a; b12 = b
        elif tag == 58:
            a58 = a; b58 = b
        elif tag == 851:
            liq = _parse_uint(buf, a, b)
        elif tag == 103 or tag == 102:
            reason = _parse_uint(buf, a, b)
        elif tag == 43:
            possdup = b == a + 1 and buf[a] == 89
        elif tag == 20:
            trans = buf[a] if b == a + 1 else 0
    for k in range(R.EXEC_RECORD_SIZE):
        row[k] = 0
    inst = -1
    if a55 >= 0:
        inst = _lookup_symbol(buf, a55, b55, instr, syms)
        if inst < 0:
            st[ST_UNKNOWN_SYMBOL] += 1
    if inst >= 0:
        st_u32(row, _O_INSTR, inst)
    else:
        st_u32(row, _O_INSTR, NO_INSTRUMENT)
    row[_O_VENUE] = np.uint8(st[ST_VENUE])
    st_u16(row, _O_FLAGS, R.F_POSS_DUP if possdup else 0)
    st_u64(row, _O_ORIGIN, rx_tsc)
    st_u32(row, _X_SESSION, st[ST_SESSION])
    if a11 < 0:
        return False
    ok, v = _parse_u64(buf, a11, b11)
    if not ok:
        return False
    st_u64(row, _X_CLORD, v)
    if a41 >= 0:
        ok, v = _parse_u64(buf, a41, b41)
        if ok:
            st_u64(row, _X_ORIG, v)
    pdec = instr[inst, PX_DEC] if inst >= 0 else 0
    pmant = instr[inst, PX_MANT] if inst >= 0 else 1
    qdec = instr[inst, QTY_DEC] if inst >= 0 else 0
    qmant = instr[inst, QTY_MANT] if inst >= 0 else 1
    if mtype == 57:  # '9' OrderCancelReject
        row[_O_RTYPE] = R.RT_REJECT
        row[_J_ISCXL] = 1
        row[_J_ORDSTATUS] = ord_status
        st_u16(row, _J_REASON, reason if reason > 0 else 0)
        if a58 >= 0:
            _copy_text(row, _J_TEXT, TEXT_LEN, buf, a58, b58)
        return True
    if exec_type == 0 or ord_status == 0:
        return False
    if trans == 51:                      # 20=3 status (FIX 4.2)
        exec_type = R.EXEC_ORDER_STATUS
    elif trans == 49:                    # 20=1 cancel of an earlier execution
        exec_type = 72                   # 'H' trade cancel
    elif trans == 50:                    # 20=2 correct
        exec_type = 71                   # 'G' trade correct
    elif exec_type == 49 or exec_type == 50:   # FIX 4.2 150=1 / 2: partial fill / fill
        exec_type = R.EXEC_TRADE
    if exec_type == R.EXEC_REJECTED:
        row[_O_RTYPE] = R.RT_REJECT
        row[_J_ISCXL] = 0
        row[_J_ORDSTATUS] = ord_status
        st_u16(row, _J_REASON, reason if reason > 0 else 0)
        if a58 >= 0:
            _copy_text(row, _J_TEXT, TEXT_LEN, buf, a58, b58)
        return True
    if inst < 0:
        return False  # quantities cannot be scaled without the instrument
    if a151 < 0 or a14 < 0:
        return False
    ok1, leaves = _to_units(buf, a151, b151, qdec, qmant)
    ok2, cum = _to_units(buf, a14, b14, qdec, qmant)
    if not (ok1 and ok2):
        return False
    if exec_type == R.EXEC_TRADE:
        if a31 < 0 or a32 < 0:
            return False
        ok1, lpx = _to_units(buf, a31, b31, pdec, pmant)
        ok2, lqty = _to_units(buf, a32, b32, qdec, qmant)
        if not (ok1 and ok2):
            return False
        row[_O_RTYPE] = R.RT_FILL
        st_u64(row, _F_LASTPX, lpx)
        st_u64(row, _F_LASTQTY, lqty)
        st_u64(row, _F_LEAVES, leaves)
        st_u64(row, _F_CUM, cum)
        if a12 >= 0:
            ok, fee = _parse_scaled(buf, a12, b12, FEE_DEC)
            if not ok:
                return False
            st_u64(row, _F_FEE, fee)
        if a17 >= 0:
            st_u64(row, _F_EXECID, _fnv1a(buf, a17, b17))
        row[_F_ORDSTATUS] = ord_status
        row[_F_SIDE] = side if 0 < side < 3 else 0
        row[_F_LIQ] = liq if 0 < liq < 3 else 0
        return True
    row[_O_RTYPE] = R.RT_ACK
    px = np.int64(0)
    if a44 >= 0:
        ok, px = _to_units(buf, a44, b44, pdec, pmant)
        if not ok:
            return False
    qty = np.int64(0)
    if a38 >= 0:
        ok, qty = _to_units(buf, a38, b38, qdec, qmant)
        if not ok:
            return False
    st_u64(row, _A_PRICE, px)
    st_u64(row, _A_QTY, qty)
    st_u64(row, _A_LEAVES, leaves)
    st_u64(row, _A_CUM, cum)
    if a37 >= 0:
        _copy_text(row, _A_VID, VENUE_ID_LEN, buf, a37, b37)
    row[_A_EXECTYPE] = exec_type
    row[_A_ORDSTATUS] = ord_status
    row[_A_SIDE] = side if 0 < side < 3 else 0
    return True


@njit(cache=True, nogil=True, _nrt=False)
def parse_messages(buf, start, end, st, instr, syms, out, rx_tsc):
    """See the module docstring. Allocation-free; returns a P_* code."""
    pos = start
    nout = 0
    code = P_NEED_MORE
    while True:
        if pos >= end:
            break
        if nout >= out.shape[0]:
            code = P_OUT_FULL
            break
        s = _find_start(buf, pos, end)
        if s < 0:
            st[ST_GARBAGE_BYTES] += end - pos
            st[ST_RESYNCS] += 1
            pos = end
            break
        if s > pos:
            st[ST_GARBAGE_BYTES] += s - pos
            st[ST_RESYNCS] += 1
            pos = s
        r, body, bend, mend = _frame(buf, pos, end)
        if r == _FR_PARTIAL:
            break
        if r == _FR_GARBAGE:
            st[ST_GARBAGE_BYTES] += 1
            st[ST_RESYNCS] += 1
            pos += 1
            continue
        if r == _FR_BAD_CHECKSUM:
            st[ST_BAD_CHECKSUM] += 1
            pos = mend
            continue
        # first field must be 35=
        if bend - body < 5 or buf[body] != 51 or buf[body + 1] != 53 or buf[body + 2] != 61:
            st[ST_BAD_MSG] += 1
            pos = mend
            continue
        mtype = buf[body + 3]
        single = buf[body + 4] == SOH
        # MsgSeqNum
        seq = np.int64(-1)
        i = body
        while i + 3 < bend:
            if buf[i] == SOH and buf[i + 1] == 51 and buf[i + 2] == 52 and buf[i + 3] == 61:
                j = i + 4
                k = j
                while k < bend and buf[k] != SOH:
                    k += 1
                seq = _parse_uint(buf, j, k)
                break
            i += 1
        st[ST_MSG_SEQ] = seq
        st[ST_MSG_TYPE] = mtype
        if not single or (mtype != 56 and mtype != 57) or seq != st[ST_EXPECT_SEQ]:
            st[ST_MSG_OFF] = pos
            st[ST_MSG_LEN] = mend - pos
            pos = mend
            code = P_SESSION_MSG
            break
        st[ST_EXPECT_SEQ] = seq + 1
        if _decode_app(buf, body, bend, mtype, st, instr, syms, out[nout], rx_tsc):
            nout += 1
            st[ST_APP_MSGS] += 1
        else:
            st[ST_BAD_MSG] += 1
        pos = mend
    st[ST_POS] = pos
    st[ST_NOUT] = nout
    return code


@njit(cache=True, nogil=True, _nrt=False)
def decode_app_message(buf, off, length, st, instr, syms, row, rx_tsc):
    """Decode one complete, already framed ER/OCR (e.g. one the session layer received out of
    sequence as a PossDup resend) into ``row`` regardless of MsgSeqNum. True when decoded."""
    body = off
    while body < off + length and not (buf[body] == 51 and buf[body + 1] == 53 and buf[body + 2] == 61 and buf[body - 1] == SOH):
        body += 1
    bend = off + length - 7
    if body + 4 >= bend:
        return False
    mtype = buf[body + 3]
    if mtype != 56 and mtype != 57:
        return False
    return _decode_app(buf, body, bend, mtype, st, instr, syms, row, rx_tsc)


# ------------------------------------------------------------------------------------------------
# Python wrappers (tests, tools, cold paths)
# ------------------------------------------------------------------------------------------------
class Encoder:
    """Convenience wrapper around encode_order for cold paths and tests (not the hot loop)."""

    def __init__(self, begin_string: str, sender: str, target: str, instruments):
        self.begin, self.comp = session_constants(begin_string, sender, target)
        self.instr, self.syms = instrument_tables(instruments)
        self.out = np.zeros(4096, dtype=np.uint8)
        self.tcache = new_time_cache()

    def encode(self, rec: np.ndarray, seq: int, utc_ns: int) -> bytes:
        row = np.ascontiguousarray(rec).view(np.uint8).reshape(-1)
        if row.shape[0] != R.ORDER_RECORD_SIZE:
            raise CodecError(f"order record must be {R.ORDER_RECORD_SIZE} bytes, got {row.shape[0]}")
        n = encode_order(row, self.out, 0, self.begin, self.comp, seq, utc_ns, self.tcache, self.instr,
                         self.syms)
        if n < 0:
            raise CodecError(f"cannot encode {R.RTYPE_NAMES.get(int(row[_O_RTYPE]), int(row[_O_RTYPE]))} "
                             f"clord_id {int(ld_u64(row, _O_CLORD))}: {E_NAMES.get(n, n)}")
        return self.out[:n].tobytes()

    def status_request(self, clord_id: int, instrument: int, side: int, seq: int, utc_ns: int) -> bytes:
        n = encode_status_request(self.out, 0, self.begin, self.comp, seq, utc_ns, self.tcache,
                                  self.instr, self.syms, (np.uint64(clord_id), instrument, side))
        if n < 0:
            raise CodecError(f"cannot encode OrderStatusRequest for {clord_id}: {E_NAMES.get(n, n)}")
        return self.out[:n].tobytes()


class ExecStream:
    """Incremental receive buffer + parser for one session (Python driver of parse_messages).

    ``feed(data, rx_tsc, on_session)`` appends received bytes and returns ``(records,
    session_msgs)``: a uint8[n, 128] array of exec records (a copy) and the list of messages
    (bytes) for the session layer. ``on_session(msg: bytes, seq: int)``, when given, is called at
    once for each such message (before later bytes are parsed), so it can move ``expect_seq``. ``expect_seq`` is the next MsgSeqNum the
    parser handles itself; the session layer sets it after handling a session message. The
    buffer holds more than the largest valid message, so a partial message never stalls it."""

    CAPACITY = 1 << 17

    def __init__(self, instr, syms, expect_seq: int = 1, venue: int = R.VENUE_SIM, session: int = 0,
                 max_out: int = 256):
        self.instr, self.syms = instr, syms
        self.buf = np.zeros(self.CAPACITY, dtype=np.uint8)
        self.start = 0
        self.end = 0
        self.st = new_parser_state(expect_seq, venue, session)
        self.out = np.zeros((max_out, R.EXEC_RECORD_SIZE), dtype=np.uint8)

    @property
    def expect_seq(self) -> int:
        return int(self.st[ST_EXPECT_SEQ])

    @expect_seq.setter
    def expect_seq(self, v: int) -> None:
        self.st[ST_EXPECT_SEQ] = v

    def counters(self) -> dict:
        st = self.st
        return {"garbage_bytes": int(st[ST_GARBAGE_BYTES]), "resyncs": int(st[ST_RESYNCS]),
                "bad_checksum": int(st[ST_BAD_CHECKSUM]), "bad_msg": int(st[ST_BAD_MSG]),
                "unknown_symbol": int(st[ST_UNKNOWN_SYMBOL]), "app_msgs": int(st[ST_APP_MSGS])}

    def pending(self) -> bytes:
        """Bytes of an incomplete message waiting for the rest."""
        return self.buf[self.start:self.end].tobytes()

    def _make_room(self, n: int) -> None:
        if self.end + n <= self.CAPACITY:
            return
        keep = self.end - self.start
        self.buf[:keep] = self.buf[self.start:self.end]
        self.start, self.end = 0, keep
        if keep + n > self.CAPACITY:
            raise ValueError(f"feed of {n} bytes exceeds the {self.CAPACITY}-byte receive buffer")

    def feed(self, data: bytes, rx_tsc: int = 0, on_session=None):
        recs = []
        msgs = []
        view = memoryview(data)
        while len(view):
            chunk = view[: self.CAPACITY // 2]
            view = view[len(chunk):]
            self._make_room(len(chunk))
            self.buf[self.end:self.end + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
            self.end += len(chunk)
            while True:
                code = parse_messages(self.buf, self.start, self.end, self.st, self.instr,
                                      self.syms, self.out, rx_tsc)
                n = int(self.st[ST_NOUT])
                if n:
                    recs.append(self.out[:n].copy())
                self.start = int(self.st[ST_POS])
                if code == P_SESSION_MSG:
                    off, ln = int(self.st[ST_MSG_OFF]), int(self.st[ST_MSG_LEN])
                    msg = self.buf[off:off + ln].tobytes()
                    msgs.append(msg)
                    if on_session is not None:
                        on_session(msg, int(self.st[ST_MSG_SEQ]))
                    continue
                if code == P_OUT_FULL:
                    continue
                break
        rows = np.concatenate(recs) if recs else np.zeros((0, R.EXEC_RECORD_SIZE), dtype=np.uint8)
        return rows, msgs
