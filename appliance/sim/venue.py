"""Venue simulator: serves a recorded venue session over a real WebSocket server on loopback,
plus the REST responses the recording holds (metadata, book snapshots), with fault injection.

One ``VenueSim`` = one TCP port serving both protocols, like a venue's edge:

- a WebSocket upgrade request gets the recorded stream: the frames the venue sent before the
  client's first message (e.g. Kraken's systemStatus) right away; then, if the recording shows
  the client subscribing, the rest once the client has sent its first frame (Binance subscribes
  in the URL, so its stream starts at once). Every connection replays the session from the
  start, as a real venue re-sends snapshots after a resubscribe. When the recording is
  exhausted the connection stays open and quiet until the client leaves, or, with ``loop``,
  the simulator closes it (close code 1012, service restart) and the client's next connection
  is the next loop.
- looping: loop k (k = 0, 1, ...: the k-th connection) shifts every id and time the venue
  module lists in ``SIM_SHIFT_KEYS`` by k times its span in the recording, in the stream and in
  the REST book snapshots alike, and walks the recorded REST responses from the first again. So
  each loop is a fresh connection whose snapshot is consistent with its stream (a clean run has
  no gap and no resync however long it runs), and ids and times keep counting up across loops.
- any other HTTP GET is answered from the recorded REST responses: the path (an optional leading
  ``/<venue>`` segment is ignored, matching ``rest_url = "http://host:port/<venue>"``) selects
  the responses recorded for that path, the query parameters pick among them (``symbol=...``);
  repeated requests for one URL walk through its recorded responses and then repeat the last.
  Unknown paths get 404.

Pacing: ``fast`` sends frames back to back; ``realtime`` keeps the recorded gaps (scaled by
``speed``).

Faults, counted per connection over the streamed frames (1-based frame number k):
``drop_every`` N skips frame k when k % N == 0 (a gap), ``duplicate_every`` N sends it twice,
``garbage_every`` N sends a garbage frame before it (alternating text and binary garbage),
``disconnect_after`` N drops the TCP connection without a close handshake after N frames (on
the first ``disconnects`` connections; 0 = on every one), ``stall_after`` N pauses for
``stall_ms`` after N frames (once per connection).

The simulator is not the appliance's hot path: it uses the ``websockets`` threaded server.
"""
from __future__ import annotations

import itertools
import json
import logging
import re
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Response
from websockets.sync.server import serve

from appliance import data as pkgdata
from appliance.venues import recording, registry

log = logging.getLogger("appliance.sim.venue")
_server_log = logging.getLogger("appliance.sim.venue.server")
_server_log.setLevel(logging.WARNING)     # one line per REST request otherwise

MAX_KEPT = 10_000          # client messages kept for inspection (all are counted)
PACE_FAST = "fast"
PACE_REALTIME = "realtime"

GARBAGE_FRAMES = (
    '{"e":"depthUpdate","s":',                 # truncated JSON
    "\x00not json at all\x7f",
    b"\x8b\x00\xff\xfe\x01garbage",             # binary frame, not UTF-8
    '[1,{"b":[["abc","def"]]},"book-10"]',     # well-formed JSON, nonsense numbers
)



class SimError(ValueError):
    """The simulator cannot serve what was asked (no recording, bad option)."""


@dataclass(frozen=True)
class Faults:
    drop_every: int = 0
    duplicate_every: int = 0
    garbage_every: int = 0
    disconnect_after: int = 0
    disconnects: int = 1          # connections that get the disconnect (0 = every one)
    stall_after: int = 0
    stall_ms: int = 0

    def __post_init__(self):
        for k in ("drop_every", "duplicate_every", "garbage_every", "disconnect_after",
                  "disconnects", "stall_after", "stall_ms"):
            if getattr(self, k) < 0:
                raise SimError(f"fault {k} must be >= 0, got {getattr(self, k)}")
        if self.stall_after and not self.stall_ms:
            raise SimError("stall_after needs stall_ms > 0")


@dataclass
class SimStats:
    connections: int = 0
    frames_sent: int = 0
    dropped: int = 0
    duplicated: int = 0
    garbage: int = 0
    disconnects: int = 0
    stalls: int = 0
    completed: int = 0           # connections that got the whole recording
    loops: int = 0               # of which closed by the simulator to start the next loop
    rest_requests: int = 0
    rest_not_found: int = 0
    client_messages: list = field(default_factory=list)   # (connection no, text), first MAX_KEPT
    client_message_count: int = 0

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        del d["client_messages"]
        return d


def venue_prefix(venue: str) -> str:
    return venue.upper()


def find_data_dir() -> Path:
    d = pkgdata.venues_dir()
    if d.is_dir() and any(d.glob("*.0")):
        return d
    raise SimError(f"no recorded venue sessions in {d} (set ${pkgdata.VENUE_DATA_ENV} to a directory "
                   f"of recordings)")


def default_recordings(venue: str, data_dir: Path | None = None) -> list[Path]:
    """Every WebSocket recording of a venue: ``<VENUE>.ws.*.0`` files or ``<VENUE>.jsonl.zst``."""
    d = data_dir or find_data_dir()
    prefix = venue_prefix(venue)
    paths = sorted(d.glob(f"{prefix}.ws.*.0"))
    if not paths and (d / f"{prefix}.jsonl.zst").is_file():
        paths = [d / f"{prefix}.jsonl.zst"]
    if not paths:
        raise SimError(f"no recording for venue {venue!r} in {d} (want {prefix}.ws.N.0 or {prefix}.jsonl.zst)")
    return paths


class Shifter:
    """Shifts the integer values of named JSON keys (bare or quoted) by k times their span, so
    loop k of a recording continues loop k-1's ids and times. ``groups`` are tuples of keys that
    share one span (e.g. Binance's U, u and lastUpdateId)."""

    def __init__(self, groups, texts):
        self.pats = []
        for keys in groups:
            pat = re.compile(rb'"(' + b"|".join(re.escape(k.encode()) for k in keys)
                             + rb')":\s*("?)(-?\d+)\2')
            vals = [int(m.group(3)) for t in texts for m in pat.finditer(t)]
            if vals:
                self.pats.append((pat, max(vals) - min(vals) + 1))

    def apply(self, data: bytes, k: int) -> bytes:
        if k == 0 or not self.pats or not isinstance(data, bytes):
            return data
        for pat, span in self.pats:
            add = k * span
            data = pat.sub(lambda m: b'"%s":%s%d%s' % (m.group(1), m.group(2),
                                                       int(m.group(3)) + add, m.group(2)), data)
        return data


class Script:
    """What one connection replays: frames sent before the client speaks, the rest, and the REST
    responses (merged over every recording file of the venue, in time order)."""

    def __init__(self, paths: list[Path], venue: str | None = None):
        if not paths:
            raise SimError("no recording given")
        pre: list[tuple[float, bytes]] = []
        post: list[tuple[float, bytes]] = []
        rest: dict[str, list[tuple[dict, float, bytes]]] = {}
        self.client_speaks = False
        metas = set()
        for p in paths:
            try:
                sess = recording.open_session(p)
            except recording.RecordingError as e:
                raise SimError(str(e)) from None
            first_send = None
            evs = []
            for ev in sess.events():
                if ev.kind == recording.SEND and first_send is None:
                    first_send = ev.ts
                elif ev.kind == recording.RECV:
                    evs.append((ev.ts, ev.data))
                elif ev.kind == recording.HTTP:
                    self._add_rest(rest, ev.url, ev.ts, ev.data)
            if first_send is not None:
                self.client_speaks = True
            for ts, data in evs:
                (pre if first_send is not None and ts < first_send else post).append((ts, data))
            if sess.metadata not in metas:
                metas.add(sess.metadata)
                for line in sess.metadata.splitlines():
                    head, sep, body = line.partition(b": ")
                    if sep and b" -> " in head:
                        url, _, ts = head.decode().partition(" -> ")
                        self._add_rest(rest, url, float(ts), body)
            for url, ts, body in sess.snapshots:
                self._add_rest(rest, url, ts, body)
        pre.sort(key=lambda e: e[0])
        post.sort(key=lambda e: e[0])
        self.pre = pre
        self.post = post
        self.rest = rest
        self._rest_pos: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self.loop = 0                 # the loop REST answers belong to (the newest connection's)
        self.shifter = None
        self._is_book = lambda path: False
        if venue is not None:
            mod = registry.module(venue)
            self._is_book = lambda path: mod.snapshot_symbol(path) is not None
            books = [body for p, lst in rest.items() for _, _, body in lst if self._is_book(p)]
            self.shifter = Shifter(getattr(mod, "SIM_SHIFT_KEYS", ()),
                                   [d for _, d in pre + post] + books)

    def frame(self, data: bytes, k: int) -> bytes:
        """A recorded frame as loop k sends it."""
        return self.shifter.apply(data, k) if self.shifter is not None else data

    def new_loop(self, k: int) -> None:
        """Loop k starts (a new connection): REST answers restart from the first recorded one."""
        with self._lock:
            self.loop = k
            self._rest_pos.clear()

    @staticmethod
    def _add_rest(rest: dict, url: str, ts: float, body: bytes) -> None:
        u = urllib.parse.urlsplit(url)
        q = dict(urllib.parse.parse_qsl(u.query))
        lst = rest.setdefault(u.path.rstrip("/") or "/", [])
        if not any(e[1] == ts and e[2] == body for e in lst):
            lst.append((q, ts, body))
            lst.sort(key=lambda e: e[1])

    def lookup(self, path: str) -> bytes | None:
        """The recorded body for a REST path+query (see the module docstring), or None."""
        u = urllib.parse.urlsplit(path)
        want = dict(urllib.parse.parse_qsl(u.query))
        p = u.path.rstrip("/") or "/"
        cands = self.rest.get(p)
        if cands is None:
            # drop a leading /<venue> (or any prefix) segment by segment
            parts = p.split("/")
            for k in range(2, len(parts)):
                cands = self.rest.get("/" + "/".join(parts[k:]))
                if cands is not None:
                    p = "/" + "/".join(parts[k:])
                    break
        if not cands:
            return None
        best, score = None, -1
        for q, _, _ in cands:
            common = set(q) & set(want)
            if any(q[k].upper() != want[k].upper() for k in common):
                continue
            key = tuple(sorted(q.items()))
            if len(common) > score:
                best, score = key, len(common)
        if best is None:
            return None
        same = [e for e in cands if tuple(sorted(e[0].items())) == best]
        with self._lock:
            k = (p, repr(best))
            i = self._rest_pos.get(k, 0)
            self._rest_pos[k] = i + 1
            loop = self.loop
        body = same[min(i, len(same) - 1)][2]
        if loop and self.shifter is not None and self._is_book(path):
            body = self.shifter.apply(body, loop)
        return body


class VenueSim:
    """A venue on loopback: ``start()`` binds and serves in background threads; ``stop()``."""

    def __init__(self, venue: str, recordings: list[str | Path] | None = None, *,
                 host: str = "127.0.0.1", port: int = 0, pace: str = PACE_FAST,
                 speed: float = 1.0, faults: Faults | None = None, subscribe_timeout_s: float = 10.0,
                 loop: bool = False, on_loop_end=None):
        if pace not in (PACE_FAST, PACE_REALTIME):
            raise SimError(f"pace must be {PACE_FAST!r} or {PACE_REALTIME!r}, got {pace!r}")
        if speed <= 0:
            raise SimError(f"speed must be > 0, got {speed}")
        self.venue = venue
        self.mod = registry.module(venue) if venue in registry.VENUES else None
        paths = [Path(p) for p in recordings] if recordings else default_recordings(venue)
        self.script = Script(paths, venue if venue in registry.VENUES else None)
        self.loop = loop
        self.on_loop_end = on_loop_end      # callable(loop k): called before loop k's close
        self.host = host
        self.port = port
        self.pace = pace
        self.speed = speed
        self.faults = faults or Faults()
        self.subscribe_timeout_s = subscribe_timeout_s
        self.stats = SimStats()
        self._stop = threading.Event()
        self._server = None
        self._thread: threading.Thread | None = None
        self._conn_no = itertools.count(1)
        self._lock = threading.Lock()
        self._live: set = set()

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> "VenueSim":
        self._server = serve(self._handle, self.host, self.port, process_request=self._http,
                             compression=None, max_size=None, ping_interval=None,
                             logger=_server_log)
        self.port = self._server.socket.getsockname()[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"sim-{self.venue}",
                                        daemon=True)
        self._thread.start()
        log.info("venue-sim %s on %s (pace %s, %d pre + %d frames, %d REST paths, faults %s%s)",
                 self.venue, self.ws_url, self.pace, len(self.script.pre), len(self.script.post),
                 len(self.script.rest), self.faults, ", looping" if self.loop else "")
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            live = list(self._live)
        for c in live:
            try:
                c.close()
            except Exception:  # noqa: BLE001 - closing a dying connection may fail any way
                pass
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "VenueSim":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/{self.venue}"

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.port}/{self.venue}"

    def wait_connections(self, n: int, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.stats.connections >= n:
                return True
            time.sleep(0.01)
        return False

    # -- REST ----------------------------------------------------------------------------------
    def _http(self, connection, request):
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return None
        self.stats.rest_requests += 1
        body = self.script.lookup(request.path)
        if body is None:
            self.stats.rest_not_found += 1
            msg = f"no recorded response for {request.path}\n".encode()
            return Response(404, "Not Found", Headers([("Content-Type", "text/plain"),
                                                       ("Content-Length", str(len(msg))),
                                                       ("Connection", "close")]), msg)
        return Response(200, "OK", Headers([("Content-Type", "application/json"),
                                            ("Content-Length", str(len(body))),
                                            ("Connection", "close")]), body)

    # -- WebSocket -----------------------------------------------------------------------------
    def _handle(self, conn) -> None:
        no = next(self._conn_no)
        with self._lock:
            self.stats.connections += 1
            self._live.add(conn)
        spoke = threading.Event()
        closed = threading.Event()
        subscribed: set[str] = set()
        last_msg = [0.0]

        def reader():
            try:
                for msg in conn:
                    st = self.stats
                    st.client_message_count += 1
                    text = msg if isinstance(msg, str) else msg.decode("latin-1")
                    if len(st.client_messages) < MAX_KEPT:
                        st.client_messages.append((no, text))
                    subscribed.update(_subscribed(self.mod, text))
                    last_msg[0] = time.monotonic()
                    spoke.set()
            except ConnectionClosed:
                pass
            except OSError:
                pass
            finally:
                closed.set()

        threading.Thread(target=reader, name=f"sim-read-{no}", daemon=True).start()
        try:
            self._stream(conn, no, spoke, closed, subscribed, last_msg)
        except (ConnectionClosed, OSError):
            pass
        finally:
            with self._lock:
                self._live.discard(conn)

    def _send(self, conn, data) -> None:
        if isinstance(data, bytes):
            try:
                text = data.decode()
            except UnicodeDecodeError:
                conn.send(data)           # not UTF-8: goes out as a binary frame
            else:
                conn.send(text)
        else:
            conn.send(data)
        self.stats.frames_sent += 1

    def _stream(self, conn, no: int, spoke: threading.Event, closed: threading.Event,
                subscribed: set, last_msg: list) -> None:
        f = self.faults
        k = no - 1 if self.loop else 0
        if self.loop:
            self.script.new_loop(k)
        for _, data in self.script.pre:
            self._send(conn, self.script.frame(data, k))
        if self.script.client_speaks:
            end = time.monotonic() + self.subscribe_timeout_s
            while not spoke.wait(0.05):
                if self._stop.is_set() or closed.is_set():
                    return
                if time.monotonic() > end:
                    log.warning("venue-sim %s: connection %d sent no subscription in %.1f s; closing",
                                self.venue, no, self.subscribe_timeout_s)
                    conn.close(1008, "no subscription")
                    return
            # a client subscribes with several messages: stream once they stopped coming (at most
            # SUBSCRIBE_SETTLE_MAX_S), so no symbol's first frames are held back as unsubscribed
            end = time.monotonic() + SUBSCRIBE_SETTLE_MAX_S
            while (time.monotonic() - last_msg[0] < SUBSCRIBE_SETTLE_S
                   and time.monotonic() < end and not closed.is_set()):
                time.sleep(0.01)
        streams = _combined_streams(conn.request.path if conn.request is not None else "")
        cut = f.disconnect_after > 0 and (f.disconnects == 0 or no <= f.disconnects)
        stalled = False
        t0 = time.monotonic()
        ts0 = self.script.post[0][0] if self.script.post else 0.0
        garbage = 0
        for i, (ts, data) in enumerate(self.script.post, 1):
            if self._stop.is_set() or closed.is_set():
                return
            if self.pace == PACE_REALTIME:
                delay = t0 + (ts - ts0) / self.speed - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return
            if f.garbage_every and i % f.garbage_every == 0:
                self._send(conn, GARBAGE_FRAMES[garbage % len(GARBAGE_FRAMES)])
                garbage += 1
                self.stats.garbage += 1
            if streams is not None and not _wanted(data, streams):
                continue
            if subscribed and not _for_subscribed(self.mod, data, subscribed):
                continue
            if f.drop_every and i % f.drop_every == 0:
                self.stats.dropped += 1
            else:
                data = self.script.frame(data, k)
                self._send(conn, data)
                if f.duplicate_every and i % f.duplicate_every == 0:
                    self._send(conn, data)
                    self.stats.duplicated += 1
            if cut and i >= f.disconnect_after:
                self.stats.disconnects += 1
                log.info("venue-sim %s: dropping connection %d after %d frames", self.venue, no, i)
                self._abort(conn)
                return
            if f.stall_after and not stalled and i >= f.stall_after:
                stalled = True
                self.stats.stalls += 1
                log.info("venue-sim %s: stalling connection %d for %d ms", self.venue, no, f.stall_ms)
                if self._stop.wait(f.stall_ms / 1000):
                    return
        self.stats.completed += 1
        if self.loop:
            if self.on_loop_end is not None:
                self.on_loop_end(k)
            self.stats.loops += 1
            log.info("venue-sim %s: loop %d done; closing connection %d for the next loop",
                     self.venue, k, no)
            conn.close(1012, "next loop")
            return
        while not (self._stop.is_set() or closed.is_set()):
            closed.wait(0.1)

    @staticmethod
    def _abort(conn) -> None:
        """Drop the TCP connection without a WebSocket close handshake (a network failure)."""
        try:
            conn.socket.shutdown(socket.SHUT_RDWR)   # FIN after the frames already sent
        except OSError:
            pass
        try:
            conn.close()
        except Exception:  # noqa: BLE001 - the socket is already gone
            pass


def _combined_streams(path: str) -> frozenset | None:
    """Stream names of a Binance-style combined-stream URL (``/stream?streams=a/b``), else None."""
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
    if "streams" not in q:
        return None
    return frozenset(s for v in q["streams"] for s in v.split("/") if s)


_STREAM_KEY = b'{"stream":"'


def _wanted(frame: bytes, streams: frozenset) -> bool:
    """A combined-stream frame is sent only if its stream was requested (others always are)."""
    if not frame.startswith(_STREAM_KEY):
        return True
    end = frame.find(b'"', len(_STREAM_KEY))
    return frame[len(_STREAM_KEY):end].decode(errors="replace") in streams


# A venue sends only what a client subscribed to. The recordings hold every symbol their session
# subscribed to, so frames about other symbols are held back: each venue module says how a
# subscribe message names its symbols (or channels) and how a frame names its own
# (``sim_subscribed``, ``sim_frame_symbol``).
SUBSCRIBE_SETTLE_S = 0.05
SUBSCRIBE_SETTLE_MAX_S = 1.0


def _subscribed(mod, text: str) -> set[str]:
    """Symbols (Bitstamp: channels) a client message subscribes to (the venue module's
    ``sim_subscribed``; none for a venue outside the registry)."""
    if mod is None:
        return set()
    try:
        msg = json.loads(text)
    except ValueError:
        return set()
    return mod.sim_subscribed(msg) if isinstance(msg, dict) else set()


def _for_subscribed(mod, frame: bytes, subscribed: set) -> bool:
    sym = mod.sim_frame_symbol(frame) if mod is not None else None
    return sym is None or sym in subscribed


def serve_forever(sim: VenueSim, stop: threading.Event) -> dict:
    """Run a started simulator until ``stop`` is set; returns its stats."""
    try:
        while not stop.wait(0.2):
            pass
    finally:
        sim.stop()
    return sim.stats.as_dict()
