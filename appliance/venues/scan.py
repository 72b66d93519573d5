"""Compiled JSON scanning helpers shared by every venue parser.

The venue parsers are hand-written scanners over the raw frame bytes (``np.frombuffer(frame,
np.uint8)``); this module holds the pieces they all need, so there is one copy of each:

    skip_ws(b, i, end)                 -> index of the next non-blank byte
    find_key(b, i, end, key)           -> index of the value after ``"key":`` (key given WITH its
                                          quotes as a uint8 array), or -1
    find_key_near(b, hint, lo, end, key) -> find_key from ``hint`` (where the venue usually puts
                                          the key: one pass over the frame for keys in their
                                          usual order), falling back to a search from ``lo``
    skip_value(b, i, end)              -> index after the JSON value starting at i, or -1
    string_span(b, i, end)             -> (start, stop, next) of the string at i, start = -1 if none
    parse_units(b, i, end, dec)        -> (value * 10**dec, next, rc): a decimal number, quoted or
                                          bare, with optional sign, fraction and exponent
    parse_grid(b, i, end, dec, step)   -> (value / step, next, rc): the number in units of a grid
                                          step (tick or lot) expressed in 10**-dec units
    parse_int(b, i, end)               -> (value, next, rc): an integer, quoted or bare
    match_symbol(b, s, e, syms, lens)  -> index of the byte string b[s:e] in a symbol table, or -1
    bytes_eq(b, s, e, lit)             -> b[s:e] == lit
    at(b, i, end, lit)                 -> b[i:i + len(lit)] == lit

Return codes (compiled code never raises; the venue's Python wrapper counts and logs them)::

    OK          parsed
    E_SYNTAX    the bytes are not the JSON shape the parser expects
    E_OFF_GRID  a price or quantity is not a whole number of ticks or lots
    E_OVERFLOW  a number does not fit int64 at the instrument's scale
    E_MISSING   a required key is absent
    E_SYMBOL    the frame names an instrument that is not subscribed
    E_FULL      the frame holds more levels than the parse buffer
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from appliance import jit

OK = 0
E_SYNTAX = 1
E_OFF_GRID = 2
E_OVERFLOW = 3
E_MISSING = 4
E_SYMBOL = 5
E_FULL = 6

ERROR_NAMES = {OK: "ok", E_SYNTAX: "syntax", E_OFF_GRID: "off_grid", E_OVERFLOW: "overflow",
               E_MISSING: "missing_key", E_SYMBOL: "unknown_symbol", E_FULL: "too_many_levels"}

_I64_MAX = 9223372036854775807
_LIM10 = 922337203685477580  # _I64_MAX // 10


def key(name: str) -> np.ndarray:
    """The ``"name"`` search pattern for ``find_key``."""
    return np.frombuffer(b'"' + name.encode() + b'"', np.uint8).copy()


def lit(text: str) -> np.ndarray:
    """A byte literal as a uint8 array for ``bytes_eq``."""
    return np.frombuffer(text.encode(), np.uint8).copy()


@njit(**jit.HELPER)
def skip_ws(b, i, end):
    while i < end:
        c = b[i]
        if c != 32 and c != 9 and c != 10 and c != 13:
            return i
        i += 1
    return i


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def find_key(b, i, end, key):
    """Index of the first value after ``key`` followed by ':' at or after i, or -1."""
    k = key.shape[0]
    last = end - k
    k0 = key[0]
    while i <= last:
        if b[i] == k0:
            j = 1
            while j < k and b[i + j] == key[j]:
                j += 1
            if j == k:
                p = skip_ws(b, i + k, end)
                if p < end and b[p] == 58:
                    return skip_ws(b, p + 1, end)
        i += 1
    return -1


@njit(**jit.HELPER)
def find_key_near(b, hint, lo, end, key):
    """find_key from ``hint``; if absent there (keys in an unusual order), from ``lo``."""
    if hint > lo:
        r = find_key(b, hint, end, key)
        if r >= 0:
            return r
    return find_key(b, lo, end, key)


@njit(**jit.HELPER)
def string_span(b, i, end):
    """(start, stop, next) of the JSON string starting at b[i] == '"'; start = -1 on error."""
    if i >= end or b[i] != 34:
        return -1, -1, i
    j = i + 1
    while j < end:
        c = b[j]
        if c == 92:
            j += 2
            continue
        if c == 34:
            return i + 1, j, j + 1
        j += 1
    return -1, -1, i


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def skip_value(b, i, end):
    """Index just after the JSON value starting at i (after blanks), or -1 if malformed."""
    i = skip_ws(b, i, end)
    if i >= end:
        return -1
    c = b[i]
    if c == 34:
        s, e, nxt = string_span(b, i, end)
        if s < 0:
            return -1
        return nxt
    if c == 91 or c == 123:
        depth = 0
        while i < end:
            c = b[i]
            if c == 34:
                s, e, nxt = string_span(b, i, end)
                if s < 0:
                    return -1
                i = nxt
                continue
            if c == 91 or c == 123:
                depth += 1
            elif c == 93 or c == 125:
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
        return -1
    # number or literal: up to the next delimiter
    j = i
    while j < end:
        c = b[j]
        if c == 44 or c == 93 or c == 125 or c == 32 or c == 10 or c == 13 or c == 9:
            break
        j += 1
    if j == i:
        return -1
    return j


@njit(**jit.INTERNAL)
def _parse_units_slow(b, i, end, dec):
    """parse_units for every form (sign, exponent, long mantissas), one digit at a time."""
    if i >= end:
        return 0, i, E_SYNTAX
    quoted = False
    if b[i] == 34:
        quoted = True
        i += 1
    neg = False
    if i < end and b[i] == 45:
        neg = True
        i += 1
    mant = 0
    frac = 0          # fraction digits folded into mant
    pend = 0          # zeros seen after the point, not yet folded in
    ndig = 0
    dot = False
    rc = 0
    while i < end:
        c = b[i]
        if 48 <= c <= 57:
            d = c - 48
            ndig += 1
            if dot:
                if d == 0:
                    pend += 1
                else:
                    while pend > 0:
                        if mant > _LIM10:
                            return 0, i, E_OVERFLOW
                        mant *= 10
                        frac += 1
                        pend -= 1
                    if mant > _LIM10:
                        return 0, i, E_OVERFLOW
                    mant = mant * 10 + d
                    frac += 1
            else:
                if mant > _LIM10:
                    return 0, i, E_OVERFLOW
                mant = mant * 10 + d
        elif c == 46 and not dot:
            dot = True
        else:
            break
        i += 1
    if ndig == 0:
        return 0, i, E_SYNTAX
    exp = 0
    if i < end and (b[i] == 101 or b[i] == 69):
        i += 1
        eneg = False
        if i < end and (b[i] == 43 or b[i] == 45):
            eneg = b[i] == 45
            i += 1
        nd = 0
        while i < end and 48 <= b[i] <= 57:
            exp = exp * 10 + (b[i] - 48)
            nd += 1
            i += 1
            if exp > 400:
                return 0, i, E_OVERFLOW
        if nd == 0:
            return 0, i, E_SYNTAX
        if eneg:
            exp = -exp
    if quoted:
        if i >= end or b[i] != 34:
            return 0, i, E_SYNTAX
        i += 1
    shift = dec - frac + exp
    if mant != 0:
        while shift > 0:
            if mant > _LIM10:
                return 0, i, E_OVERFLOW
            mant *= 10
            shift -= 1
        while shift < 0:
            if mant % 10 != 0:
                rc = E_OFF_GRID
                break
            mant //= 10
            shift += 1
    if neg:
        mant = -mant
    return mant, i, rc


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def parse_grid(b, i, end, dec, step):
    """Number at b[i] in whole grid steps; ``step`` is the tick/lot size in 10**-dec units."""
    v, nxt, rc = parse_units(b, i, end, dec)
    if rc != 0:
        return 0, nxt, rc
    if step != 1:
        if v % step != 0:
            return 0, nxt, E_OFF_GRID
        v //= step
    return v, nxt, 0


@njit(**jit.INTERNAL)
def _parse_int_slow(b, i, end):
    """parse_int for every form (sign, up to 19 digits), one digit at a time."""
    if i >= end:
        return 0, i, E_SYNTAX
    quoted = False
    if b[i] == 34:
        quoted = True
        i += 1
    neg = False
    if i < end and b[i] == 45:
        neg = True
        i += 1
    v = 0
    nd = 0
    while i < end and 48 <= b[i] <= 57:
        if v > _LIM10:
            return 0, i, E_OVERFLOW
        v = v * 10 + (b[i] - 48)
        nd += 1
        i += 1
    if nd == 0:
        return 0, i, E_SYNTAX
    if quoted:
        if i >= end or b[i] != 34:
            return 0, i, E_SYNTAX
        i += 1
    if neg:
        v = -v
    return v, i, 0


# --- fast number scanning: eight digits at a time -------------------------------------------------
# A digit loop ``v = v * 10 + d`` is one multiply-add chain per digit (~4 cycles each). The common
# forms (unsigned, no exponent, quoted or bare) are read eight digits per step instead: one
# unaligned 8-byte load, a check that all eight are digits, and three multiply-adds that combine
# them pairwise (SWAR). Anything else goes to the digit-at-a-time readers, which give the same
# results for every input.

POW10 = np.array([10 ** k for k in range(19)], np.int64)
_U64 = np.uint64
_ZEROS8 = _U64(0x3030303030303030)
_HI_NIBBLES = _U64(0xF0F0F0F0F0F0F0F0)
_SIXES = _U64(0x0606060606060606)
_THREES = _U64(0x3333333333333333)
_LOW_BYTES = _U64(0x000000FF000000FF)
_M1 = _U64(100 + (1000000 << 32))
_M2 = _U64(1 + (10000 << 32))


@intrinsic
def load8(typingctx, arr, off):
    """The 8 bytes arr[off:off+8] as a little-endian u64 (an unaligned load; the caller checks
    the bounds)."""
    if not (isinstance(arr, types.Array) and isinstance(off, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        base = builder.ptrtoint(ary.data, ir.IntType(64))
        o = context.cast(builder, args[1], sig.args[1], types.int64)
        ptr = builder.inttoptr(builder.add(base, o), ir.IntType(64).as_pointer())
        return builder.load(ptr, align=1)
    return types.uint64(arr, off), codegen


@njit(**jit.HELPER)
def _all_digits8(x):
    """All eight bytes of ``x`` are ASCII digits."""
    return ((x & _HI_NIBBLES) | (((x + _SIXES) & _HI_NIBBLES) >> _U64(4))) == _THREES


@njit(**jit.HELPER)
def _value8(x):
    """The value of eight ASCII digits (first digit in the lowest byte)."""
    x = x - _ZEROS8
    x = x * _U64(10) + (x >> _U64(8))
    x = (((x & _LOW_BYTES) * _M1) + (((x >> _U64(16)) & _LOW_BYTES) * _M2)) >> _U64(32)
    return np.int64(x)


@njit(**jit.HELPER)
def _digits(b, j, end, v, nmax):
    """Read up to ``nmax`` digits from b[j]: (value v * 10**n + digits, n, next)."""
    n = 0
    while n + 8 <= nmax and j + 8 <= end:
        x = load8(b, j)
        if not _all_digits8(x):
            break
        v = v * 100000000 + _value8(x)
        n += 8
        j += 8
    while n < nmax and j < end:
        d = np.int64(b[j]) - 48
        if d < 0 or d > 9:
            break
        v = v * 10 + d
        n += 1
        j += 1
    return v, n, j


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def parse_units(b, i, end, dec):
    """Decimal number at b[i] (quoted or bare) as an integer count of 10**-dec units.

    Returns (value, next, rc); rc E_OFF_GRID when digits beyond ``dec`` decimals are not zero."""
    j = i
    quoted = j < end and b[j] == 34
    if quoted:
        j += 1
    if 0 <= dec <= 18:
        ip, nd, j = _digits(b, j, end, 0, 19)
        if 0 < nd and nd + dec <= 18:
            frac = 0
            nf = 0
            rc = 0
            if j < end and b[j] == 46:
                frac, nf, j = _digits(b, j + 1, end, 0, dec)
                while j < end:          # digits beyond ``dec``: must be zeros
                    c = b[j]
                    if c < 48 or c > 57:
                        break
                    if c != 48:
                        rc = E_OFF_GRID
                    j += 1
            if j >= end or (b[j] != 101 and b[j] != 69):
                if quoted:
                    if j >= end or b[j] != 34:
                        return 0, j, E_SYNTAX
                    j += 1
                if rc != 0:
                    return 0, j, rc
                return ip * POW10[dec] + frac * POW10[dec - nf], j, 0
    return _parse_units_slow(b, i, end, dec)


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def parse_int(b, i, end):
    """Integer (quoted or bare, optional '-') at b[i]: (value, next, rc)."""
    j = i
    quoted = j < end and b[j] == 34
    if quoted:
        j += 1
    v, n, j = _digits(b, j, end, 0, 18)
    if 0 < n and (j >= end or b[j] < 48 or b[j] > 57):
        if quoted:
            if j >= end or b[j] != 34:
                return 0, j, E_SYNTAX
            j += 1
        return v, j, 0
    return _parse_int_slow(b, i, end)


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def at(b, i, end, lit):
    """b[i:i + len(lit)] == lit (False when the bytes end first)."""
    n = lit.shape[0]
    if i < 0 or i + n > end:
        return False
    for k in range(n):
        if b[i + k] != lit[k]:
            return False
    return True


@njit(**jit.HELPER)
def bytes_eq(b, s, e, lit):
    n = lit.shape[0]
    if e - s != n:
        return False
    for k in range(n):
        if b[s + k] != lit[k]:
            return False
    return True


@njit(cache=True, nogil=True, _nrt=False, forceinline=True)
def match_symbol(b, s, e, syms, lens):
    """Row of ``syms`` (uint8[N, W], lengths in ``lens``) equal to b[s:e], or -1."""
    n = e - s
    for r in range(syms.shape[0]):
        if lens[r] != n:
            continue
        k = 0
        while k < n and syms[r, k] == b[s + k]:
            k += 1
        if k == n:
            return r
    return -1


def symbol_table(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Symbol table arrays for ``match_symbol``."""
    width = max([len(x.encode()) for x in names] + [1])
    syms = np.zeros((max(len(names), 1), width), np.uint8)
    lens = np.full(max(len(names), 1), -1, np.int64)
    for r, name in enumerate(names):
        raw = name.encode()
        syms[r, :len(raw)] = np.frombuffer(raw, np.uint8)
        lens[r] = len(raw)
    return syms, lens
