"""The live market-data gateway: one venue's WebSocket feed -> compiled parse -> md ring.

``appliance md --venue NAME`` runs one ``Gateway`` in its own process::

    connect (websocket-client) -> send the venue's subscribe messages -> loop:
        wait for a frame (select on the socket, 50 ms) -> rdtsc -> Feed.on_frame(bytes, tsc)
            (the venue module's compiled parser + book sync publish records into the ring)
        REST snapshots the feed asks for (urllib against the venue's rest_url)
        resubscribe request (gap, checksum failure) -> reconnect at once
        no frame for stale_after_ms -> books invalid (Feed.check_stale), connection dropped
    on any disconnect: every book -> BOOK_INVALID(BR_DISCONNECT); reconnect with exponential
    back-off and full jitter (reconnect_min_ms .. reconnect_max_ms), then resubscribe; the
    back-off resets once a connection delivers data.

Python runs once per frame (one ``recv`` + one compiled call), never once per level or record.
Bad input never stops the gateway: the feed counts, logs and resyncs; an unexpected exception
from a frame is logged (frame truncated) and counted in ``errors``.

Counters (``Gateway.stats()``): the feed's (frames, records, gaps, resyncs, checksums_ok,
checksums_failed, errors, ...) plus the connection's own (connects, connect_failures,
disconnects, reconnects, resubscribes, stale_timeouts, snapshot_fetches, snapshot_errors,
pings, control_frames, exceptions).
"""
from __future__ import annotations

import json
import logging
import random
import select
import ssl
import threading
import time
import urllib.error
import urllib.request

import websocket

from appliance.actor import EXIT_CANNOT_START, Actor, ActorError, write_json_atomic
from appliance.transport import control, records, ring, shm
from appliance.venues import common, registry

log = logging.getLogger("appliance.venues.gateway")

SNAPSHOT_CHECK_S = 0.005     # how often the connection loop asks the feed for snapshots to fetch
SNAPSHOT_WORKERS = 4         # concurrent REST snapshot fetches
SNAPSHOT_RETRY_S = 1.0

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


def http_get(url: str, timeout: float) -> bytes:
    req = urllib.request.Request(url, headers={"User-Agent": "appliance-md/1",
                                               "Accept": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.read()


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
        except (urllib.error.URLError, OSError) as e:
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


class _Closed(Exception):
    """The connection ended; the argument says why."""


class Gateway:
    """One venue connection feeding one md ring (through ``writer``)."""

    STAT_NAMES = ("connects", "connect_failures", "disconnects", "reconnects", "resubscribes",
                  "stale_timeouts", "snapshot_fetches", "snapshot_errors", "pings",
                  "control_frames", "exceptions")

    def __init__(self, venue: str, instruments: list, writer: common.RecordWriter, ws_url: str,
                 rest_url: str = "", *, stale_after_ms: int = 30_000, reconnect_min_ms: int = 100,
                 reconnect_max_ms: int = 30_000, ping_interval_s: float = 15.0,
                 connect_timeout_s: float = 5.0, http_timeout_s: float = 5.0,
                 poll_s: float = 0.05, rng: random.Random | None = None, now_tsc=None,
                 heartbeat=None):
        self.venue = venue
        self.mod = venue_module(venue)
        self.instruments = instruments
        self.feed = self.mod.Feed(instruments, writer)
        self.ws_url = ws_url.rstrip("/")
        self.rest_url = rest_url.rstrip("/")
        self.stale_ns = int(stale_after_ms) * 1_000_000
        self.backoff = Backoff(reconnect_min_ms, reconnect_max_ms, rng)
        self.ping_interval_s = ping_interval_s
        self.connect_timeout_s = connect_timeout_s
        self.http_timeout_s = http_timeout_s
        self.poll_s = poll_s
        if now_tsc is None:
            from appliance.transport import clock
            cal = clock.calibration()
            now_tsc = lambda: clock.now_tsc(cal)   # noqa: E731 - bound clock
        self.now_tsc = now_tsc
        self.heartbeat = heartbeat
        self.counts = {k: 0 for k in self.STAT_NAMES}
        self.ws: websocket.WebSocket | None = None
        self._retry: dict[str, tuple[str, float]] = {}      # symbol -> (path, not before)
        self._inflight: dict = {}                           # symbol -> (path, conn gen, future)
        self._conn_gen = 0
        self._executor = None
        self._stop = threading.Event()
        self.connected = threading.Event()

    # -- public --------------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def stats(self) -> dict:
        d = dict(self.feed.counters.as_dict())
        d.update(self.counts)
        d["books_valid"] = sum(1 for ins in self.instruments if self.feed.is_valid(ins.symbol))
        d["books"] = len(self.instruments)
        return d

    def run(self, stop: threading.Event | None = None, seconds: float | None = None) -> dict:
        """Run until ``stop`` (or ``self.stop()``) or for ``seconds``; returns ``stats()``."""
        stop = stop or self._stop
        end = time.monotonic() + seconds if seconds else None

        def done() -> bool:
            return stop.is_set() or self._stop.is_set() or (end is not None and time.monotonic() >= end)

        try:
            first = True
            while not done():
                try:
                    self._connect()
                except (OSError, websocket.WebSocketException) as e:
                    self.counts["connect_failures"] += 1
                    delay = self.backoff.next_s()
                    log.warning("%s: connect to %s failed (%s); retrying in %.3f s", self.venue,
                                self.ws_url, e, delay)
                    self._sleep(delay, done)
                    continue
                if not first:
                    self.counts["reconnects"] += 1
                first = False
                why = "stopped"
                try:
                    why = self._session(done)
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
        return self.stats()

    # -- connection ----------------------------------------------------------------------------
    def _connect(self) -> None:
        self.counts["connects"] += 1
        url = self.ws_url + self.mod.stream_path(self.instruments)
        ws = websocket.create_connection(url, timeout=self.connect_timeout_s,
                                         skip_utf8_validation=True, enable_multithread=False)
        ws.settimeout(self.connect_timeout_s)
        self.ws = ws
        # a fresh connection: books rebuilt from scratch (snapshot or resubscribe)
        self.feed.on_reconnect()
        self._retry.clear()
        self._conn_gen += 1
        for msg in self.mod.subscribe_messages(self.instruments):
            ws.send(msg)
        self.connected.set()
        log.info("%s: connected to %s, %d subscribe messages sent", self.venue, url,
                 len(self.mod.subscribe_messages(self.instruments)))

    def _close(self) -> None:
        ws, self.ws = self.ws, None
        if ws is not None:
            try:
                ws.close(timeout=0.2)
            except (OSError, websocket.WebSocketException):
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
            time.sleep(min(left, 0.05))

    def _readable(self, sock, timeout: float) -> bool:
        if isinstance(sock, ssl.SSLSocket) and sock.pending() > 0:
            return True
        r, _, _ = select.select([sock], [], [], timeout)
        return bool(r)

    def _session(self, done) -> str:
        ws = self.ws
        feed = self.feed
        last_frame = time.monotonic()
        last_ping = last_frame
        last_check = last_frame
        got_data = False
        next_snap = 0.0
        while not done():
            if self._inflight:
                self._collect_snapshots()
            if time.monotonic() >= next_snap:
                # the feeds' snapshot_requests() walk their instruments: not once per frame
                self._snapshots()
                next_snap = time.monotonic() + SNAPSHOT_CHECK_S
            if self._readable(ws.sock, self.poll_s):
                try:
                    frame = ws.recv_data_frame(True)
                except websocket.WebSocketTimeoutException:
                    return "timeout inside a frame"
                except (websocket.WebSocketConnectionClosedException, ConnectionError) as e:
                    return f"closed by peer ({type(e).__name__})"
                except (OSError, websocket.WebSocketException) as e:
                    return f"{type(e).__name__}: {e}"
                tsc = self.now_tsc()
                op, data = frame[0], frame[1].data
                if op in (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY):
                    try:
                        feed.on_frame(data, tsc)
                    except Exception:  # noqa: BLE001 - a frame must never stop the gateway
                        self.counts["exceptions"] += 1
                        feed.counters.errors += 1
                        log.exception("%s: exception handling frame %r", self.venue, bytes(data[:200]))
                    last_frame = time.monotonic()
                    if not got_data:
                        got_data = True
                        self.backoff.reset()
                elif op == websocket.ABNF.OPCODE_CLOSE:
                    return "close frame from peer"
                else:
                    self.counts["control_frames"] += 1     # ping (answered by the library) / pong
                if feed.wants_resubscribe():
                    return "resubscribe"
            now = time.monotonic()
            if now - last_check >= 0.1:
                last_check = now
                feed.check_stale(self.now_tsc(), self.stale_ns)
                if feed.wants_resubscribe():
                    return "resubscribe"
                if self.heartbeat is not None:
                    self.heartbeat()
                if now - last_frame > self.stale_ns / 1e9:
                    self.counts["stale_timeouts"] += 1
                    log.warning("%s: no frame for %.1f s; dropping the connection", self.venue,
                                now - last_frame)
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

    # -- REST snapshots ------------------------------------------------------------------------
    # Fetches run on a small thread pool so the socket keeps being read (and the feed keeps
    # buffering deltas) while a snapshot downloads; results are applied on the loop thread, the
    # only one that touches the feed. A result from before a reconnect is discarded.
    def _snapshots(self) -> None:
        now = time.monotonic()
        for sym, path in self.feed.snapshot_requests():
            self._retry[sym] = (path, 0.0)
        for sym, (path, not_before) in list(self._retry.items()):
            if not_before > now or sym in self._inflight:
                continue
            del self._retry[sym]
            url = self.rest_url + path
            self.counts["snapshot_fetches"] += 1
            self._inflight[sym] = (path, self._conn_gen, self._pool().submit(http_get, url, self.http_timeout_s))

    def _collect_snapshots(self) -> None:
        for sym, (path, gen, fut) in list(self._inflight.items()):
            if not fut.done():
                continue
            del self._inflight[sym]
            if gen != self._conn_gen:
                continue                       # fetched for a previous connection
            try:
                body = fut.result()
            except (urllib.error.URLError, OSError, ValueError) as e:
                self.counts["snapshot_errors"] += 1
                log.warning("%s %s: snapshot %s failed (%s); retrying in %.1f s", self.venue, sym,
                            self.rest_url + path, e, SNAPSHOT_RETRY_S)
                self._retry[sym] = (path, time.monotonic() + SNAPSHOT_RETRY_S)
                continue
            self.feed.on_snapshot(sym, body, self.now_tsc())

    def _pool(self):
        if self._executor is None:
            from concurrent.futures import ThreadPoolExecutor
            self._executor = ThreadPoolExecutor(max_workers=SNAPSHOT_WORKERS,
                                                thread_name_prefix=f"md-{self.venue}-rest")
        return self._executor

    def close(self) -> None:
        """Release the snapshot thread pool (run() does this on return)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


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

    def start(self) -> None:
        v = self.vsec
        self.gw = Gateway(self.venue, self.instruments, common.RecordWriter.of(self.writer),
                          self.ws_url, self.rest_url, stale_after_ms=v.stale_after_ms,
                          reconnect_min_ms=v.reconnect_min_ms,
                          reconnect_max_ms=v.reconnect_max_ms, heartbeat=self.tick)
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

    def counters(self) -> dict:
        return self.gw.stats() if self.gw else {}

    def publish_status(self) -> None:
        super().publish_status()
        if self.stats_path and self.gw is not None:
            try:
                write_json_atomic(self.stats_path, self.gw.stats())
            except OSError as e:
                self.log.warning("md %s: stats file %s not written: %s", self.venue,
                                 self.stats_path, e)

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
