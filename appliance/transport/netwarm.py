"""Keeping the kernel's TCP path in cache on a spinning core (``[wait] net_warm_us``).

A busy-polling loop calls ``recv()`` millions of times a second, but sends an order once in a
while: between two orders the kernel's send path (``tcp_sendmsg``, the IP output path, the
socket buffers) and the receive path's copy-out leave the core's caches, and the next order pays
for bringing them back on its way to the wire. Trading systems keep that path warm with dummy
sends (Onload's ``ONLOAD_MSG_WARM`` is the same idea for its own stack); the kernel's TCP has no
send that goes nowhere, so here the loop sends 64 bytes on a private loopback TCP connection and
reads them back on its other end, every ``net_warm_us`` while it has nothing else to do::

    tick(words, buf, now)     idle and due: send(tx, 64 bytes), recv(rx) -> 1; else 0

What it warms: the syscall path, the socket lock, TCP's send path down to the IP output, and
``recv()``'s copy of bytes that arrived. On loopback it is also the path of the orders themselves
(and of their receive side at the venue's end); through a NIC the driver's part is not warmed.

What it costs: a warm-up takes a few microseconds of an otherwise spinning core, and a frame that
arrives during one waits for it to end (at 50 us, about one frame in ten to twenty, by at most one
warm-up). It runs only in a loop whose wait strategy spins (the one-process loop,
``appliance.group``); a loop that yields or sleeps leaves its core to others and is not warmed.

Measured with ``appliance bench tick-to-trade --layout one`` (loopback, a frame a millisecond)
and a build that warmed only in every other 2^28-tick period (~100 ms), so that warmed and cold
frames of the same run saw the same machine (alternate runs could not show it: this VM's legs
move by 2 us from one run to the next). At 50 us, three runs: tick_to_wire (the frame's recv()
-> the venue's recv() of the order) 0.59-0.79 us shorter, wire_to_wire 0.42-0.81 us shorter,
tick_to_trade within 0.06 us; an earlier experimental build: 0.9-1.1 us at 25-50 us, 0.6 us at
100 us. The frame's own leg (sender -> md recv()) did not change: its cold part is the sender's.

Failures never stop the loop: an error (a send that did not take all 64 bytes, a recv error
other than EAGAIN) is counted, and after ``MAX_ERRORS`` warming turns itself off. The connection
holds at most what a few warm-ups sent (each recv drains up to ``len(buf)`` bytes).
"""
from __future__ import annotations

import logging
import socket

import numpy as np
from numba import njit

from appliance.transport import clock, wait
from appliance.transport.intrinsics import EAGAIN, rdtsc, sys_errno, sys_recv, sys_send

W_TX = 0        # fd that sends (-1: off)
W_RX = 1        # fd that reads them back
W_EVERY = 2     # TSC ticks between warm-ups (0: off)
W_NEXT = 3      # TSC of the next one due
W_WARMS = 4     # warm-ups done
W_ERRORS = 5    # failed sends or reads
W_N = 8

SIZE = 64           # bytes per warm-up
BUF = 512           # read-back buffer (a read drains up to 8 warm-ups)
MAX_ERRORS = 8      # then warming turns itself off

log = logging.getLogger("appliance.netwarm")


def every_us(wait_cfg, wparams) -> float:
    """``[wait] net_warm_us`` for a loop idling with ``wparams`` (transport.wait): 0 unless the
    loop spins (one that yields or sleeps leaves its core to others)."""
    return float(wait_cfg.net_warm_us) if wparams[wait.P_KIND] == wait.SPIN else 0.0


def off() -> np.ndarray:
    """Words that never warm."""
    w = np.zeros(W_N, np.int64)
    w[W_TX] = w[W_RX] = -1
    return w


@njit(cache=True, nogil=True)
def tick(w, buf, now):
    """One warm-up when due (``now``: TSC): ``SIZE`` bytes sent on the private connection and
    read back. Returns 1 when it ran, 0 otherwise."""
    if w[W_EVERY] <= 0 or now < w[W_NEXT]:
        return 0
    k = sys_send(w[W_TX], buf, 0, SIZE)
    bad = k != SIZE
    r = sys_recv(w[W_RX], buf, 0, buf.shape[0])
    if r < 0 and sys_errno() != EAGAIN:
        bad = True
    if bad:
        w[W_ERRORS] += 1
        if w[W_ERRORS] >= MAX_ERRORS:
            w[W_EVERY] = 0
    w[W_WARMS] += 1
    w[W_NEXT] = np.int64(rdtsc()) + w[W_EVERY]
    return 1


class NetWarm:
    """The private loopback connection and the words :func:`tick` reads (``words``, ``buf``).
    ``every_us`` <= 0, or a connection that cannot be made (logged), gives words that never
    warm."""

    def __init__(self, every_us: float, cal, owner: str = ""):
        self.words = off()
        self.buf = np.zeros(BUF, np.uint8)
        self.socks: tuple = ()
        if every_us <= 0:
            return
        try:
            self.socks = loopback_pair()
            # the reader in delayed-ACK mode: its ACKs ride on the timer, not on each read
            self.socks[1].setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 0)
        except OSError as e:
            self.close()
            log.warning("%s: net warm-up off: no loopback TCP connection (%s)", owner or "loop", e)
            return
        tx, rx = self.socks
        self.words[W_TX] = tx.fileno()
        self.words[W_RX] = rx.fileno()
        self.words[W_EVERY] = max(1, int(every_us * 1e-6 * float(cal[clock.C_HZ])))

    @property
    def on(self) -> bool:
        return self.words[W_EVERY] > 0

    def counts(self) -> dict:
        return {"net_warms": int(self.words[W_WARMS]), "net_warm_errors": int(self.words[W_ERRORS])}

    def close(self) -> None:
        self.words[W_EVERY] = 0
        for s in self.socks:
            s.close()
        self.socks = ()


def loopback_pair(blocking: bool = False) -> tuple[socket.socket, socket.socket]:
    """A connected loopback TCP pair (client, server side), TCP_NODELAY, non-blocking unless
    ``blocking`` (the warm-up's connection; the benches and tests use it too)."""
    srv = socket.socket()
    try:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        cli = socket.create_connection(srv.getsockname(), timeout=1.0)
        peer, _ = srv.accept()
    finally:
        srv.close()
    for s in (cli, peer):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(blocking)
    return cli, peer
