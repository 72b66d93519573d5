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
from numba import njit

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


@njit(cache=True, nogil=True, _nrt=False)
def skip_ws(b, i, end):
    while i < end:
        c = b[i]
        if c != 32 and c != 9 and c != 10 and c != 13:
            return i
        i += 1
    return i


@njit(cache=True, nogil=True, _nrt=False)
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


@njit(cache=True, nogil=True, _nrt=False)
def find_key_near(b, hint, lo, end, key):
    """find_key from ``hint``; if absent there (keys in an unusual order), from ``lo``."""
    if hint > lo:
        r = find_key(b, hint, end, key)
        if r >= 0:
            return r
    return find_key(b, lo, end, key)


@njit(cache=True, nogil=True, _nrt=False)
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


@njit(cache=True, nogil=True, _nrt=False)
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


@njit(cache=True, nogil=True, _nrt=False)
def parse_units(b, i, end, dec):
    """Decimal number at b[i] (quoted or bare) as an integer count of 10**-dec units.

    Returns (value, next, rc); rc E_OFF_GRID when digits beyond ``dec`` decimals are not zero."""
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


@njit(cache=True, nogil=True, _nrt=False)
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


@njit(cache=True, nogil=True, _nrt=False)
def parse_int(b, i, end):
    """Integer (quoted or bare, optional '-') at b[i]: (value, next, rc)."""
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


@njit(cache=True, nogil=True, _nrt=False)
def bytes_eq(b, s, e, lit):
    n = lit.shape[0]
    if e - s != n:
        return False
    for k in range(n):
        if b[s + k] != lit[k]:
            return False
    return True


@njit(cache=True, nogil=True, _nrt=False)
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
