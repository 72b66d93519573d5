"""The live market-data gateway: one venue's WebSocket feed -> compiled deframe + parse -> md ring.

``appliance md --venue NAME`` runs one ``Gateway`` in its own process::

    warm the venue's kernels (compile or load them from the cache) before connecting
    connect: TCP + WebSocket handshake (websocket-client) on a helper thread with an overall
        deadline, so a peer that stalls the handshake cannot hold the gateway
    send the venue's subscribe messages, then loop:
        feed.pump(fd, ...)   compiled: recv() on the raw socket -> WebSocket deframing -> the
                             venue's handle_frame (parse, sync rules, book, publish) for every
                             complete frame; returns only when the socket is idle or something
                             rare happened (control frame, fragment, an action for Python)
        idle                 select() on the socket (poll_s), housekeeping every 100 ms
        actions              the feed's rare paths (events, snapshot buffer, logging)
        control frames       ping -> pong (websocket-client writes it), close -> reconnect
        REST snapshots       fetched on daemon threads, applied on the loop thread; refetches of
                             one symbol on one connection back off exponentially
        resubscribe request  (gap, checksum failure) -> reconnect at once
    on any disconnect: every book -> BOOK_INVALID(BR_DISCONNECT); reconnect with exponential
    back-off and full jitter (reconnect_min_ms .. reconnect_max_ms), then resubscribe; the
    back-off resets once a connection delivers data.

Hostile peers: a frame whose header claims more than ``max_frame_bytes`` drops the connection
before anything is allocated (the receive buffer is fixed); a frame that has started but not
completed within ``frame_deadline_ms`` (a peer trickling bytes) and a connection with no
complete frame for ``stale_after_ms`` both mark every book stale (BR_STALE) and reconnect. The
loop never blocks for longer than ``poll_s`` outside compiled code, so a stop request (SIGTERM)
is honoured within a second whatever the socket does.

ACKs (plain TCP): the compiled pump sends the socket's ACK itself once it has handled what it
read and the socket stayed quiet for ``ack_after_us`` (0: at once), rather than the next frame's
recv() (venues/wsframe.py: deferred ACKs); ``ack_after_us`` < 0 leaves them to the kernel.

With TLS (wss://) the decrypted bytes come from the ssl socket's ``recv_into`` (Python) and the
same compiled deframing and handling run over them.

Counters (``Gateway.stats()``): the feed's (frames, records, gaps, resyncs, checksums_ok,
checksums_failed, errors, ...) plus the connection's own (see STAT_NAMES), ``books``,
``books_valid`` and ``never_synced`` (books never valid on any connection).

Telemetry (the actor's region ``telemetry.md.<venue>``): histogram ``frame_to_publish``, the
time from the recv() that completed a frame to its last record published on the md ring (ns),
written by the compiled pump for every frame that published records.
"""
from __future__ import annotations

import json
import logging
import random
import select
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

import websocket

from appliance.actor import EXIT_CANNOT_START, Actor, ActorError
from appliance.jit.bound import Bound
from appliance.transport import control, records, ring, shm
from appliance.venues import common, registry, wsframe

log = logging.getLogger("appliance.venues.gateway")

SNAPSHOT_CHECK_S = 0.005     # how often the connection loop asks the feed for snapshots to fetch
SNAPSHOT_WORKERS = 4         # concurrent REST snapshot fetches
SNAPSHOT_RETRY_S = 1.0       # after a failed fetch
SNAPSHOT_BACKOFF_MIN_S = 1.0     # second refetch of a symbol on one connection waits this long,
SNAPSHOT_BACKOFF_MAX_S = 60.0    # doubling up to this
SNAPSHOT_MAX_BYTES = 64 << 20    # a REST body larger than this is refused
HOP_FRAME_TO_PUBLISH = "frame_to_publish"   # telemetry histogram (appliance.transport.telemetry)
PUMP_FRAMES = 256            # frames one pump call may handle before Python looks around
HOUSEKEEPING_S = 0.1

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_METADATA = 3
EXIT_RING = 4


class GatewayError(RuntimeError):
    """The gateway cannot start (unknown venue, no metadata, no instruments)."""


def venue_module(name: str):
    try:
        return registry.module(name)
    except registry.UnknownVenue as e:
        raise GatewayError(str(e)) from None


def http_get(url: str, timeout: float, max_bytes: int = SNAPSHOT_MAX_BYTES) -> bytes:
    """GET a REST body: ``timeout`` per socket operation and for the whole body; a body over
    ``max_bytes`` is refused (ValueError)."""
    req = urllib.request.Request(url, headers={"User-Agent": "appliance-md/1",
                                               "Accept": "application/json"})
    deadline = time.monotonic() + timeout
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        chunks = []
        n = 0
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"body of {url} not complete within {timeout:.1f} s")
            c = resp.read1(1 << 16)
            if not c:
                return b"".join(chunks)
            n += len(c)
            if n > max_bytes:
                raise ValueError(f"body of {url} exceeds {max_bytes} bytes")
            chunks.append(c)


def fetch_metadata(venue: str, rest_url: str, timeout: float = 10.0) -> bytes:
    """The venue's metadata in the recordings' ``X.0`` format (``<url> -> <ts>: <body>`` lines),
    fetched over REST."""
    mod = venue_module(venue)
    paths = mod.METADATA_PATHS
    lines = []
    for p in paths:
        url = rest_url.rstrip("/") + p
        try:
            body = http_get(url, timeout)
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise GatewayError(f"{venue}: metadata request {url} failed: {e}") from None
        lines.append(url.encode() + b" -> " + repr(time.time()).encode() + b": " + body.strip())
    return b"\n".join(lines) + b"\n"


class Backoff:
    """Exponential back-off with full jitter: attempt k waits uniform(0.5, 1) * min(max, min * 2^k)."""

    def __init__(self, min_ms: int, max_ms: int, rng: random.Random | None = None):
        if min_ms <= 0 or max_ms < min_ms:
            raise ValueError(f"back-off needs 0 < min_ms <= max_ms, got {min_ms}, {max_ms}")
        self.min_ms = min_ms
        self.max_ms = max_ms
        self.rng = rng or random.Random()
        self.attempt = 0

    def next_s(self) -> float:
        cap = min(self.max_ms, self.min_ms * (1 << min(self.attempt, 30)))
        self.attempt += 1
        return cap * (0.5 + 0.5 * self.rng.random()) / 1000.0

    def reset(self) -> None:
        self.attempt = 0


class _Fetch:
    """One REST fetch on a daemon thread (a stuck peer never holds up the process's exit)."""

    def __init__(self, url: str, timeout: float):
        self.url = url
        self.started = time.monotonic()
        self.body: bytes | None = None
        self.error: Exception | None = None
        self.done = threading.Event()
        threading.Thread(target=self._run, args=(timeout,), daemon=True,
                         name="md-rest").start()

    def _run(self, timeout: float) -> None:
        try:
            self.body = http_get(self.url, timeout)
        except Exception as e:  # noqa: BLE001 - reported to the loop thread, which decides
            self.error = e
        finally:
            self.done.set()


class Gateway:
    """One venue connection feeding one md ring (through ``writer``)."""

    STAT_NAMES = ("connects", "connect_failures", "disconnects", "reconnects", "resubscribes",
                  "stale_timeouts", "frame_deadlines", "frames_too_big", "protocol_errors",
                  "snapshot_fetches", "snapshot_errors", "snapshot_backoffs", "pings", "pongs",
                  "control_frames", "fragments", "exceptions")

    def __init__(self, venue: str, instruments: list, writer: common.RecordWriter, ws_url: str,
                 rest_url: str = "", *, stale_after_ms: int = 30_000, reconnect_min_ms: int = 100,
                 reconnect_max_ms: int = 30_000, ping_interval_s: float = 15.0,
                 connect_timeout_s: float = 5.0, http_timeout_s: float = 5.0,
                 poll_s: float = 0.05, rng: random.Random | None = None, now_tsc=None,
                 heartbeat=None, max_frame_bytes: int = wsframe.DEFAULT_MAX_FRAME,
                 frame_deadline_ms: int = 5_000, ack_after_us: float = 20.0,
                 snapshot_backoff_s: tuple[float, float] = (SNAPSHOT_BACKOFF_MIN_S,
                                                            SNAPSHOT_BACKOFF_MAX_S),
                 warm: bool = True):
        self.venue = venue
        self.mod = venue_module(venue)
        self.instruments = instruments
        self.feed = self.mod.Feed(instruments, writer)
        self.ws_url = ws_url.rstrip("/")
        self.rest_url = rest_url.rstrip("/")
        self.stale_ns = int(stale_after_ms) * 1_000_000
        self.frame_deadline_s = frame_deadline_ms / 1000.0
        self.backoff = Backoff(reconnect_min_ms, reconnect_max_ms, rng)
        self.ping_interval_s = ping_interval_s
        self.connect_timeout_s = connect_timeout_s
        self.http_timeout_s = http_timeout_s
        self.poll_s = poll_s
        self.snapshot_backoff_s = snapshot_backoff_s
        self.warm = warm
        if now_tsc is None:
            from appliance.transport import clock
            cal = clock.calibration()
            now_tsc = lambda: clock.now_tsc(cal)   # noqa: E731 - bound clock
        self.now_tsc = now_tsc
        self.heartbeat = heartbeat
        self.counts = {k: 0 for k in self.STAT_NAMES}
        self.rx, self.wsw = wsframe.new_state(max_frame_bytes)
        self.wsw[wsframe.W_ACK_QUIET] = -1 if ack_after_us < 0 else int(ack_after_us * 1000)
        self.max_frame_bytes = max_frame_bytes
        self.ws: websocket.WebSocket | None = None
        self._retry: dict[str, tuple[str, float]] = {}      # symbol -> (path, not before)
        self._inflight: dict[str, tuple[str, int, _Fetch]] = {}   # symbol -> (path, gen, fetch)
        self._snap_hist: dict[str, tuple[float, int]] = {}  # symbol -> (last fetch, streak)
        self._conn_gen = 0
        self._frag: bytearray | None = None
        self._stop = threading.Event()
        self.connected = threading.Event()
        # the one-process layout (appliance.group) drives this loop: ``pump_fn`` replaces the
        # venue's pump (same arguments and codes) and ``idle_fn(md_live)`` replaces every wait
        # (select on the idle socket, back-off sleeps, the handshake wait); it returns within
        # about a millisecond. None: the gateway runs alone.
        self.pump_fn = None
        self.idle_fn = None
        # alone: a piece of the actor's housekeeping (its status publish, Actor.status_step)
        # done when the socket had nothing, before waiting for it
        self.idle_step = None

    # -- public --------------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def stats(self) -> dict:
        d = dict(self.feed.counters.as_dict())
        d.update(self.counts)
        d["books_valid"] = sum(1 for ins in self.instruments if self.feed.is_valid(ins.symbol))
        d["books"] = len(self.instruments)
        d["never_synced"] = len(self.feed.never_synced())
        return d

    def run(self, stop: threading.Event | None = None, seconds: float | None = None) -> dict:
        """Run until ``stop`` (or ``self.stop()``) or for ``seconds``; returns ``stats()``."""
        stop = stop or self._stop
        end = time.monotonic() + seconds if seconds else None

        def done() -> bool:
            return stop.is_set() or self._stop.is_set() or (end is not None and time.monotonic() >= end)

        if self.warm:
            t0 = time.monotonic()
            self.mod.warm()            # compile before subscribing: no frame waits for a compile
            log.info("%s: kernels warm in %.1f s", self.venue, time.monotonic() - t0)
        try:
            first = True
            while not done():
                try:
                    ok = self._connect(done)
                except (OSError, websocket.WebSocketException, ssl.SSLError) as e:
                    self.counts["connect_failures"] += 1
                    delay = self.backoff.next_s()
                    log.warning("%s: connect to %s failed (%s); retrying in %.3f s", self.venue,
                                self.ws_url, e, delay)
                    self._sleep(delay, done)
                    continue
                if not ok:
                    break                          # stopped while connecting
                if not first:
                    self.counts["reconnects"] += 1
                first = False
                why = "stopped"
                try:
                    why = self._session(done)
                except Exception as e:  # noqa: BLE001 - bad input never stops the gateway
                    self.counts["exceptions"] += 1
                    log.exception("%s: unexpected error on the connection", self.venue)
                    why = f"unexpected error: {type(e).__name__}: {e}"
                finally:
                    self._close()
                    self.connected.clear()
                if done():
                    break
                self.counts["disconnects"] += 1
                self.feed.on_disconnect()
                if why == "resubscribe":
                    self.counts["resubscribes"] += 1
                    log.info("%s: resubscribing (the feed asked for a fresh book)", self.venue)
                    self._sleep(self.backoff.min_ms / 1000.0, done)
                else:
                    delay = self.backoff.next_s()
                    log.warning("%s: connection lost (%s); reconnecting in %.3f s", self.venue, why, delay)
                    self._sleep(delay, done)
        finally:
            self.close()
        never = self.feed.never_synced()
        if never:
            log.error("%s: %d book(s) never synced: %s", self.venue, len(never),
                      ", ".join(f"{k} ({v})" for k, v in list(never.items())[:10]))
        return self.stats()

    # -- connection ----------------------------------------------------------------------------
    def _connect(self, done) -> bool:
        """TCP + WebSocket handshake on a helper thread, abandoned (its socket shut down) after
        connect_timeout_s or when ``done()``; then subscribe. False: stopped meanwhile."""
        self.counts["connects"] += 1
        url = self.ws_url + self.mod.stream_path(self.instruments)
        u = urlsplit(url)
        secure = u.scheme == "wss"
        host = u.hostname or "127.0.0.1"
        port = u.port or (443 if secure else 80)
        holder: dict = {}
        finished = threading.Event()
        timeout = self.connect_timeout_s

        def handshake():
            try:
                sock = socket.create_connection((host, port), timeout=timeout)
                holder["sock"] = sock
                if secure:
                    sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
                    holder["sock"] = sock
                ws = websocket.WebSocket(skip_utf8_validation=True, enable_multithread=False)
                ws.connect(url, socket=sock, timeout=timeout)
                holder["ws"] = ws
            except Exception as e:  # noqa: BLE001 - handed to the loop thread
                holder["error"] = e
            finally:
                finished.set()

        threading.Thread(target=handshake, daemon=True, name=f"md-{self.venue}-connect").start()
        deadline = time.monotonic() + timeout
        while not self._wait_event(finished):
            if done() or time.monotonic() > deadline:
                sock = holder.get("sock")
                if sock is not None:
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    sock.close()
                if done():
                    return False
                raise TimeoutError(f"handshake not complete within {timeout:.1f} s")
        if "error" in holder:
            e = holder["error"]
            if isinstance(e, (OSError, websocket.WebSocketException, ssl.SSLError)):
                raise e
            raise websocket.WebSocketException(f"{type(e).__name__}: {e}")
        ws = holder["ws"]
        ws.settimeout(timeout)          # bounds Python's writes; the pump's reads never block
        self.ws = ws
        # a fresh connection: books rebuilt from scratch (snapshot or resubscribe)
        self.feed.on_reconnect()
        wsframe.reset(self.wsw)
        self._frag = None
        self._retry.clear()
        self._snap_hist.clear()
        self._conn_gen += 1
        msgs = self.mod.subscribe_messages(self.instruments)
        for msg in msgs:
            ws.send(msg)
        self.connected.set()
        log.info("%s: connected to %s, %d subscribe messages sent", self.venue, url, len(msgs))
        return True

    def _close(self) -> None:
        """Best-effort close frame (never waits for the peer), then shut the socket."""
        ws, self.ws = self.ws, None
        if ws is None:
            return
        sock = ws.sock
        try:
            if sock is not None:
                sock.settimeout(0.05)
            ws.send_close()
        except (OSError, websocket.WebSocketException, ValueError):
            pass
        try:
            ws.shutdown()
        except (OSError, websocket.WebSocketException):
            pass

    def _sleep(self, seconds: float, done) -> None:
        end = time.monotonic() + seconds
        while not done():
            left = end - time.monotonic()
            if left <= 0:
                return
            if self.heartbeat is not None:
                self.heartbeat()
            if self.idle_fn is not None:
                self.idle_fn(False)
            else:
                time.sleep(min(left, 0.05))

    def _wait_event(self, ev: threading.Event) -> bool:
        """``ev.wait(poll_s)``, or one idle_fn round when the loop is shared."""
        if self.idle_fn is None:
            return ev.wait(self.poll_s)
        if not ev.is_set():
            self.idle_fn(False)
        return ev.is_set()

    def _idle(self, sock) -> None:
        """Nothing to read now: wait for the socket (poll_s at most), or lend the time to the
        loop's other work when it is shared."""
        if self.idle_fn is not None:
            self.idle_fn(True)
        else:
            if self.idle_step is not None:
                self.idle_step()
            self._wait_readable(sock, self.poll_s)

    def _wait_readable(self, sock, timeout: float) -> bool:
        if isinstance(sock, ssl.SSLSocket) and sock.pending() > 0:
            return True
        try:
            r, _, _ = select.select([sock], [], [], timeout)
        except (OSError, ValueError):
            return True                     # the next read reports what is wrong
        return bool(r)

    def _tls_fill(self, sock) -> int:
        """Decrypted bytes into the receive buffer (fd -1 mode): >0 read, 0 nothing now,
        -1 closed."""
        rx, w = self.rx, self.wsw
        pos, fill = int(w[wsframe.W_POS]), int(w[wsframe.W_FILL])
        if pos == fill:
            pos = fill = 0
            w[wsframe.W_POS] = w[wsframe.W_FILL] = 0
        room = len(rx) - fill
        if room <= 0:
            return 0
        try:
            n = sock.recv_into(memoryview(rx)[fill:], room)
        except (ssl.SSLWantReadError, BlockingIOError, socket.timeout):
            return 0
        if n == 0:
            return -1
        w[wsframe.W_FILL] = fill + n
        w[wsframe.W_BYTES] += n
        w[wsframe.W_TSC] = self.now_tsc()
        return n

    def _session(self, done) -> str:
        ws = self.ws
        feed = self.feed
        st, hdr, data = feed.st, feed.hdr, feed.data
        rx, w = self.rx, self.wsw
        sock = ws.sock
        tls = isinstance(sock, ssl.SSLSocket)
        if tls:
            sock.setblocking(False)
        fd = -1 if tls else sock.fileno()
        pump = self.pump_fn or Bound(feed.pump)   # the same objects every call of this session
        lat, cal = feed.lat, feed.cal
        now = time.monotonic()
        last_frame = now
        last_ping = now
        last_check = now
        got_data = False
        next_snap = 0.0
        seen_frames = 0
        partial_tsc = 0
        partial_since = 0.0
        while not done():
            if self._inflight:
                self._collect_snapshots()
            now = time.monotonic()
            if now >= next_snap:
                # the feeds' snapshot_requests() walk their instruments: not once per frame
                self._snapshots()
                next_snap = now + SNAPSHOT_CHECK_S
            r = pump(fd, rx, w, st, hdr, data, PUMP_FRAMES, lat, cal)
            if w[wsframe.W_FRAMES] != seen_frames:
                seen_frames = int(w[wsframe.W_FRAMES])
                last_frame = time.monotonic()
                if not got_data:
                    got_data = True
                    self.backoff.reset()
            if r == wsframe.P_IDLE or r == wsframe.P_NEED:
                if tls:
                    n = self._tls_fill(sock)
                    if n < 0:
                        return "closed by peer"
                    if n == 0:
                        self._idle(sock)
                else:
                    self._idle(sock)
            elif r & wsframe.P_ACTION:
                s, e = int(w[wsframe.W_S]), int(w[wsframe.W_E])
                try:
                    feed.after(r & (wsframe.P_ACTION - 1), rx[s:e], int(w[wsframe.W_TSC]))
                except Exception:  # noqa: BLE001 - a frame must never stop the gateway
                    self.counts["exceptions"] += 1
                    feed.counters.errors += 1
                    log.exception("%s: exception handling frame %r", self.venue, bytes(rx[s:min(e, s + 200)]))
                if feed.wants_resubscribe():
                    return "resubscribe"
            elif r == wsframe.P_CONTROL:
                last_frame = time.monotonic()
                why = self._control(ws)
                if why:
                    return why
            elif r == wsframe.P_FRAGMENT:
                last_frame = time.monotonic()
                why = self._fragment()
                if why:
                    return why
                if feed.wants_resubscribe():
                    return "resubscribe"
            elif r == wsframe.P_CLOSED:
                return "closed by peer"
            elif r == wsframe.P_ERROR:
                return f"recv failed (errno {int(w[wsframe.W_ERRNO])})"
            elif r == wsframe.P_PROTOCOL:
                self.counts["protocol_errors"] += 1
                feed.counters.errors += 1
                return "WebSocket protocol error from peer"
            elif r == wsframe.P_TOO_BIG:
                self.counts["frames_too_big"] += 1
                feed.counters.errors += 1
                log.error("%s: peer announced a %d-byte frame (cap %d); dropping the connection",
                          self.venue, int(w[wsframe.W_E]), self.max_frame_bytes)
                return "frame too big"
            now = time.monotonic()
            if now - last_check < HOUSEKEEPING_S:
                continue
            last_check = now
            tsc = self.now_tsc()
            feed.check_stale(tsc, self.stale_ns)
            if feed.wants_resubscribe():
                return "resubscribe"
            if self.heartbeat is not None:
                self.heartbeat()
            pt = int(w[wsframe.W_PARTIAL])
            if pt != partial_tsc:
                partial_tsc = pt
                partial_since = now
            if pt and now - partial_since > self.frame_deadline_s:
                self.counts["frame_deadlines"] += 1
                log.warning("%s: a frame has been arriving for %.1f s (%d bytes so far); "
                            "books stale, reconnecting", self.venue, now - partial_since,
                            int(w[wsframe.W_FILL] - w[wsframe.W_POS]))
                feed.on_stale_connection(tsc)
                return "frame read deadline"
            if now - last_frame > self.stale_ns / 1e9:
                self.counts["stale_timeouts"] += 1
                log.warning("%s: no frame for %.1f s; books stale, dropping the connection",
                            self.venue, now - last_frame)
                feed.on_stale_connection(tsc)
                return "stale feed"
            if now - last_ping >= self.ping_interval_s:
                last_ping = now
                ping = feed.ping_frame()
                if ping is not None:
                    try:
                        ws.send(ping)
                        self.counts["pings"] += 1
                    except (OSError, websocket.WebSocketException) as e:
                        return f"ping failed: {e}"
        return "stopped"

    def _control(self, ws) -> str | None:
        w = self.wsw
        op = int(w[wsframe.W_OP])
        payload = bytes(self.rx[int(w[wsframe.W_S]):int(w[wsframe.W_E])])
        self.counts["control_frames"] += 1
        if op == wsframe.OP_PING:
            try:
                ws.pong(payload)
                self.counts["pongs"] += 1
            except (OSError, websocket.WebSocketException) as e:
                return f"pong failed: {e}"
        elif op == wsframe.OP_CLOSE:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 0
            return f"close frame from peer ({code})"
        return None

    def _fragment(self) -> str | None:
        """Reassemble a fragmented message (rare: venues send whole frames), capped like a frame."""
        w = self.wsw
        op = int(w[wsframe.W_OP])
        part = bytes(self.rx[int(w[wsframe.W_S]):int(w[wsframe.W_E])])
        self.counts["fragments"] += 1
        if op != wsframe.OP_CONT:
            self._frag = bytearray(part)
        elif self._frag is None:
            self.counts["protocol_errors"] += 1
            return "continuation frame without a message"
        else:
            self._frag += part
        if len(self._frag) > self.max_frame_bytes:
            self.counts["frames_too_big"] += 1
            return "fragmented message too big"
        if w[wsframe.W_FIN] and op == wsframe.OP_CONT:
            msg, self._frag = bytes(self._frag), None
            try:
                self.feed.on_frame(msg, int(w[wsframe.W_TSC]))
            except Exception:  # noqa: BLE001 - a frame must never stop the gateway
                self.counts["exceptions"] += 1
                self.feed.counters.errors += 1
                log.exception("%s: exception handling frame %r", self.venue, msg[:200])
        return None

    # -- REST snapshots ------------------------------------------------------------------------
    # Fetches run on daemon threads so the socket keeps being read (and the feed keeps
    # buffering deltas) while a snapshot downloads; results are applied on the loop thread, the
    # only one that touches the feed. A result from before a reconnect is discarded. A symbol
    # refetched on one connection waits snapshot_backoff_s[0], doubling up to [1].
    def _snapshots(self) -> None:
        now = time.monotonic()
        lo, hi = self.snapshot_backoff_s
        for sym, path in self.feed.snapshot_requests():
            last, streak = self._snap_hist.get(sym, (0.0, -1))
            delay = 0.0 if streak < 0 else min(hi, lo * (1 << min(streak, 30)))
            if delay:
                self.counts["snapshot_backoffs"] += 1
                log.info("%s %s: snapshot refetch #%d on this connection in %.1f s", self.venue,
                         sym, streak + 2, max(0.0, last + delay - now))
            self._snap_hist[sym] = (max(now, last + delay), streak + 1)
            self._retry[sym] = (path, last + delay)
        for sym, (path, not_before) in list(self._retry.items()):
            if not_before > now or sym in self._inflight or len(self._inflight) >= SNAPSHOT_WORKERS:
                continue
            del self._retry[sym]
            self.counts["snapshot_fetches"] += 1
            self._inflight[sym] = (path, self._conn_gen, _Fetch(self.rest_url + path, self.http_timeout_s))

    def _collect_snapshots(self) -> None:
        now = time.monotonic()
        for sym, (path, gen, f) in list(self._inflight.items()):
            if not f.done.is_set():
                if now - f.started > 2 * self.http_timeout_s:     # a stuck fetch: give up on it
                    f.error = TimeoutError(f"no complete response in {now - f.started:.1f} s")
                else:
                    continue
            del self._inflight[sym]
            if gen != self._conn_gen:
                continue                       # fetched for a previous connection
            if f.error is not None:
                self.counts["snapshot_errors"] += 1
                log.warning("%s %s: snapshot %s failed (%s); retrying in %.1f s", self.venue, sym,
                            f.url, f.error, SNAPSHOT_RETRY_S)
                self._retry[sym] = (path, time.monotonic() + SNAPSHOT_RETRY_S)
                continue
            self.feed.on_snapshot(sym, f.body, self.now_tsc())

    def close(self) -> None:
        """Forget in-flight snapshot fetches (their daemon threads end on their own)."""
        self._inflight.clear()


# --- the process ----------------------------------------------------------------------------------

class MdGateway(Actor):
    """The md gateway actor (``appliance md --venue NAME``): one [[venues]] entry of the config,
    its instruments from the venue's REST metadata, one md ring. The gateway's own connection
    loop drives the actor loop (heartbeat and status through ``tick``)."""

    kind = control.ACTOR_MD

    def __init__(self, cfg, venue: str, ring_name: str | None = None,
                 symbols: list[str] | None = None, seconds: float | None = None,
                 stats_path: str | None = None, ws_url: str | None = None,
                 rest_url: str | None = None, stats_every_s: float = 10.0):
        super().__init__(cfg, f"md.{venue}", log)
        self.venue = venue
        self.vsec = cfg.venue(venue)
        if not self.vsec.enabled:
            raise GatewayError(f"venue {venue} is disabled in {cfg.path}")
        self.ws_url = ws_url or self.vsec.ws_url
        self.rest_url = rest_url or self.vsec.rest_url
        if not self.ws_url:
            raise GatewayError(f"venues[{venue}].ws_url is empty")
        self.mod = venue_module(venue)
        self.ring_name = ring_name or f"md.{venue}"
        self.symbols = list(symbols or self.vsec.symbols) or None
        self.seconds = seconds
        self.stats_path = stats_path
        self.stats_every_s = stats_every_s
        self.instruments = None
        self.writer = None
        self.gw = None
        self._next_log = 0.0
        self.final: dict = {}

    def open(self) -> None:
        try:
            meta = fetch_metadata(self.venue, self.rest_url)
            instruments = self.mod.load_instruments(meta, self.symbols)
        except (GatewayError, common.InstrumentError, OSError) as e:
            raise MetadataError(f"{self.venue}: cannot load instruments: {e}") from None
        self._check_grids(instruments)
        self.instruments = instruments
        self.writer = ring.RingWriter.create(self.ring_name, records.MD_RECORD_SIZE,
                                             self.cfg.rings.md_capacity, shm_dir=self.shm_dir)

    def _check_grids(self, instruments) -> None:
        """The venue's metadata must agree with the registry's grid of every configured
        instrument (md prices and order prices are integers of that grid)."""
        from decimal import Decimal
        for ins in instruments:
            try:
                reg = self.cfg.instrument(self.venue, ins.symbol)
            except Exception:  # noqa: BLE001 - symbols given on the command line: no registry entry
                continue
            for what, mine, theirs in (("tick", reg.tick, ins.tick), ("lot", reg.lot, ins.lot)):
                if Decimal(mine) != Decimal(theirs):
                    raise MetadataError(f"instruments.{reg.key}.{what} is {mine} but the venue's "
                                        f"metadata says {theirs}: fix the [[instruments]] entry")

    def warm(self) -> None:
        """The venue's kernels compiled (or loaded from the cache) before anything connects."""
        self.mod.warm()

    def start(self) -> None:
        v = self.vsec
        self.gw = Gateway(self.venue, self.instruments, common.RecordWriter.of(self.writer),
                          self.ws_url, self.rest_url, stale_after_ms=v.stale_after_ms,
                          reconnect_min_ms=v.reconnect_min_ms,
                          reconnect_max_ms=v.reconnect_max_ms, ack_after_us=v.ack_after_us,
                          heartbeat=self.tick, warm=False)
        self.gw.idle_step = self.status_step
        # per-hop telemetry: frame recv -> records published, written by the compiled pump
        self.gw.feed.set_latency_row(self.tm.hists[self.tm.hist(HOP_FRAME_TO_PUBLISH)])
        self.log.info("md %s: %d instruments (%s) -> ring %s (%s)", self.venue,
                      len(self.instruments), ", ".join(i.symbol for i in self.instruments[:8]),
                      self.ring_name, shm.resolve_dir(self.shm_dir))

    def loop(self) -> None:
        self.final = self.gw.run(_Flag(self), self.seconds)

    def periodic(self) -> None:
        now = time.monotonic()
        if self.gw is not None and now >= self._next_log:
            self._next_log = now + self.stats_every_s
            self.log.info("md %s: %s", self.venue, json.dumps(self.gw.stats()))

    def status(self) -> dict:
        return {"venue": self.venue, "counters": self.gw.stats() if self.gw else {}}

    GAUGES = ("books", "books_valid")

    def counters(self) -> dict:
        return {k: v for k, v in (self.gw.stats() if self.gw else {}).items()
                if k not in self.GAUGES}

    def gauges(self) -> dict:
        st = self.gw.stats() if self.gw else {}
        return {k: st[k] for k in self.GAUGES if k in st}

    def _status_steps(self, periodic: bool, wait: bool = False):
        yield from super()._status_steps(periodic, wait)
        if self.stats_path and self.gw is not None:      # --stats: the counters alone
            yield
            self._emit(self.stats_path, json.dumps(self.gw.stats()).encode(), wait)

    def close(self) -> None:
        if self.gw is not None:
            self.gw.close()
            self.log.info("md %s stopped: %s", self.venue, json.dumps(self.gw.stats()))
        if self.writer is not None:
            self.writer.close()


class MetadataError(ActorError):
    """The venue's instrument metadata could not be loaded."""


class _Flag:
    """``stop.is_set()`` for Gateway.run, true once the actor is stopping."""

    def __init__(self, actor: Actor):
        self.actor = actor

    def is_set(self) -> bool:
        return self.actor.stopping


def run_process(cfg, venue: str, **kw) -> int:
    """``appliance md``: the gateway process for one venue of the config; returns the exit
    status (EXIT_CONFIG, EXIT_METADATA and EXIT_RING name why it could not start)."""
    try:
        actor = MdGateway(cfg, venue, **kw)
    except GatewayError as e:
        log.error("md %s: %s", venue, e)
        return EXIT_CONFIG
    rc = actor.run()
    if rc == EXIT_CANNOT_START and actor.instruments is None:
        return EXIT_METADATA
    if rc == EXIT_CANNOT_START and actor.writer is None:
        return EXIT_RING
    return rc
