"""Compiled WebSocket deframing of the server stream, on the raw socket (RFC 6455, section 5).

websocket-client does the opening handshake, writes every client frame (subscriptions, pongs,
close) and nothing else: once a connection is up, the gateway reads the socket itself through
:func:`next_frame`, which ``recv()``s into one fixed receive buffer and cuts it into frames
without leaving compiled code. Each venue module's ``pump`` calls it in a loop and hands every
complete text/binary frame straight to the venue's compiled ``handle_frame``; Python sees only
what is rare (control frames, fragments, a closed or misbehaving peer, an idle socket).

Receive state (``ws``, int64[WS_WORDS]; one per connection, reset by :func:`reset`)::

    W_POS       first unread byte in rx
    W_FILL      end of the received bytes in rx
    W_S, W_E    payload span of the frame just handed out (rx[W_S:W_E])
    W_OP        its opcode; W_FIN its FIN bit
    W_TSC       TSC when the recv() that completed the newest bytes returned (the frames'
                origin_tsc)
    W_PARTIAL   TSC since which an incomplete frame has been waiting (0 = none): the gateway's
                per-frame read deadline starts here, so a peer trickling one byte at a time
                cannot hold a frame open forever
    W_MAX       largest payload accepted (the frame size cap)
    W_ERRNO     errno of the last failed recv()
    W_BYTES     bytes received on this connection
    W_LAT       TSC ticks from W_TSC to the end of the last handle_frame (records published)
    W_FRAMES    complete data frames handed to the venue
    W_ACK       1 when recv() returned bytes since the last :func:`ack_now`
    W_ACKS      ack_now calls
    W_ACK_QUIET ns the socket must stay quiet after bytes came before the pump ACKs them (< 0:
                never, the kernel ACKs inside recv()); kept by :func:`reset`

Return codes of :func:`next_frame` (and of every venue ``pump``, which adds P_ACTION)::

    P_DATA      a complete unfragmented text/binary frame is at rx[W_S:W_E]
    P_CONTROL   a ping/pong/close frame is at rx[W_S:W_E] (opcode in W_OP): Python answers it
    P_FRAGMENT  a non-final or continuation frame: Python reassembles (rare; capped)
    P_IDLE      no complete frame and the socket has nothing more now
    P_NEED      (fd < 0: the caller fills rx itself, e.g. from a TLS socket) more bytes needed
    P_CLOSED    the peer closed the TCP connection
    P_ERROR     recv() failed (errno in W_ERRNO)
    P_PROTOCOL  not a valid server frame: masked, RSV bits set, reserved opcode, a control frame
                longer than 125 bytes or fragmented, a 64-bit length with the top bit set
    P_TOO_BIG   the frame header claims more than W_MAX payload bytes (nothing is allocated:
                the connection is dropped)
    P_BUDGET    (pump) max_iters frames handled; call again
    P_ACTION|a  (pump) the venue kernel returned action bits ``a`` for the frame at rx[W_S:W_E]

Deferred ACKs (:func:`ack_now`). A read that empties the socket of a small pushed segment makes
the kernel send its ACK inside that recv() (tcp_cleanup_rbuf), unless the connection is in
"pingpong" (interactive) mode, where ACKs are delayed. A market-data stream is one-way, so every
frame's recv() paid for its ACK before it returned: on loopback about 2 us, the ACK's whole trip
through the stack included. Every venue's pump (``common.pump_frames``) calls :func:`ack_now` when
it finds the socket empty after reading bytes and quiet for ws[W_ACK_QUIET] ns (the venue's
``ack_after_us``, default 20 us): the frames are handled by then (records published, and in the
one-process loop their orders sent). That keeps the socket in pingpong mode and sends the ACK
itself, off the frame's path. Measured with ``appliance bench tick-to-trade`` (loopback, a frame
a millisecond): sender -> md recv() returned 3.2-5.3 us against 5.8-8.9 us with the kernel's
ACK. Why not at once (0): where actors share a core, the ACK's ~3 us then delays the engine's
turn (split layout on 2 vCPUs: tick-to-trade 29-33 us against 22-23 us). The cost: a sender that
holds small writes for our ACK (Nagle; market-data servers normally disable it) waits that long
for its next write; under a continuous stream the kernel still ACKs every full segment itself.

The receive buffer never grows: it holds W_MAX + 14 bytes, and a partial frame is moved to its
front when the rest would not fit. No function here allocates or raises.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from appliance import jit
from appliance.transport.intrinsics import (EAGAIN, EINTR, rdtsc, sys_errno, sys_recv,
                                            sys_setsockopt_int)

W_POS = 0
W_FILL = 1
W_S = 2
W_E = 3
W_OP = 4
W_FIN = 5
W_TSC = 6
W_PARTIAL = 7
W_MAX = 8
W_ERRNO = 9
W_BYTES = 10
W_LAT = 11
W_FRAMES = 12
W_ACK = 13          # 1: bytes were read since the last ack_now (the pump sends the ACK)
W_ACKS = 14         # ack_now calls on this connection
W_ACK_QUIET = 15    # ns the socket must stay quiet before the pump ACKs; < 0: the kernel ACKs
WS_WORDS = 16

P_DATA = 1
P_CONTROL = 2
P_FRAGMENT = 3
P_IDLE = 4
P_NEED = 5
P_CLOSED = 6
P_ERROR = 7
P_PROTOCOL = 8
P_TOO_BIG = 9
P_BUDGET = 10
P_ACTION = 1 << 16          # pump: ORed with the venue kernel's action bits (< 1 << 16)
CODE_NAMES = {P_DATA: "data", P_CONTROL: "control", P_FRAGMENT: "fragment", P_IDLE: "idle",
              P_NEED: "need", P_CLOSED: "closed", P_ERROR: "recv error", P_PROTOCOL: "protocol",
              P_TOO_BIG: "frame too big", P_BUDGET: "budget"}

OP_CONT = 0
OP_TEXT = 1
OP_BINARY = 2
OP_CLOSE = 8
OP_PING = 9
OP_PONG = 10

HEADER_MAX = 14             # 2 + 8 (64-bit length) + 4 (mask key, never sent by servers)
DEFAULT_MAX_FRAME = 16 << 20
ACK_QUIET_NS = 20_000       # default W_ACK_QUIET (module docstring: deferred ACKs)



def new_state(max_frame: int = DEFAULT_MAX_FRAME) -> tuple[np.ndarray, np.ndarray]:
    """(rx, ws): a receive buffer for frames of up to ``max_frame`` payload bytes, and its
    state words. The buffer's pages are touched only as frames fill them."""
    if max_frame < 126:
        raise ValueError(f"max_frame must be >= 126 bytes, got {max_frame}")
    rx = np.zeros(max_frame + HEADER_MAX, np.uint8)
    ws = np.zeros(WS_WORDS, np.int64)
    ws[W_MAX] = max_frame
    ws[W_ACK_QUIET] = ACK_QUIET_NS
    return rx, ws


def reset(ws: np.ndarray) -> None:
    """A fresh connection: forget buffered bytes, keep the size cap."""
    cap = int(ws[W_MAX])
    quiet = int(ws[W_ACK_QUIET])
    ws[:] = 0
    ws[W_MAX] = cap
    ws[W_ACK_QUIET] = quiet


@njit(**jit.INTERNAL)
def _compact(rx, ws):
    """Move the unread bytes rx[W_POS:W_FILL] to the front of rx (forward copy, dst < src)."""
    pos = ws[W_POS]
    fill = ws[W_FILL]
    n = fill - pos
    for k in range(n):
        rx[k] = rx[pos + k]
    ws[W_POS] = 0
    ws[W_FILL] = n


@njit(cache=True, nogil=True, _nrt=False)
def next_frame(fd, rx, ws):
    """Cut the next frame out of rx, reading the socket (``fd`` >= 0) when rx holds no complete
    frame. Returns a P_* code (module docstring)."""
    size = rx.shape[0]
    while True:
        pos = ws[W_POS]
        fill = ws[W_FILL]
        avail = fill - pos
        need = 2
        if avail >= 2:
            b0 = rx[pos]
            b1 = rx[pos + 1]
            fin = b0 >> 7
            op = b0 & 0x0F
            if (b0 & 0x70) != 0 or (b1 & 0x80) != 0:
                return P_PROTOCOL
            if op != OP_CONT and op != OP_TEXT and op != OP_BINARY and op != OP_CLOSE \
                    and op != OP_PING and op != OP_PONG:
                return P_PROTOCOL
            ln = np.int64(b1 & 0x7F)
            hl = 2
            if ln == 126:
                hl = 4
            elif ln == 127:
                hl = 10
            need = hl
            if avail >= hl:
                if hl == 4:
                    ln = (np.int64(rx[pos + 2]) << 8) | np.int64(rx[pos + 3])
                elif hl == 10:
                    if rx[pos + 2] & 0x80:
                        return P_PROTOCOL
                    ln = 0
                    for k in range(8):
                        ln = (ln << 8) | np.int64(rx[pos + 2 + k])
                if op >= OP_CLOSE and (ln > 125 or fin == 0):
                    return P_PROTOCOL
                if ln > ws[W_MAX]:
                    ws[W_E] = ln
                    return P_TOO_BIG
                need = hl + ln
                if avail >= need:
                    ws[W_S] = pos + hl
                    ws[W_E] = pos + need
                    ws[W_OP] = op
                    ws[W_FIN] = fin
                    ws[W_POS] = pos + need
                    ws[W_PARTIAL] = 0
                    if op == OP_TEXT or op == OP_BINARY:
                        if fin:
                            return P_DATA
                        return P_FRAGMENT
                    if op == OP_CONT:
                        return P_FRAGMENT
                    return P_CONTROL
        # no complete frame: make room for the rest of it, then read
        if avail == 0:
            ws[W_POS] = 0
            ws[W_FILL] = 0
        elif pos > 0 and (pos + need > size or pos > (size >> 1)):
            _compact(rx, ws)
        fill = ws[W_FILL]
        if fill >= size:
            return P_PROTOCOL          # cannot happen with rx sized W_MAX + HEADER_MAX
        if fd < 0:
            if fill > ws[W_POS] and ws[W_PARTIAL] == 0:
                ws[W_PARTIAL] = ws[W_TSC]
            return P_NEED
        n = sys_recv(fd, rx, fill, size - fill)
        if n > 0:
            ws[W_TSC] = rdtsc()
            ws[W_FILL] = fill + n
            ws[W_BYTES] += n
            ws[W_ACK] = 1
            continue
        if n == 0:
            return P_CLOSED
        err = sys_errno()
        if err == EINTR:
            continue
        if err == EAGAIN:
            if fill > ws[W_POS] and ws[W_PARTIAL] == 0:
                ws[W_PARTIAL] = ws[W_TSC]
            return P_IDLE
        ws[W_ERRNO] = err
        return P_ERROR


def frame_bytes(payload: bytes, op: int = OP_TEXT, fin: bool = True, mask: bytes | None = None) -> bytes:
    """One WebSocket frame as a server (or, with ``mask``, a client) writes it (tests, benches,
    the venue simulator's raw modes)."""
    n = len(payload)
    head = bytearray([(0x80 if fin else 0) | op])
    mbit = 0x80 if mask is not None else 0
    if n < 126:
        head.append(mbit | n)
    elif n < 1 << 16:
        head.append(mbit | 126)
        head += n.to_bytes(2, "big")
    else:
        head.append(mbit | 127)
        head += n.to_bytes(8, "big")
    if mask is None:
        return bytes(head) + payload
    masked = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
    return bytes(head) + mask + masked


IPPROTO_TCP = 6
TCP_QUICKACK = 12


@njit(**jit.HELPER)
def ack_now(fd):
    """Send the ACK of what was read now (TCP_QUICKACK 1: leave pingpong mode, the pending ACK
    goes out) and go back to delayed ACKs (TCP_QUICKACK 0), so the next frame's recv() does not
    send one itself (module docstring). Two setsockopt calls; returns the second's result."""
    sys_setsockopt_int(fd, IPPROTO_TCP, TCP_QUICKACK, 1)
    return sys_setsockopt_int(fd, IPPROTO_TCP, TCP_QUICKACK, 0)
