"""The md gateway against hostile WebSocket peers over real loopback sockets: a frame trickled
one byte at a time, a frame claiming 2 GiB, a handshake that never completes, SIGTERM while the
socket misbehaves; and quiet symbols that must not be refetched."""
from __future__ import annotations

import base64
import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import psutil
import pytest

from appliance.transport import records, ring
from appliance.venues import common, gateway, kraken, recording, wsframe
from appliance.sim.venue import VenueSim
from tests.configs import instruments_toml
from tests.venues.conftest import DATA, meta_of
from tests.venues.test_gateway import read_ring, statuses

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class RawPeer:
    """A loopback WebSocket server written by hand: it answers the handshake (unless
    ``handshake`` is False) and then runs ``script(conn)`` on every connection."""

    def __init__(self, script, handshake: bool = True):
        self.script = script
        self.handshake = handshake
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(8)
        self.port = self.srv.getsockname()[1]
        self.connections = 0
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/kraken"

    def _accept(self):
        self.srv.settimeout(0.1)
        while not self.stop.is_set():
            try:
                conn, _ = self.srv.accept()
            except (socket.timeout, OSError):
                continue
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            req = b""
            while b"\r\n\r\n" not in req:
                c = conn.recv(4096)
                if not c:
                    return
                req += c
            if not self.handshake:
                while not self.stop.wait(0.1):     # say nothing, ever
                    pass
                return
            key = next(line.split(b":", 1)[1].strip() for line in req.split(b"\r\n")
                       if line.lower().startswith(b"sec-websocket-key:"))
            acc = base64.b64encode(hashlib.sha1(key + _GUID).digest())
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + acc + b"\r\n\r\n")
            self.script(conn, self.stop)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self.stop.set()
        self.srv.close()


def _kraken_snapshot(pair: str) -> bytes:
    return next(f for _, f in recording.frames(DATA / "KRAKEN.ws.50.0")
                if b'"as"' in f and f'"{pair}"'.encode() in f)


def _trickle(conn, stop):
    """A valid book snapshot, then a frame announced as 100 bytes sent one byte every 0.2 s."""
    conn.sendall(wsframe.frame_bytes(_kraken_snapshot("XMR/USD")))
    conn.sendall(b"\x81\x64")
    while not stop.wait(0.2):
        conn.sendall(b" ")


def _huge(conn, stop):
    """A frame header claiming 2 GiB of payload, then a few bytes of it."""
    conn.sendall(wsframe.frame_bytes(_kraken_snapshot("XMR/USD")))
    conn.sendall(b"\x81\x7f" + (2 << 30).to_bytes(8, "big") + b"x" * 1000)
    stop.wait(30)


def _gateway(url, **kw):
    ins = kraken.load_instruments(meta_of("kraken"), ["XMR/USD"])
    writer = common.RecordWriter.local(1 << 12)
    beats = []
    gw = gateway.Gateway("kraken", ins, writer, url, "", reconnect_min_ms=20, reconnect_max_ms=100,
                         heartbeat=lambda: beats.append(time.monotonic()), **kw)
    return gw, writer, beats


def _run(gw, until, timeout=30.0):
    stop = threading.Event()
    out = {}
    t = threading.Thread(target=lambda: out.update(gw.run(stop)), daemon=True)
    t.start()
    end = time.monotonic() + timeout
    while time.monotonic() < end and not until():
        time.sleep(0.02)
    stop.set()
    t.join(10)
    assert not t.is_alive()
    return out


def test_a_trickled_frame_hits_the_read_deadline_books_go_stale_and_the_gateway_reconnects():
    peer = RawPeer(_trickle)
    try:
        gw, writer, beats = _gateway(peer.url, frame_deadline_ms=600)
        cur = ring.local_cursor(writer.hdr)
        st = _run(gw, lambda: gw.counts["frame_deadlines"] >= 2 and peer.connections >= 3)
    finally:
        peer.close()
    assert st["frame_deadlines"] >= 2 and st["reconnects"] >= 2 and st["stale"] >= 2
    sts = statuses(read_ring(writer.hdr, writer.data, cur))
    assert (0, records.BOOK_VALID, records.BR_NONE) in sts
    assert (0, records.BOOK_INVALID, records.BR_STALE) in sts
    # the loop kept its heartbeat going while the frame trickled in
    assert len(beats) > 10 and max(np.diff(beats)) < 5.0


def test_a_frame_claiming_2_gib_drops_the_connection_without_allocating_it():
    rss0 = psutil.Process().memory_info().rss
    peer = RawPeer(_huge)
    try:
        gw, writer, _ = _gateway(peer.url)
        st = _run(gw, lambda: gw.counts["frames_too_big"] >= 2)
    finally:
        peer.close()
    assert st["frames_too_big"] >= 2 and st["reconnects"] >= 1
    assert psutil.Process().memory_info().rss - rss0 < 200 << 20


def test_a_peer_that_never_answers_the_handshake_is_abandoned_and_retried():
    peer = RawPeer(None, handshake=False)
    try:
        gw, _, _ = _gateway(peer.url, connect_timeout_s=0.5)
        st = _run(gw, lambda: gw.counts["connect_failures"] >= 2)
    finally:
        peer.close()
    assert st["connect_failures"] >= 2 and st["connects"] == st["connect_failures"]


def test_oversized_fragmented_and_masked_frames_are_protocol_errors_not_crashes():
    def script(conn, stop):
        conn.sendall(wsframe.frame_bytes(b'{"event":"heartbeat"}', fin=False))
        conn.sendall(wsframe.frame_bytes(b"", op=wsframe.OP_CONT, fin=True))
        conn.sendall(wsframe.frame_bytes(b"x", mask=b"abcd"))       # servers never mask
        stop.wait(30)
    peer = RawPeer(script)
    try:
        gw, _, _ = _gateway(peer.url)
        st = _run(gw, lambda: gw.counts["protocol_errors"] >= 2)
    finally:
        peer.close()
    assert st["protocol_errors"] >= 2 and st["fragments"] >= 4 and st["heartbeats"] >= 2
    assert st["exceptions"] == 0


@pytest.mark.parametrize("handshake", [True, False])
def test_sigterm_stops_the_md_process_whatever_the_peer_does(shm_dir, tmp_path, handshake):
    peer = RawPeer(_trickle, handshake=handshake)
    rest = VenueSim("kraken").start()          # the metadata comes from a well-behaved REST side
    cfg = tmp_path / "appliance.toml"
    cfg.write_text(f"""
[appliance]
shm_dir = "{shm_dir}"
[[venues]]
name = "kraken"
ws_url = "{peer.url}"
rest_url = "{rest.rest_url}"
""" + instruments_toml("kraken", ["XMR/USD"]))
    env = dict(os.environ, APPLIANCE_SHM_DIR=str(shm_dir))
    p = subprocess.Popen([sys.executable, "-m", "appliance.cli", "md", "--config", str(cfg),
                          "--venue", "kraken", "--ring", "md.hostile"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        end = time.monotonic() + 120
        while peer.connections < 1:
            assert p.poll() is None, p.communicate()[1][-3000:]
            assert time.monotonic() < end
            time.sleep(0.05)
        time.sleep(1.0)                     # inside the trickled frame / the silent handshake
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=30)
        took = time.monotonic() - t0
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
        peer.close()
        rest.stop()
    print(f"SIGTERM -> exit in {took:.3f} s (handshake={handshake})")
    assert p.returncode == 0, err[-3000:]
