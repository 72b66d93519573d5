"""FIX session layer (FIX.4.2 / FIX.4.4), initiator and acceptor: a state machine over bytes.

The session knows nothing about sockets. The transport (``appliance.fix.transport``) feeds it:

- ``session.connected(now)``: a TCP connection is up (an initiator emits its Logon);
- ``out = session.on_bytes(data, now)``: bytes received; returns bytes to send;
- ``out = session.on_timer(now)``: call every ~100 ms; heartbeats, test requests, timeouts;
- ``session.closing``: True when the session wants the connection closed (after sending ``out``);
- ``session.disconnected(now)``: the connection is gone (either side).

``now`` is seconds since the epoch (float), injected so tests need no sleeping.

Behaviour follows the FIX session protocol as the reference engine (QuickFIX) implements it, so
the reference acceptance scripts pass: Logon/Logout, Heartbeat/TestRequest, MsgSeqNum checks
(too high: queue and ResendRequest; too low: Logout unless PossDupFlag=Y), ResendRequest served
from the persistent store (PossDupFlag=Y + OrigSendingTime, admin messages and gaps gap-filled
with SequenceReset-GapFill), SequenceReset (gap fill and reset), session Reject (35=3) with
SessionRejectReason, BusinessMessageReject (35=j), data-dictionary validation, SendingTime
accuracy, CompID and BeginString checks, garbled frames ignored (counted, logged), a session
schedule, and reset policies (on logon / logout / disconnect).

Application interface (subclass ``Application``; every method optional):

- ``on_logon(session)``, ``on_logout(session)``;
- ``on_admin_message(session, msg)``: every accepted admin message, e.g. a session-level
  Reject (35=3, RefSeqNum 45) of one of our application messages;
- ``on_app_message(session, msg)``: ``msg`` is a ``wire.Message`` (``msg.raw`` = the exact
  bytes, ``msg.fields`` = parsed ``[(tag, value)]``); raise ``UnsupportedMessageType`` or
  ``BusinessReject(reason, text)`` to answer with a BusinessMessageReject;
- ``logon_fields(session) -> [(tag, value)]``: extra Logon fields (credentials). While it runs,
  ``session.logon_seq`` and ``session.logon_sending_time`` hold the Logon's MsgSeqNum and
  SendingTime so a signature can cover them (see ``appliance.fix.admin``);
- ``verify_logon(session, msg)``: acceptor side; raise ``RejectLogon(text)`` to refuse;
- ``should_resend(session, msg) -> bool``: False gap-fills a stored application message
  instead of resending it (e.g. stale orders).

Sharing sequence numbers with a compiled encoder (the order gateway):

    seq = session.next_seq()                  # allocates and persists the next MsgSeqNum
    raw = codec.encode_new_order(..., seq)    # encoded elsewhere with that MsgSeqNum
    session.record_sent(seq, raw, now)        # stores the bytes for resends, updates timers
    sock.send(raw)                            # or record_sent(..., enqueue=True) and let the
                                              # transport send it with the session's output

A compiled inbound fast path may bypass ``on_bytes`` while ``in_steady_state()`` is true, and
must then report with ``note_received(now, next_target)``; a fast outbound path reports with
``note_sent(now)``. ``next_seq`` raises ``NotLoggedOn`` while the session is not logged on. Inbound application
messages reach ``on_app_message`` with both the raw bytes and the parsed fields, so a compiled
exec-report parser can work on ``msg.raw`` directly. If a process dies between ``next_seq`` and
``record_sent`` the number is a gap in the store and a later ResendRequest gap-fills it.
"""
from __future__ import annotations

import datetime as _dt
import logging
from dataclasses import dataclass

from appliance.fix import wire
from appliance.fix.dictionary import (REJ_BAD_FORMAT, REJ_BAD_VALUE, REJ_COMPID, REJ_INVALID_MSGTYPE,
                                      REJ_INVALID_TAG, REJ_REQUIRED_MISSING, REJ_SENDING_TIME,
                                      REJECT_TEXT, DataDictionary)

log = logging.getLogger(__name__)

# BusinessRejectReason (380)
BR_OTHER = 0
BR_UNKNOWN_ID = 1
BR_UNKNOWN_SECURITY = 2
BR_UNSUPPORTED_MSGTYPE = 3
BR_APP_NOT_AVAILABLE = 4
BR_COND_REQUIRED_MISSING = 5
BR_NOT_AUTHORIZED = 6
BR_DELIVERTO_UNAVAILABLE = 7
BUSINESS_REJECT_TEXT = {
    BR_OTHER: "Other", BR_UNKNOWN_ID: "Unknown ID", BR_UNKNOWN_SECURITY: "Unknown Security",
    BR_UNSUPPORTED_MSGTYPE: "Unsupported Message Type",
    BR_APP_NOT_AVAILABLE: "Application Not Available",
    BR_COND_REQUIRED_MISSING: "Conditionally Required Field Missing",
    BR_NOT_AUTHORIZED: "Not authorized",
    BR_DELIVERTO_UNAVAILABLE: "DeliverTo Firm Not Available At This Time",
}

# Standard header tags (FIX 4.2 and 4.4), used to split stored messages on resend.
HEADER_TAGS = frozenset((8, 9, 35, 49, 56, 115, 128, 90, 91, 34, 50, 142, 57, 143, 116, 144, 129,
                         145, 43, 97, 52, 122, 212, 213, 347, 369, 627, 628, 629, 630))
_REVERSE_ROUTE = ((115, 128), (128, 115), (116, 129), (129, 116), (144, 145), (145, 144))


class UnsupportedMessageType(Exception):
    """Raised by an application for a message type it does not handle (-> 35=j, 380=3)."""


class BusinessReject(Exception):
    def __init__(self, reason: int, text: str | None = None, tag: int = 0):
        super().__init__(text or BUSINESS_REJECT_TEXT.get(reason, "Other"))
        self.reason, self.text, self.tag = reason, text, tag


class RejectLogon(Exception):
    """Raised by ``Application.verify_logon`` to refuse a Logon (Logout with this text)."""


class NotLoggedOn(RuntimeError):
    """An application message was offered while the session is not logged on."""


class _Disconnect(Exception):
    pass


class Application:
    logon_hook = None      # e.g. admin.UserPasswordLogon(...) / admin.HmacRawDataLogon(...)

    def on_logon(self, session): pass
    def on_logout(self, session): pass
    def on_app_message(self, session, msg): raise UnsupportedMessageType()
    def on_admin_message(self, session, msg): pass     # e.g. a session Reject (35=3) of an order

    def logon_fields(self, session):
        return self.logon_hook(session) if self.logon_hook is not None else []

    def verify_logon(self, session, msg): pass
    def should_resend(self, session, msg): return True


@dataclass(frozen=True)
class Schedule:
    """Daily UTC session window ``start``-``end`` ("HH:MM:SS"); both None = 24x7.

    A window with end < start spans midnight. ``period_start(t)`` is when the session period
    containing ``t`` began; a store created before it is reset on the first event of the period.
    """
    start: str | None = None
    end: str | None = None

    def __post_init__(self):
        for name in ("start", "end"):
            v = getattr(self, name)
            if v is not None:
                try:
                    _dt.time.fromisoformat(v)
                except ValueError:
                    raise ValueError(f"session schedule {name}: expected HH:MM:SS, got {v!r}") from None
        if (self.start is None) != (self.end is None):
            raise ValueError("session schedule: give both start and end, or neither (24x7)")

    @staticmethod
    def _secs(v: str) -> int:
        t = _dt.time.fromisoformat(v)
        return t.hour * 3600 + t.minute * 60 + t.second

    def in_session(self, now: float) -> bool:
        if self.start is None:
            return True
        s, e, x = self._secs(self.start), self._secs(self.end), int(now) % 86400
        if s == e:
            return True
        return s <= x < e if s < e else (x >= s or x < e)

    def period_start(self, now: float) -> float:
        if self.start is None:
            return 0.0
        s = self._secs(self.start)
        day = int(now) - int(now) % 86400
        start = day + s
        return start if start <= now else start - 86400


@dataclass(frozen=True)
class SessionConfig:
    begin_string: str
    sender_comp_id: str
    target_comp_id: str
    initiator: bool = False
    heartbeat_interval: int = 30          # initiator's proposal; an acceptor takes the peer's
    reset_on_logon: bool = False
    reset_on_logout: bool = False
    reset_on_disconnect: bool = False
    check_latency: bool = True
    max_latency: float = 120.0            # SendingTime accuracy, seconds
    check_comp_id: bool = True
    logon_timeout: float = 10.0
    logout_timeout: float = 2.0
    schedule: Schedule = Schedule()
    validate: bool = True                 # validate inbound messages against the dictionary
    max_body: int = wire.DEFAULT_MAX_BODY
    max_queued: int = 100_000             # out-of-order messages held while a gap is filled
    min_heartbeat: int = 1                # acceptor: a Logon proposing a HeartBtInt outside
    max_heartbeat: int = 3600             # [min, max] seconds is refused (Logout, disconnect)

    def __post_init__(self):
        if self.begin_string not in ("FIX.4.2", "FIX.4.4"):
            raise ValueError(f"begin_string must be FIX.4.2 or FIX.4.4, got {self.begin_string!r}")
        if not self.sender_comp_id or not self.target_comp_id:
            raise ValueError("sender_comp_id and target_comp_id must be non-empty")
        if self.heartbeat_interval < 0:
            raise ValueError("heartbeat_interval must be >= 0")
        if not 0 <= self.min_heartbeat <= self.max_heartbeat:
            raise ValueError("need 0 <= min_heartbeat <= max_heartbeat")

    @property
    def key(self) -> tuple:
        return (self.begin_string, self.sender_comp_id, self.target_comp_id)

    @classmethod
    def from_dict(cls, d: dict, where: str = "fix.session") -> "SessionConfig":
        """Build from a config table (e.g. ``cfg.extra["fix"]["sessions"][name]``); unknown keys
        are rejected naming the key; ``schedule = {start = "HH:MM:SS", end = "HH:MM:SS"}``."""
        import dataclasses
        known = {f.name for f in dataclasses.fields(cls)}
        for k in d:
            if k not in known:
                raise ValueError(f"{where}.{k}: unknown key (known: {', '.join(sorted(known))})")
        kw = dict(d)
        if "schedule" in kw and not isinstance(kw["schedule"], Schedule):
            sch = kw["schedule"]
            bad = set(sch) - {"start", "end"}
            if bad:
                raise ValueError(f"{where}.schedule.{sorted(bad)[0]}: unknown key (known: start, end)")
            kw["schedule"] = Schedule(sch.get("start"), sch.get("end"))
        try:
            return cls(**kw)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: {e}") from None


class Session:
    def __init__(self, cfg: SessionConfig, store, app: Application | None = None,
                 dictionary: DataDictionary | None = None, message_log=None, now: float = 0.0):
        self.cfg = cfg
        self.store = store
        self.app = app or Application()
        self.dd = dictionary if cfg.validate else None
        self.mlog = message_log
        self.bs = cfg.begin_string.encode()
        self.sender = cfg.sender_comp_id.encode()
        self.target = cfg.target_comp_id.encode()
        self.name = f"{cfg.begin_string}:{cfg.sender_comp_id}->{cfg.target_comp_id}"
        self._out: list[bytes] = []
        self._now = now
        # counters (exposed for monitoring and tests)
        self.garbled = 0
        self.rejects_sent = 0
        self.resent = 0
        self._reset_connection_state()
        self.connected_flag = False

    # ---- state ---------------------------------------------------------------------------

    def _reset_connection_state(self) -> None:
        self.framer = wire.Framer(self.cfg.max_body)
        self.sent_logon = False
        self.received_logon = False
        self.sent_logout = False
        self.sent_reset = False
        self.received_reset = False
        self.heartbeat_interval = self.cfg.heartbeat_interval
        self.last_sent = self._now
        self.last_received = self._now
        self.test_request = 0
        self.queue: dict[int, wire.Message] = {}
        self.resend_range = None
        self.closing = False
        self.logon_seq = 0
        self.logon_sending_time = b""

    @property
    def logged_on(self) -> bool:
        return self.sent_logon and self.received_logon

    @property
    def expected_target(self) -> int:
        return self.store.next_target

    def _callback(self, name: str, *args):
        """Call an optional application method (applications may be duck-typed)."""
        fn = getattr(self.app, name, None)
        return fn(self, *args) if fn is not None else None

    # ---- transport entry points ---------------------------------------------------------

    def connected(self, now: float) -> bytes:
        self._now = now
        self._reset_connection_state()
        self.connected_flag = True
        self.last_received = self.last_sent = now
        self._check_period(now)
        if self.cfg.initiator and self.cfg.schedule.in_session(now):
            self._generate_logon()
        return self.take_output()

    def disconnected(self, now: float) -> None:
        if not self.connected_flag:
            return
        self._now = now
        self.connected_flag = False
        if self.received_logon or self.sent_logon:
            try:
                self._callback("on_logout")
            except Exception:
                log.exception("%s: on_logout callback failed", self.name)
        if self.cfg.reset_on_disconnect:
            self.store.reset(now)
        self._reset_connection_state()
        self._out.clear()
        self.store.sync()
        if self.mlog:
            self.mlog.flush()

    def on_bytes(self, data: bytes, now: float) -> bytes:
        self._now = now
        self.framer.feed(data)
        for status, frame in self.framer.take_frames():
            if self.closing:
                break
            if status != wire.FRAME_OK:
                self._garbled(frame, "bad BodyLength or CheckSum")
                continue
            try:
                msg = wire.parse(frame)
            except wire.GarbledMessage as e:
                self._garbled(frame, str(e))
                continue
            if self.mlog:
                self.mlog.write("IN ", now, frame)
            try:
                self._next(msg)
            except _Disconnect as e:
                self._disconnect(str(e))
        return self.take_output()

    def on_timer(self, now: float) -> bytes:
        self._now = now
        if not self.connected_flag or self.closing:
            return self.take_output()
        try:
            self._timer(now)
        except _Disconnect as e:
            self._disconnect(str(e))
        return self.take_output()

    def take_output(self) -> bytes:
        if not self._out:
            return b""
        self.store.sync()          # nothing leaves the process before it is on disk ("batch")
        if self.mlog:
            self.mlog.flush()
        out = b"".join(self._out)
        self._out.clear()
        return out

    # ---- application sending ------------------------------------------------------------

    def send_app(self, msg_type: bytes, body: list, header: list = ()) -> int:
        """Encode and queue an application message; returns its MsgSeqNum."""
        if not self.logged_on:
            raise NotLoggedOn(f"{self.name}: not logged on; {msg_type!r} not sent")
        return self._send(msg_type, list(header), list(body))

    def next_seq(self) -> int:
        """Allocate the next outgoing MsgSeqNum (persisted) for a message encoded elsewhere."""
        if not self.logged_on:
            raise NotLoggedOn(f"{self.name}: not logged on; no sequence number allocated")
        seq = self.store.next_sender
        self.store.incr_next_sender()
        return seq

    def record_sent(self, seq: int, raw: bytes, now: float | None = None, enqueue: bool = False) -> None:
        """Store the bytes of an application message sent with a number from ``next_seq``.

        Durability: the bytes reach the kernel at once (a kill -9 loses nothing). With the
        store's ``fsync="batch"`` policy, call ``session.store.sync()`` before writing the bytes
        to the socket yourself if they must also survive a power loss (``enqueue=True`` does that
        through ``take_output``); ``fsync="always"`` syncs inside this call."""
        if now is not None:
            self._now = now
        self.store.save_message(seq, raw)
        self.last_sent = self._now
        if self.mlog:
            self.mlog.write("OUT", self._now, raw)
        if enqueue:
            self._out.append(raw)

    def in_steady_state(self) -> bool:
        """True when a compiled fast path may consume inbound application messages itself: logged
        on, nothing queued, no resend outstanding, no partial frame buffered, not closing."""
        return (self.logged_on and not self.queue and self.resend_range is None
                and not self.closing and not self.framer.buf)

    def note_received(self, now: float, next_target: int | None = None) -> None:
        """A fast path consumed inbound messages: update liveness (and the expected MsgSeqNum)."""
        if next_target is not None and next_target != self.store.next_target:
            self.store.set_next_target(next_target)
        self.last_received = now
        self.test_request = 0

    def note_sent(self, now: float) -> None:
        """Bytes for this session left through a fast path (heartbeat timer restarts)."""
        self.last_sent = now

    def logout(self, text: str | None = None) -> bytes:
        """Start an orderly logout (the peer's Logout or the logout timeout closes it); returns
        the bytes to send, like ``on_bytes`` / ``on_timer``."""
        if self.logged_on and not self.sent_logout:
            self._generate_logout(text)
        elif not self.logged_on:
            self._disconnect("logout requested before logon")
        return self.take_output()

    # ---- low-level send -----------------------------------------------------------------

    def _header(self, seq: int) -> list:
        return [(34, b"%d" % seq), (49, self.sender), (52, wire.utc_timestamp(self._now)),
                (56, self.target)]

    def _send(self, msg_type: bytes, header: list, body: list, seq: int = 0) -> int:
        """Fill the header, encode, persist (unless a resend with explicit ``seq``), emit."""
        explicit = seq != 0
        if not explicit:
            seq = self.store.next_sender
        hdr = [f for f in header if f[0] not in (34, 49, 52, 56)] + self._header(seq)
        if msg_type == b"A":
            self.logon_seq = seq
            self.logon_sending_time = dict(hdr)[52]
            try:
                extra = list(self._callback("logon_fields") or ())
            except Exception:
                log.exception("%s: logon_fields hook failed", self.name)
                raise
            # plain bytes (a secret may come as a bytes subclass whose str() is masked)
            body = body + [(int(t), bytes(v) if isinstance(v, (bytes, bytearray)) else str(v).encode())
                           for t, v in extra]
        raw = wire.encode(self.bs, msg_type, hdr, body)
        if not explicit:
            # admin messages are never resent (gap-filled), so the store needs no secret of a Logon
            self.store.save_message(seq, wire.redact(raw) if msg_type == b"A" else raw)
            self.store.incr_next_sender()
        if msg_type in (b"A", b"5", b"2", b"4") or self.logged_on:
            self._emit(raw)
        return seq

    def _emit(self, raw: bytes) -> None:
        self._out.append(raw)
        self.last_sent = self._now
        if self.mlog:
            self.mlog.write("OUT", self._now, raw)

    def _admin_body(self, fields: list) -> list:
        return sorted(fields, key=lambda f: f[0])

    # ---- generators ---------------------------------------------------------------------

    def _should_send_reset(self) -> bool:
        c = self.cfg
        return ((c.reset_on_logon or c.reset_on_logout or c.reset_on_disconnect)
                and self.store.next_sender == 1 and self.store.next_target == 1)

    def _generate_logon(self, peer_logon: wire.Message | None = None) -> None:
        body = [(98, b"0"), (108, b"%d" % self.heartbeat_interval)]
        if peer_logon is None:          # initiator
            if self.cfg.reset_on_logon:
                self.store.reset(self._now)
            if self._should_send_reset():
                body.append((141, b"Y"))
                self.sent_reset = True
        elif self.received_reset:
            body.append((141, b"Y"))
        self.last_received = self._now
        self.test_request = 0
        self.sent_logon = True
        self._send(b"A", [], self._admin_body(body))

    def _generate_logout(self, text: str | None = None) -> None:
        body = [(58, text.encode())] if text else []
        self.sent_logout = True
        self._send(b"5", [], body)

    def _generate_heartbeat(self, test_req_id: bytes | None = None) -> None:
        self._send(b"0", [], [(112, test_req_id)] if test_req_id is not None else [])

    def _generate_test_request(self, test_req_id: bytes) -> None:
        self._send(b"1", [], [(112, test_req_id)])

    def _generate_resend_request(self, msg_seq: int) -> None:
        begin = self.expected_target
        end = 0 if self.cfg.begin_string >= "FIX.4.2" else 999999
        self._send(b"2", [], [(7, b"%d" % begin), (16, b"%d" % end)])
        self.resend_range = (begin, msg_seq - 1)
        log.info("%s: sent ResendRequest %d..%d", self.name, begin, msg_seq - 1)

    def _generate_sequence_reset(self, begin: int, end: int) -> None:
        now = wire.utc_timestamp(self._now)
        self._send(b"4", [(43, b"Y"), (122, now)], [(36, b"%d" % end), (123, b"Y")], seq=begin)

    def _generate_reject(self, msg: wire.Message, reason: int, tag: int = 0) -> None:
        header = []
        for src, dst in _REVERSE_ROUTE:
            v = msg.get(src)
            if v:
                header.append((dst, v))
        body = []
        seq_b = msg.get(34)
        mt = msg.msg_type
        if seq_b:
            body.append((45, seq_b))
        if self.cfg.begin_string >= "FIX.4.2":
            if mt:
                body.append((372, mt))
            if self.cfg.begin_string > "FIX.4.2" or reason <= REJ_INVALID_MSGTYPE:
                body.append((373, b"%d" % reason))
        seq = msg.get_int(34)
        if mt not in (b"A", b"4") and seq == self.expected_target:
            self.store.incr_next_target()
        text = REJECT_TEXT.get(reason)
        if text and (tag or reason == REJ_INVALID_TAG):
            if self.cfg.begin_string >= "FIX.4.2":
                body += [(371, b"%d" % tag), (58, text.encode())]
            else:
                body.append((58, f"{text} ({tag})".encode()))
        elif text:
            body.append((58, text.encode()))
        log.warning("%s: rejecting message %s: %s (tag %d)", self.name, seq_b, text, tag)
        if not self.received_logon:
            raise _Disconnect(f"reject before logon: {text}")
        self.rejects_sent += 1
        self._send(b"3", header, self._admin_body(body))

    def _generate_business_reject(self, msg: wire.Message, reason: int, text: str | None = None,
                                  tag: int = 0) -> None:
        body = [(372, msg.msg_type), (45, msg.get(34, b"0")), (380, b"%d" % reason)]
        self.store.incr_next_target()
        text = text or BUSINESS_REJECT_TEXT.get(reason)
        if text:
            body.append((58, (f"{text} ({tag})" if tag else text).encode()))
        self.rejects_sent += 1
        log.warning("%s: business reject of %s seq %s: %s", self.name, msg.msg_type, msg.get(34), text)
        self._send(b"j", [], self._admin_body(body))

    # ---- inbound processing -------------------------------------------------------------

    def _garbled(self, frame: bytes, why: str) -> None:
        self.garbled += 1
        log.warning("%s: ignoring garbled message (%s): %s", self.name, why, wire.pretty(frame, 200))
        if self.mlog:
            self.mlog.write("BAD", self._now, frame, why)

    def _disconnect(self, reason: str) -> None:
        if not self.closing:
            log.info("%s: disconnecting: %s", self.name, reason)
        self.closing = True

    def _check_period(self, now: float) -> None:
        start = self.cfg.schedule.period_start(now)
        if start and self.store.creation_time < start:
            log.info("%s: new session period; resetting sequence numbers", self.name)
            self.store.reset(now)

    def _next(self, msg: wire.Message, queued: bool = False) -> None:
        if not self.cfg.schedule.in_session(self._now):
            raise _Disconnect("message outside the session schedule")
        mt = msg.msg_type
        try:
            for tag in (49, 56):
                if not msg.has(tag):
                    if self.dd is not None and self.dd.is_app_message(mt) and self.cfg.begin_string >= "FIX.4.2":
                        self._generate_business_reject(msg, BR_COND_REQUIRED_MISSING, tag=tag)
                    else:
                        self._generate_reject(msg, REJ_REQUIRED_MISSING, tag)
                        if mt == b"A":
                            raise _Disconnect("required field missing from logon")
                    return
            if msg.begin_string != self.bs:
                if mt == b"5":
                    self._next_logout(msg)
                else:
                    self._generate_logout("Incorrect BeginString")
                    self.store.incr_next_target()
                return
            if self.dd is not None:
                err = self.dd.validate(msg)
                if err is not None:
                    self._generate_reject(msg, err.reason, err.tag)
                    return
            else:
                for tag in (34, 52):
                    if not msg.get(tag):
                        self._generate_reject(msg, REJ_REQUIRED_MISSING, tag)
                        return
            if msg.get_int(34) is None:
                self._generate_reject(msg, REJ_BAD_FORMAT, 34)
                return
            if mt == b"A":
                self._next_logon(msg)
            elif mt == b"0":
                if self._verify(msg):
                    self.store.incr_next_target()
            elif mt == b"1":
                if self._verify(msg):
                    self._generate_heartbeat(msg.get(112))
                    self.store.incr_next_target()
            elif mt == b"4":
                self._next_sequence_reset(msg)
            elif mt == b"5":
                self._next_logout(msg)
            elif mt == b"2":
                self._next_resend_request(msg)
            elif mt == b"3":
                if self._verify(msg, False, True):
                    self.store.incr_next_target()
            else:
                if self._verify(msg):
                    self.store.incr_next_target()
        except UnsupportedMessageType:
            if mt == b"j":      # never answer a BusinessMessageReject with another one
                log.warning("%s: BusinessMessageReject %s from peer: %r", self.name, msg.get(34), msg.get(58))
                self.store.incr_next_target()
            elif self.cfg.begin_string >= "FIX.4.2":
                self._generate_business_reject(msg, BR_UNSUPPORTED_MSGTYPE)
            else:
                self._generate_reject(msg, REJ_INVALID_MSGTYPE)
        except BusinessReject as e:
            self._generate_business_reject(msg, e.reason, e.text, e.tag)
        except RejectLogon as e:
            self._generate_logout(str(e) or None)
            raise _Disconnect(f"logon rejected: {e}") from None
        except _Disconnect:
            raise
        except Exception as e:              # a failing application callback must not kill the session
            log.exception("%s: application failed on message %s (%r)", self.name, msg.get(34), mt)
            if mt in wire.ADMIN_TYPES or not self.logged_on:
                raise _Disconnect(f"application error: {e}") from None
            self._generate_business_reject(msg, BR_APP_NOT_AVAILABLE, "Application error")
        if not queued:
            self._next_queued()

    def _next_queued(self) -> None:
        while not self.closing:
            exp = self.expected_target
            for s in [s for s in self.queue if s < exp]:
                del self.queue[s]
            msg = self.queue.pop(exp, None)
            if msg is None:
                return
            if msg.msg_type in (b"A", b"2"):
                self.store.incr_next_target()
            else:
                self._next(msg, queued=True)

    def _valid_logon_state(self, mt: bytes) -> bool:
        if (mt == b"A" and self.sent_reset) or self.received_reset:
            return True
        if (mt == b"A" and not self.received_logon) or (mt != b"A" and self.received_logon):
            return True
        if mt == b"5" and self.sent_logon:
            return True
        if mt != b"5" and self.sent_logout:
            return True
        return mt in (b"4", b"3")

    def _verify(self, msg: wire.Message, check_high: bool = True, check_low: bool = True) -> bool:
        mt = msg.msg_type
        seq = msg.get_int(34)
        if not self._valid_logon_state(mt):
            raise _Disconnect(f"message type {mt!r} not valid in this logon state")
        if self.cfg.check_latency:
            st = wire.parse_utc_timestamp(msg.get(52, b""))
            if st is None or abs(self._now - st) > self.cfg.max_latency:
                self._generate_reject(msg, REJ_SENDING_TIME)
                self._generate_logout()
                return False
        if self.cfg.check_comp_id and (msg.get(49) != self.target or msg.get(56) != self.sender):
            self._generate_reject(msg, REJ_COMPID)
            self._generate_logout()
            return False
        if check_high and seq > self.expected_target:
            self._target_too_high(msg, seq)
            return False
        if check_low and seq < self.expected_target:
            self._target_too_low(msg, seq)
            return False
        if (check_high or check_low) and self.resend_range and seq >= self.resend_range[1]:
            log.info("%s: ResendRequest %d..%d satisfied", self.name, *self.resend_range)
            self.resend_range = None
        self.last_received = self._now
        self.test_request = 0
        if not msg.is_admin():
            self.app.on_app_message(self, msg)
        else:
            self._callback("on_admin_message", msg)
        return True

    def _target_too_high(self, msg: wire.Message, seq: int) -> None:
        log.info("%s: MsgSeqNum too high, expecting %d but received %d", self.name, self.expected_target, seq)
        if len(self.queue) >= self.cfg.max_queued:
            self._generate_logout(f"too many out-of-order messages ({len(self.queue)})")
            raise _Disconnect(f"more than {self.cfg.max_queued} messages queued behind a gap")
        self.queue[seq] = msg
        if self.resend_range and seq >= self.resend_range[0]:
            return
        self._generate_resend_request(seq)

    def _target_too_low(self, msg: wire.Message, seq: int) -> None:
        if msg.get(43) != b"Y":
            text = f"MsgSeqNum too low, expecting {self.expected_target} but received {seq}"
            self._generate_logout(text)
            raise _Disconnect(text)
        if msg.msg_type != b"4":
            orig = msg.get(122)
            if orig is None:
                self._generate_reject(msg, REJ_REQUIRED_MISSING, 122)
                return
            o, s = wire.parse_utc_timestamp(orig), wire.parse_utc_timestamp(msg.get(52, b""))
            if o is None or s is None or o > s:
                self._generate_reject(msg, REJ_SENDING_TIME)
                self._generate_logout()

    def _next_logon(self, msg: wire.Message) -> None:
        if not self.cfg.schedule.in_session(self._now):
            raise _Disconnect("logon outside the session schedule")
        self.received_reset = msg.get(141) == b"Y"
        if self.received_reset:
            log.info("%s: Logon with ResetSeqNumFlag=Y; resetting sequence numbers", self.name)
            if not self.sent_reset:
                self.store.reset(self._now)
        if self.cfg.initiator and not self.sent_logon and not self.received_reset:
            raise _Disconnect("received logon response before sending request")
        if not self.cfg.initiator and self.cfg.reset_on_logon:
            self.store.reset(self._now)
        if not self._verify(msg, False, True):
            return
        hb = msg.get_int(108)
        if hb is None or hb < 0:
            self._generate_reject(msg, REJ_BAD_VALUE, 108)
            raise _Disconnect("bad HeartBtInt in logon")
        if not self.cfg.initiator and not self.cfg.min_heartbeat <= hb <= self.cfg.max_heartbeat:
            # a peer that proposes 0 (no heartbeats) and goes silent would hold the session, and
            # refuse its own reconnect as a duplicate identity, for as long as TCP lets it
            text = (f"HeartBtInt {hb} outside the accepted range {self.cfg.min_heartbeat}.."
                    f"{self.cfg.max_heartbeat} s")
            self._generate_logout(text)
            raise _Disconnect(f"logon refused: {text}")
        if not self.cfg.initiator:
            self._callback("verify_logon", msg)
        self.received_logon = True
        if not self.cfg.initiator or (self.received_reset and not self.sent_reset):
            self.heartbeat_interval = hb
            log.info("%s: received logon request (HeartBtInt %d); responding", self.name, hb)
            self._generate_logon(msg)
        else:
            log.info("%s: received logon response", self.name)
        self.sent_reset = False
        self.received_reset = False
        seq = msg.get_int(34)
        if seq > self.expected_target and msg.get(141) != b"Y":
            self._target_too_high(msg, seq)
        else:
            self.store.incr_next_target()
            self._next_queued()
        if self.logged_on:
            self._callback("on_logon")

    def _next_logout(self, msg: wire.Message) -> None:
        if not self._verify(msg, False, False):
            return
        if not self.sent_logout:
            log.info("%s: received logout request; responding", self.name)
            self._generate_logout()
        else:
            log.info("%s: received logout response", self.name)
        self.store.incr_next_target()
        if self.cfg.reset_on_logout:
            self.store.reset(self._now)
        raise _Disconnect("logout")

    def _next_sequence_reset(self, msg: wire.Message) -> None:
        gap_fill = msg.get(123) == b"Y"
        if not self._verify(msg, gap_fill, gap_fill):
            return
        new = msg.get_int(36)
        if new is None:
            return
        log.info("%s: SequenceReset (gap fill %s) to %d", self.name, gap_fill, new)
        if new > self.expected_target:
            self.store.set_next_target(new)
        elif new < self.expected_target:
            self._generate_reject(msg, REJ_BAD_VALUE)

    def _next_resend_request(self, msg: wire.Message) -> None:
        if not self._verify(msg, False, False):
            return
        begin = msg.get_int(7, 0)
        end = msg.get_int(16, 0)
        next_sender = self.store.next_sender
        log.info("%s: received ResendRequest %d..%d", self.name, begin, end)
        if ((self.cfg.begin_string >= "FIX.4.2" and end == 0)
                or (self.cfg.begin_string <= "FIX.4.2" and end == 999999) or end >= next_sender):
            end = next_sender - 1
        stored = self.store.get_messages(begin, end)
        gap_begin = 0
        current = begin
        seq = 0
        for seq, raw in stored:
            try:
                old = wire.parse(raw)
            except wire.GarbledMessage:
                log.error("%s: stored message %d unreadable; gap-filling it", self.name, seq)
                old = None
            if current != seq and not gap_begin:
                gap_begin = current
            if old is None or old.is_admin() or self._callback("should_resend", old) is False:
                if not gap_begin:
                    gap_begin = seq
            else:
                if gap_begin:
                    self._generate_sequence_reset(gap_begin, seq)
                self._resend(old, seq)
                gap_begin = 0
            current = seq + 1
        if gap_begin:
            self._generate_sequence_reset(gap_begin, seq + 1)
        if end > seq:
            new_end = min(end + 1, self.store.next_sender)
            self._generate_sequence_reset(begin if not stored else seq + 1, new_end)
        s = msg.get_int(34)
        if not (s > self.expected_target or s < self.expected_target):
            self.store.incr_next_target()

    def _resend(self, old: wire.Message, seq: int) -> None:
        header = [(43, b"Y"), (122, old.get(52, b""))]
        body = []
        for t, v in old.fields:
            if t in (8, 9, 35, 10, 34, 49, 52, 56, 43, 122):
                continue
            (header if t in HEADER_TAGS else body).append((t, v))
        hdr = header + self._header(seq)
        raw = wire.encode(self.bs, old.msg_type, hdr, body)
        self.resent += 1
        self._emit(raw)

    # ---- timers -------------------------------------------------------------------------

    def _timer(self, now: float) -> None:
        if not self.cfg.schedule.in_session(now):
            if self.logged_on and not self.sent_logout:
                self._generate_logout("session schedule end")
            elif not self.logged_on:
                raise _Disconnect("outside the session schedule")
        if not self.received_logon:
            if self.cfg.initiator and not self.sent_logon:
                if self.cfg.schedule.in_session(now):
                    self._generate_logon()
            elif now - self.last_received >= self.cfg.logon_timeout:
                raise _Disconnect("timed out waiting for logon")
            return
        hb = self.heartbeat_interval
        if self.sent_logout and now - self.last_sent >= self.cfg.logout_timeout:
            raise _Disconnect("timed out waiting for logout response")
        if hb == 0:
            return
        if now - self.last_sent < hb and now - self.last_received < hb:
            return
        if now - self.last_received >= 2.4 * hb:
            raise _Disconnect("timed out waiting for heartbeat")
        if now - self.last_received >= 1.2 * (self.test_request + 1) * hb:
            self._generate_test_request(b"TEST")
            self.test_request += 1
            log.info("%s: sent TestRequest", self.name)
        elif now - self.last_sent >= hb and self.test_request == 0:
            self._generate_heartbeat()
