"""TCP transport for FIX sessions: plain non-blocking sockets and ``selectors``, no asyncio.

``EventLoop`` owns listening sockets (acceptors), outgoing connections (initiators) and the
connections themselves, and moves bytes between sockets and ``Session`` objects:

- acceptor: the first well-formed frame on a new connection names the session
  (BeginString, TargetCompID -> our SenderCompID, SenderCompID -> our TargetCompID). No such
  session, a first message that is not a Logon, or a session that already has a connection
  (duplicate identity): the connection is closed without a reply;
- initiator: connects, lets the session send its Logon, reconnects after ``reconnect_interval``
  when the connection drops;
- before logon a connection may buffer at most ``max_unbound_bytes`` (a Logon is a few hundred
  bytes) and all such connections together ``max_unbound_total``; a connection that would pass
  either is closed (counted, logged). After logon the session's framer bounds a message by its
  ``max_body``;
- accept errors (EMFILE/ENFILE at the open-file limit, ENOBUFS, ENOMEM) are logged (once a
  second), the oldest connection that has not logged on is closed to free a descriptor, and the
  listener pauses for ``accept_pause`` seconds; it keeps serving, it never crashes;
- a peer that stops reading: outgoing bytes queue per connection; once more than ``max_outbuf``
  is queued and the socket has taken nothing for ``stall_timeout`` seconds (or ever more than
  ``hard_outbuf`` is queued) the connection is closed (logged), so a stuck peer never blocks the
  loop or other sessions, while a large resend to a peer that is reading goes through.

Call ``loop.poll(timeout)`` in a loop (or ``loop.run(stop)``); it also drives ``on_timer`` of
every connected session about every ``tick`` seconds. The clock is injectable (``clock=``).
"""
from __future__ import annotations

import errno
import logging
import selectors
import socket
import ssl
import time

from appliance.fix import wire

log = logging.getLogger(__name__)

READ_SIZE = 65536
_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


def _parses(frame: bytes) -> bool:
    try:
        wire.parse(frame)
    except wire.GarbledMessage:
        return False
    return True


class Connection:
    def __init__(self, sock: socket.socket, peer, session=None, initiator_entry=None):
        self.sock = sock
        self.peer = peer
        self.session = session
        self.framer = wire.Framer() if session is None else None
        self.outbuf = bytearray()
        self.initiator_entry = initiator_entry
        self.connecting = False
        self.opened = time.time()
        self.closed = False
        self.last_progress = self.opened
        self.handshaking = False


class _Initiator:
    def __init__(self, session, host, port, reconnect_interval, tls=None, server_hostname=None):
        self.session = session
        self.addr = (host, port)
        self.tls = tls
        self.server_hostname = server_hostname or host
        self.reconnect_interval = reconnect_interval
        self.next_attempt = 0.0
        self.conn: Connection | None = None
        self.enabled = True


class EventLoop:
    def __init__(self, clock=time.time, tick: float = 0.05, max_outbuf: int = 16 << 20,
                 unbound_timeout: float = 10.0, stall_timeout: float = 5.0, hard_outbuf: int = 256 << 20,
                 sndbuf: int = 0, max_unbound_bytes: int = 64 << 10, max_unbound_total: int = 16 << 20,
                 accept_pause: float = 0.05):
        self.sel = selectors.DefaultSelector()
        self.clock = clock
        self.tick = tick
        self.max_outbuf = max_outbuf
        self.stall_timeout = stall_timeout
        self.hard_outbuf = max(hard_outbuf, max_outbuf)
        self.sndbuf = sndbuf                          # SO_SNDBUF for our sockets; 0 = kernel default
        self.unbound_timeout = unbound_timeout
        self.sessions: dict[tuple, object] = {}       # (bs, sender, target) bytes -> Session
        self.bound: dict[int, Connection] = {}        # id(session) -> connection
        self.conns: set[Connection] = set()
        self.initiators: list[_Initiator] = []
        self.listeners: list[socket.socket] = []
        self._last_tick = 0.0
        self.rejected_connections = 0
        self.max_unbound_bytes = max_unbound_bytes
        self.max_unbound_total = max_unbound_total
        self.accept_pause = accept_pause
        self.accept_errors = 0
        self._paused: dict = {}                       # listener -> time to resume accepting
        self._accept_log_next = 0.0
        self.tls_contexts: dict = {}                  # listener -> server SSLContext

    # ---- setup ---------------------------------------------------------------------------

    def add_acceptor_session(self, session) -> None:
        self.sessions[(session.bs, session.sender, session.target)] = session

    def listen(self, host: str, port: int, tls=None) -> int:
        """Listen on host:port; ``tls`` (an ``ssl.SSLContext`` from ``tls.TlsSettings.server_context``)
        makes every connection on it FIX over TLS."""
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        s.listen(128)
        s.setblocking(False)
        self.sel.register(s, selectors.EVENT_READ, ("listen", s))
        self.listeners.append(s)
        if tls is not None:
            self.tls_contexts[s] = tls
        return s.getsockname()[1]

    def add_initiator(self, session, host: str, port: int, reconnect_interval: float = 1.0, tls=None,
                      server_hostname: str | None = None) -> None:
        """Connect (and reconnect) ``session`` to host:port; ``tls`` (an ``ssl.SSLContext`` from
        ``tls.TlsSettings.client_context``) makes it FIX over TLS, checking ``server_hostname``
        (default: host) in the server's certificate and sending it as SNI."""
        self.initiators.append(_Initiator(session, host, port, reconnect_interval, tls, server_hostname))

    def unbound_bytes(self) -> int:
        """Bytes buffered by connections that have not logged on yet."""
        return sum(len(c.framer.buf) for c in self.conns if c.framer is not None)

    def connection_of(self, session):
        return self.bound.get(id(session))

    def flush_session(self, session, data: bytes = b"") -> bool:
        """Hand ``data`` (e.g. what ``session.logout()`` returned) and the session's pending
        output (e.g. after ``send_app``) to its connection now."""
        conn = self.bound.get(id(session))
        if conn is None:
            return False
        self._deliver(conn, data + session.take_output())
        return True

    # ---- loop ----------------------------------------------------------------------------

    def run(self, stop) -> None:
        """Poll until ``stop()`` is true (e.g. ``threading.Event().is_set``)."""
        while not stop():
            self.poll(self.tick)

    def poll(self, timeout: float = 0.05) -> None:
        now = self.clock()
        self._start_initiators(now)
        for lsock, until in list(self._paused.items()):
            if now >= until:
                del self._paused[lsock]
                self.sel.register(lsock, selectors.EVENT_READ, ("listen", lsock))
        for key, mask in self.sel.select(timeout):
            kind, obj = key.data
            if kind == "listen":
                self._accept(obj)
            elif mask & selectors.EVENT_WRITE and obj.connecting:
                self._finish_connect(obj)
            else:
                if mask & selectors.EVENT_READ:
                    self._read(obj)
                if mask & selectors.EVENT_WRITE and not obj.closed:
                    self._flush(obj)
        now = self.clock()
        if now - self._last_tick >= self.tick:
            self._last_tick = now
            for conn in list(self.conns):
                if self._stalled(conn):
                    continue
                if conn.session is not None and not conn.connecting:
                    try:
                        self._deliver(conn, conn.session.on_timer(now))
                    except Exception:
                        log.exception("%s: error in timer; closing the connection", conn.session.name)
                        self._close(conn, "internal error")
                elif conn.session is None and now - conn.opened > self.unbound_timeout:
                    self._close(conn, "no logon received")

    def close(self) -> None:
        for conn in list(self.conns):
            self._close(conn, "event loop closed")
        for s in self.listeners:
            if s not in self._paused:
                self.sel.unregister(s)
            s.close()
        self._paused.clear()
        self.listeners.clear()
        for ini in self.initiators:
            ini.enabled = False
        self.sel.close()

    # ---- internals -----------------------------------------------------------------------

    def _start_initiators(self, now: float) -> None:
        for ini in self.initiators:
            if ini.enabled and ini.conn is None and now >= ini.next_attempt:
                ini.next_attempt = now + ini.reconnect_interval
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self.sndbuf:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.sndbuf)
                conn = Connection(s, ini.addr, ini.session, ini)
                conn.connecting = True
                err = s.connect_ex(ini.addr)
                if err not in (0, errno.EINPROGRESS):
                    log.info("%s: connect to %s failed: %s", ini.session.name, ini.addr, errno.errorcode.get(err, err))
                    s.close()
                    continue
                ini.conn = conn
                self.conns.add(conn)
                self.sel.register(s, selectors.EVENT_WRITE, ("conn", conn))

    def _finish_connect(self, conn: Connection) -> None:
        err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            log.info("%s: connect to %s failed: %s", conn.session.name, conn.peer, errno.errorcode.get(err, err))
            self._close(conn, "connect failed", notify=False)
            return
        conn.connecting = False
        ini = conn.initiator_entry
        if ini.tls is not None:
            self.sel.unregister(conn.sock)
            try:
                conn.sock = ini.tls.wrap_socket(conn.sock, server_hostname=ini.server_hostname,
                                                do_handshake_on_connect=False)
            except (OSError, ValueError) as e:
                self._close(conn, f"TLS setup failed: {e}", notify=False)
                return
            self.sel.register(conn.sock, selectors.EVENT_READ, ("conn", conn))
            conn.handshaking = True
            self._handshake(conn)
            return
        self.sel.modify(conn.sock, selectors.EVENT_READ, ("conn", conn))
        self._session_up(conn)

    def _session_up(self, conn: Connection) -> None:
        self.bound[id(conn.session)] = conn
        log.info("%s: connected to %s", conn.session.name, conn.peer)
        self._deliver(conn, conn.session.connected(self.clock()))

    def _accept(self, lsock) -> None:
        while True:
            try:
                s, peer = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:               # EMFILE, ENFILE, ENOBUFS, ENOMEM, ECONNABORTED...
                self._accept_failed(lsock, e)
                return
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.sndbuf:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.sndbuf)
            ctx = self.tls_contexts.get(lsock)
            if ctx is not None:
                try:
                    s = ctx.wrap_socket(s, server_side=True, do_handshake_on_connect=False)
                except (OSError, ValueError) as e:
                    log.info("TLS setup for %s failed: %s", peer, e)
                    s.close()
                    continue
            conn = Connection(s, peer)
            conn.handshaking = ctx is not None
            self.conns.add(conn)
            self.sel.register(s, selectors.EVENT_READ, ("conn", conn))

    def _accept_failed(self, lsock, e: OSError) -> None:
        self.accept_errors += 1
        now = self.clock()
        if now >= self._accept_log_next:
            self._accept_log_next = now + 1.0
            log.error("accept failed (%s; %d so far): freeing the oldest connection that has not "
                      "logged on and pausing the listener for %.0f ms", e, self.accept_errors,
                      self.accept_pause * 1000)
        unbound = [c for c in self.conns if c.session is None and c.initiator_entry is None]
        if unbound:
            self._close(min(unbound, key=lambda c: c.opened), "freeing a descriptor after an accept error")
        if lsock not in self._paused:
            self.sel.unregister(lsock)
            self._paused[lsock] = now + self.accept_pause

    def _read(self, conn: Connection) -> None:
        if conn.handshaking:
            self._handshake(conn)
            if conn.handshaking or conn.closed:
                return
        try:
            data = conn.sock.recv(READ_SIZE)
        except _WOULD_BLOCK:
            return
        except OSError as e:
            self._close(conn, f"read error: {e}")
            return
        if not data:
            self._close(conn, "peer closed the connection")
            return
        now = self.clock()
        try:
            if conn.session is None:
                if len(data) + len(conn.framer.buf) > self.max_unbound_bytes:
                    self.rejected_connections += 1
                    self._close(conn, f"more than {self.max_unbound_bytes} bytes before a Logon")
                    return
                held = self.unbound_bytes()
                if held + len(data) > self.max_unbound_total:
                    self.rejected_connections += 1
                    self._close(conn, f"connections not logged on hold {held} bytes "
                                      f"(limit {self.max_unbound_total})")
                    return
                self._bind(conn, data, now)
            else:
                self._deliver(conn, conn.session.on_bytes(data, now))
        except Exception:                    # a bug in one session must not stop the others
            log.exception("%s: error handling input; closing the connection", conn.peer)
            self._close(conn, "internal error")

    def _handshake(self, conn: Connection) -> None:
        try:
            conn.sock.do_handshake()
        except _WOULD_BLOCK:
            return
        except (OSError, ValueError) as e:
            self._close(conn, f"TLS handshake failed: {e}")
            return
        conn.handshaking = False
        log.info("%s: TLS %s, %s", conn.peer, conn.sock.version(), conn.sock.cipher()[0])
        if conn.initiator_entry is not None:
            self._session_up(conn)

    def _bind(self, conn: Connection, data: bytes, now: float) -> None:
        conn.framer.feed(data)
        while True:
            fr = conn.framer.next_frame()
            if fr is None:
                return
            status, frame = fr
            if status != wire.FRAME_OK or not _parses(frame):
                if b"\x0135=A\x01" in frame[:64]:      # a garbled Logon (e.g. wrong BodyLength)
                    self.rejected_connections += 1
                    self._close(conn, "garbled Logon (bad BodyLength, CheckSum or field)")
                    return
                log.warning("unbound connection %s: ignoring garbled frame %s", conn.peer,
                            wire.pretty(frame, 200))
                continue
            msg = wire.parse(frame)
            key = (msg.begin_string, msg.get(56, b""), msg.get(49, b""))
            session = self.sessions.get(key)
            if session is None:
                self.rejected_connections += 1
                self._close(conn, f"no session for {key!r}")
                return
            if msg.msg_type != b"A":
                self.rejected_connections += 1
                self._close(conn, f"first message is {msg.msg_type!r}, not a Logon")
                return
            if id(session) in self.bound:
                self.rejected_connections += 1
                self._close(conn, f"{session.name} already has a connection (duplicate identity)")
                return
            conn.session = session
            self.bound[id(session)] = conn
            rest = frame + bytes(conn.framer.buf)
            conn.framer = None
            log.info("%s: accepted connection from %s", session.name, conn.peer)
            out = session.connected(now)
            self._deliver(conn, out + session.on_bytes(rest, now))
            return

    def _deliver(self, conn: Connection, out: bytes) -> None:
        if conn.closed:
            return
        if out:
            conn.outbuf += out
            self._flush(conn)
        if conn.closed:
            return
        if self._stalled(conn):
            return
        if conn.session is not None and conn.session.closing:
            self._flush(conn)
            self._close(conn, "session closed the connection")

    def _flush(self, conn: Connection) -> None:
        while conn.outbuf:
            try:
                n = conn.sock.send(conn.outbuf)
            except _WOULD_BLOCK:
                break
            except OSError as e:
                self._close(conn, f"write error: {e}")
                return
            del conn.outbuf[:n]
            if n:
                conn.last_progress = self.clock()
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.outbuf else 0)
        try:
            self.sel.modify(conn.sock, want, ("conn", conn))
        except (KeyError, ValueError):
            pass

    def _stalled(self, conn: Connection) -> bool:
        """Close a connection whose peer stopped reading; True if it was closed."""
        queued = len(conn.outbuf)
        if queued <= self.max_outbuf:
            return False
        idle = self.clock() - conn.last_progress
        if queued > self.hard_outbuf or idle >= self.stall_timeout:
            self._close(conn, f"peer is not reading: {queued} bytes queued, nothing taken for {idle:.1f} s")
            return True
        return False

    def _close(self, conn: Connection, why: str, notify: bool = True) -> None:
        if conn.closed:
            return
        conn.closed = True
        name = conn.session.name if conn.session is not None else str(conn.peer)
        log.info("%s: connection closed: %s", name, why)
        try:
            self.sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        try:
            conn.sock.close()
        except OSError:
            pass
        if conn.framer is not None:
            conn.framer.buf.clear()
        self.conns.discard(conn)
        if conn.session is not None and self.bound.get(id(conn.session)) is conn:
            del self.bound[id(conn.session)]
            if notify:
                conn.session.disconnected(self.clock())
        if conn.initiator_entry is not None:
            conn.initiator_entry.conn = None
