"""FIX wire format for the session layer: framing, field splitting, encoding, timestamps.

This is the reference (pure Python) path used by the session layer for every inbound message
and for the admin messages it generates. The compiled order/exec-report codec
(``appliance.fix.codec``) is separate; both produce the same bytes.

Framing follows the reference engine's rules so that the acceptance scripts behave the same:
find ``8=FIX``, read ``9=<BodyLength>``, wait until BodyLength bytes are buffered, then take the
next ``<SOH>10=...<SOH>`` found from the end of the declared body. A frame whose BodyLength or
CheckSum does not match its bytes is *garbled*: it is returned with ``FRAME_GARBLED`` so the
session can log and count it, and is otherwise ignored (its sequence number is not consumed).
A frame that parses but whose first three tags are not 8, 9, 35, or that holds a non-numeric
tag, is also garbled. Bytes before a ``8=FIX`` are discarded and counted.

Encoding uses simplefix (``FixMessage.encode``) so 8/9/35/10 are always placed and computed by the
reference codec; field order inside header and body is ours (see ``encode``).
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass

import simplefix

SOH = b"\x01"

# Frame results
FRAME_OK = 0
FRAME_GARBLED = 1

# A declared BodyLength above this is treated as garbage rather than waited for.
DEFAULT_MAX_BODY = 1 << 20

# Length-prefixed data fields: length tag -> data tag (values may contain SOH).
DATA_FIELDS = {90: 91, 93: 89, 95: 96, 212: 213, 348: 349, 350: 351, 352: 353, 354: 355,
               356: 357, 358: 359, 360: 361, 362: 363, 364: 365, 445: 446, 618: 619, 621: 622}
_DATA_VALUE_TAGS = {v: k for k, v in DATA_FIELDS.items()}

# Header tags in the order the reference engine writes them: 8, 9, 35 first, then by tag number.
HEADER_FIRST = (8, 9, 35)
ADMIN_TYPES = frozenset((b"0", b"1", b"2", b"3", b"4", b"5", b"A"))


class GarbledMessage(ValueError):
    """A frame that cannot be split into fields (non-numeric tag, missing '=', bad prefix)."""


@dataclass(slots=True)
class Message:
    """One parsed FIX message: the fields in wire order and the raw frame."""

    fields: list          # list[tuple[int, bytes]] in wire order, including 8, 9, 35 and 10
    raw: bytes

    @property
    def msg_type(self) -> bytes:
        return self.fields[2][1]

    @property
    def begin_string(self) -> bytes:
        return self.fields[0][1]

    def get(self, tag: int, default=None):
        for t, v in self.fields:
            if t == tag:
                return v
        return default

    def has(self, tag: int) -> bool:
        for t, _ in self.fields:
            if t == tag:
                return True
        return False

    def get_int(self, tag: int, default=None):
        v = self.get(tag)
        if v is None:
            return default
        try:
            return int(v)
        except ValueError:
            return default

    def body(self) -> list:
        """Fields other than the standard header, trailer and their framing (8, 9, 35, 10)."""
        return [(t, v) for t, v in self.fields if t not in (8, 9, 35, 10)]

    def is_admin(self) -> bool:
        return self.msg_type in ADMIN_TYPES


def checksum(data: bytes) -> int:
    return sum(data) & 0xFF


class Framer:
    """Cuts a byte stream into FIX frames. ``feed`` bytes, then call ``next_frame`` until None."""

    def __init__(self, max_body: int = DEFAULT_MAX_BODY):
        self.buf = bytearray()
        self.max_body = max_body
        self.discarded_bytes = 0      # bytes dropped while looking for a message start

    def feed(self, data: bytes) -> None:
        self.buf += data

    def _drop(self, n: int) -> None:
        del self.buf[:n]

    def take_frames(self) -> list:
        """Every complete ``(status, frame)`` now in the buffer. Back-to-back well-formed frames
        are cut with one buffer compaction (bursts of small messages stay linear); anything
        else goes through ``next_frame``'s resynchronising path."""
        buf = self.buf
        out = []
        pos = 0
        n = len(buf)
        while pos < n:
            if buf[pos:pos + 5] != b"8=FIX":
                break
            soh1 = buf.find(SOH, pos, pos + 64)
            if soh1 < 0 or buf[soh1 + 1:soh1 + 3] != b"9=":
                break
            soh2 = buf.find(SOH, soh1 + 3, soh1 + 16)
            if soh2 < 0:
                break
            digits = buf[soh1 + 3:soh2]
            if not digits.isdigit() or int(digits) > self.max_body:
                break
            body_end = soh2 + 1 + int(digits)
            if n < body_end + 7 or buf[body_end - 1:body_end + 3] != b"\x0110=" or buf[body_end + 6] != 1:
                break
            frame = bytes(buf[pos:body_end + 7])
            cs = frame[-4:-1]
            out.append((FRAME_OK if cs.isdigit() and int(cs) == checksum(frame[:-7]) else FRAME_GARBLED,
                        frame))
            pos = body_end + 7
        if pos:
            del buf[:pos]
        while (fr := self.next_frame()) is not None:
            out.append(fr)
        return out

    def next_frame(self):
        """Return ``(FRAME_OK | FRAME_GARBLED, bytes)`` or None when more bytes are needed."""
        buf = self.buf
        while True:
            start = buf.find(b"8=FIX")
            if start < 0:
                keep = min(len(buf), 4)          # a partial "8=FI" may be at the end
                self.discarded_bytes += len(buf) - keep
                self._drop(len(buf) - keep)
                return None
            if start:
                self.discarded_bytes += start
                self._drop(start)
            soh1 = buf.find(SOH, 0, 64)
            if soh1 < 0:
                if len(buf) >= 64:
                    return self._resync()
                return None
            if buf[soh1 + 1:soh1 + 3] != b"9=":
                if len(buf) < soh1 + 3:
                    return None
                return self._resync()
            soh2 = buf.find(SOH, soh1 + 3, soh1 + 16)
            if soh2 < 0:
                if len(buf) >= soh1 + 16:
                    return self._resync()
                return None
            digits = bytes(buf[soh1 + 3:soh2])
            if not digits.isdigit() or int(digits) > self.max_body:
                return self._resync()
            body_start = soh2 + 1
            body_end = body_start + int(digits)
            if len(buf) < body_end:
                return None
            trailer = buf.find(b"\x0110=", max(body_end - 1, soh2))
            if trailer < 0:
                if len(buf) - body_end > self.max_body:
                    return self._resync()
                return None
            end = buf.find(SOH, trailer + 4)
            if end < 0:
                if len(buf) - trailer > 16:
                    return self._resync()
                return None
            frame = bytes(buf[:end + 1])
            self._drop(end + 1)
            ok = (trailer + 1 - body_start == int(digits)
                  and end - trailer - 4 == 3
                  and frame[trailer + 4:end].isdigit()
                  and int(frame[trailer + 4:end]) == checksum(frame[:trailer + 1]))
            return (FRAME_OK if ok else FRAME_GARBLED, frame)

    def _resync(self):
        """Drop the bogus message start and return it as garbled (one event per bad start)."""
        nxt = self.buf.find(b"8=FIX", 1)
        cut = nxt if nxt > 0 else len(self.buf)
        frame = bytes(self.buf[:cut])
        self._drop(cut)
        return (FRAME_GARBLED, frame)


def split_fields(frame: bytes) -> list:
    """Split a frame into ``[(tag, value)]``. Raises GarbledMessage on a malformed field.

    Tags may be negative or zero (they are rejected later as invalid tag numbers, as the
    reference engine does); a non-numeric tag is a garbled frame.
    """
    fields = []
    pos = 0
    n = len(frame)
    data_len = -1
    data_tag = -1
    while pos < n:
        eq = frame.find(b"=", pos)
        if eq < 0:
            raise GarbledMessage(f"field without '=' at byte {pos}")
        tag_b = frame[pos:eq]
        try:
            tag = int(tag_b)
        except ValueError:
            raise GarbledMessage(f"non-numeric tag {tag_b[:20]!r} at byte {pos}") from None
        if not tag_b.lstrip(b"-").isdigit():
            raise GarbledMessage(f"non-numeric tag {tag_b[:20]!r} at byte {pos}")
        if tag == data_tag and data_len >= 0 and eq + 1 + data_len < n and frame[eq + 1 + data_len] == 1:
            end = eq + 1 + data_len
        else:
            end = frame.find(SOH, eq + 1)
            if end < 0:
                raise GarbledMessage("last field not terminated by SOH")
        value = frame[eq + 1:end]
        fields.append((tag, value))
        if tag in DATA_FIELDS and value.isdigit():
            data_tag, data_len = DATA_FIELDS[tag], int(value)
        else:
            data_tag, data_len = -1, -1
        pos = end + 1
    if len(fields) < 4 or fields[0][0] != 8 or fields[1][0] != 9 or fields[2][0] != 35:
        raise GarbledMessage("BeginString, BodyLength, MsgType are not the first three fields")
    if fields[-1][0] != 10:
        raise GarbledMessage("CheckSum is not the last field")
    return fields


def parse(frame: bytes) -> Message:
    return Message(split_fields(frame), frame)


def encode(begin_string: bytes, msg_type: bytes, header: list, body: list) -> bytes:
    """Encode a message: 8, 9, 35, header fields by tag number, body fields in the given order.

    Callers pass ``body`` already ordered (``dictionary.order_body`` sorts top-level fields by tag
    and keeps repeating groups after their count tag, as the reference engine writes them).
    """
    m = simplefix.FixMessage()
    m.append_pair(8, begin_string)
    m.append_pair(35, msg_type)
    for tag, value in sorted(header, key=lambda f: f[0]):
        m.append_pair(tag, value)
    for tag, value in body:
        m.append_pair(tag, value)
    return m.encode()


# ---- timestamps ----------------------------------------------------------------------------

_TS_RE = re.compile(rb"^(\d{4})(\d{2})(\d{2})-(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?$")


def utc_timestamp(now: float, millis: bool = True) -> bytes:
    """Seconds since the epoch -> ``YYYYMMDD-HH:MM:SS.sss`` (UTC)."""
    secs = int(now)
    t = time.gmtime(secs)
    s = b"%04d%02d%02d-%02d:%02d:%02d" % (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec)
    if millis:
        s += b".%03d" % min(int((now - secs) * 1000), 999)
    return s


def parse_utc_timestamp(value: bytes):
    """``YYYYMMDD-HH:MM:SS[.fff]`` -> seconds since the epoch (float), or None if malformed."""
    m = _TS_RE.match(value)
    if not m:
        return None
    y, mo, d, h, mi, s = (int(x) for x in m.groups()[:6])
    if not (1 <= mo <= 12 and 1 <= d <= 31 and h <= 23 and mi <= 59 and s <= 60):
        return None
    import calendar
    frac = m.group(7)
    base = calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0))
    return base + (int(frac) / (10 ** len(frac)) if frac else 0.0)


# ---- secrets -------------------------------------------------------------------------------

# Password (554), NewPassword (925) and RawData (96: a logon signature) never appear in clear in
# anything a person reads (message logs, log lines, exceptions, status): see ``redact``.
SECRET_TAGS = (554, 925, 96)
REDACTED = b"***"
_SECRET_RE = re.compile(rb"(?:(?<=\x01)|^)(554|925|96)=")


def redact(raw: bytes) -> bytes:
    """``raw`` (a frame or any piece of one) with the values of SECRET_TAGS replaced by ``***``.

    RawData (96) may hold SOH bytes: its length comes from the RawDataLength (95) before it when
    that is present and fits, else the value ends at the next SOH. A value cut off by the end of
    ``raw`` (a truncated frame) is redacted to the end. Frames without a secret tag come back as
    they are (one regex search)."""
    m = _SECRET_RE.search(raw)
    if m is None:
        return raw
    out = bytearray()
    pos = 0
    while m is not None:
        vstart = m.end()
        tag = m.group(1)
        end = -1
        if tag == b"96":
            lm = re.search(rb"(?:\x01|^)95=(\d{1,9})\x01$", raw[max(0, m.start() - 16):m.start()])
            if lm is not None and vstart + int(lm.group(1)) <= len(raw):
                end = vstart + int(lm.group(1))
        if end < 0:
            end = raw.find(SOH, vstart)
            if end < 0:
                end = len(raw)
        out += raw[pos:vstart] + REDACTED
        pos = end
        m = _SECRET_RE.search(raw, end)
    out += raw[pos:]
    return bytes(out)


def pretty(raw: bytes, limit: int = 400) -> str:
    """A frame for logs: secrets redacted, SOH shown as '|', truncated."""
    s = redact(bytes(raw[:limit])).replace(SOH, b"|").decode("latin-1")
    return s + ("..." if len(raw) > limit else "")
