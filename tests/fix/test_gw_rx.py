"""gw_rx: the FIX gateway's receive side in compiled code (the one-process loop reads the FIX
socket itself): in-sequence execution reports become exec records and move the store's target
number on disk; everything else is left to Python exactly where the Python step would take it."""
from __future__ import annotations

import select
import socket
import time

import numpy as np
import pytest
from numba import njit

from appliance.fix import codec as C
from appliance.fix import gateway as fixgw
from appliance.fix.store import FileStore
from appliance.group import run as group
from appliance.transport import clock, ring
from appliance.transport import records as R
from appliance.transport.intrinsics import rdtsc
from tests.fix.test_codec import INSTR, SYMS, ack, heartbeat
from tests.loopback import tcp_pair


@pytest.fixture
def rig(tmp_path):
    """A scratch FIX bundle on the codec tests' instruments, its receive side on a real store's
    mapped target digits, and a connected socket pair (``a``: the gateway's end)."""
    _md, _cal, _en, fx, frx, _g, _w = group.scratch_args("binance")
    fx = fx._replace(instr=INSTR, syms=SYMS)
    store = FileStore(tmp_path / "store")
    frx = frx._replace(tseq=store.target_view())
    frx.pst[C.ST_EXPECT_SEQ] = store.next_target
    a, b = socket.socketpair()
    a.setblocking(False)
    yield fx, frx, store, a, b
    a.close()
    b.close()
    store.close()


def _exec_records(fx, cur):
    out = []
    rec = np.zeros(R.EXEC_RECORD_SIZE, np.uint8)
    while ring.poll(fx.ehdr, fx.edata, cur, rec) == 1:
        out.append(rec.view(R.RECORD_DTYPES[int(rec[R.RTYPE_OFF])])[0].copy())
    return out


def test_reports_in_sequence_become_exec_records_and_the_target_number_is_on_disk(rig, tmp_path):
    fx, frx, store, a, b = rig
    cur = ring.local_cursor(fx.ehdr)
    assert fixgw.gw_rx_once(fx, frx, a.fileno()) == fixgw.RX_NONE      # nothing sent yet
    third = ack(103, 3)
    b.sendall(ack(101, 1) + ack(102, 2) + third[:25])
    assert fixgw.gw_rx_once(fx, frx, a.fileno()) == fixgw.RX_DONE
    recs = _exec_records(fx, cur)
    assert [int(r["clord_id"]) for r in recs] == [101, 102]
    assert all(r["rtype"] == R.RT_ACK for r in recs)
    assert frx.pst[C.ST_EXPECT_SEQ] == 3
    # the partial third message waits in the buffer, as the Python step leaves it
    assert frx.pos[fixgw.RX_END] - frx.pos[fixgw.RX_START] == 25
    b.sendall(third[25:])
    assert fixgw.gw_rx_once(fx, frx, a.fileno()) == fixgw.RX_DONE
    assert [int(r["clord_id"]) for r in _exec_records(fx, cur)] == [103]
    assert frx.pos[fixgw.RX_START] == frx.pos[fixgw.RX_END] == 0
    assert frx.pos[fixgw.RX_READS] == 2
    # the next target number reached the file through the mapping: a restarted store reads it
    store.note_next_target(int(frx.pst[C.ST_EXPECT_SEQ]))
    again = FileStore(tmp_path / "store")
    assert again.next_target == 4
    again.close()


def test_a_session_message_stops_it_where_the_python_step_takes_over(rig):
    fx, frx, store, a, b = rig
    cur = ring.local_cursor(fx.ehdr)
    hb = heartbeat(2)
    b.sendall(ack(101, 1) + hb + ack(102, 3))
    assert fixgw.gw_rx_once(fx, frx, a.fileno()) == fixgw.RX_PYTHON
    assert [int(r["clord_id"]) for r in _exec_records(fx, cur)] == [101]
    assert frx.pos[fixgw.RX_SESSION] == 1
    off, ln = int(frx.pst[C.ST_MSG_OFF]), int(frx.pst[C.ST_MSG_LEN])
    assert bytes(frx.buf[off:off + ln]) == hb
    # not consumed: the session layer checks and counts it; the report after it is still there
    assert frx.pst[C.ST_EXPECT_SEQ] == 2
    assert frx.pos[fixgw.RX_START] == off + ln
    assert frx.pos[fixgw.RX_END] - frx.pos[fixgw.RX_START] == len(ack(102, 3))


def test_a_gap_is_left_to_the_session_layer(rig):
    fx, frx, store, a, b = rig
    cur = ring.local_cursor(fx.ehdr)
    b.sendall(ack(105, 5))
    assert fixgw.gw_rx_once(fx, frx, a.fileno()) == fixgw.RX_PYTHON
    assert _exec_records(fx, cur) == []
    assert frx.pos[fixgw.RX_SESSION] == 1 and frx.pst[C.ST_EXPECT_SEQ] == 1


def test_end_of_stream_is_reported_not_swallowed(rig):
    fx, frx, store, a, b = rig
    b.close()
    assert fixgw.gw_rx_once(fx, frx, a.fileno()) == fixgw.RX_PYTHON
    assert frx.pos[fixgw.RX_STATUS] == -1


def test_garbage_is_skipped_and_counted_and_the_stream_goes_on(rig):
    fx, frx, store, a, b = rig
    cur = ring.local_cursor(fx.ehdr)
    b.sendall(b"\x00junk\x01" * 5 + ack(101, 1))
    assert fixgw.gw_rx_once(fx, frx, a.fileno()) == fixgw.RX_DONE
    assert [int(r["clord_id"]) for r in _exec_records(fx, cur)] == [101]
    assert frx.pst[C.ST_GARBAGE_BYTES] > 0 and frx.pst[C.ST_EXPECT_SEQ] == 2


@njit(nogil=True)
def _rx_spin(fx, rx, fd, ticks):
    """gw_rx until it takes something, an order record waits or ``ticks`` pass (the GIL
    released: the exchange thread answers meanwhile)."""
    end = np.int64(rdtsc()) + ticks
    c = fixgw.gw_rx(fx, rx, fd)
    while c == fixgw.RX_NONE and np.int64(rdtsc()) < end and group._behind(fx.ohdr, fx.ocur) == 0:
        c = fixgw.gw_rx(fx, rx, fd)
    return c


class _NoRead:
    """The gateway's socket as its Python step sees it while compiled code does the reading."""

    def __init__(self, sock):
        self._sock = sock

    def recv_into(self, *_args):
        raise BlockingIOError

    def __getattr__(self, name):
        return getattr(self._sock, name)


def _compiled_rx_run(self, stop):
    """Gateway.run as the one-process loop drives the gateway, made deterministic: while the
    session is on its fast path compiled code alone reads the socket (until it takes something,
    an order waits or 50 ms pass), and the Python step does the rest (orders out, timers, what
    gw_rx left to it, the socket while off the fast path)."""
    from appliance.transport import records as R_
    self._publish_session(R_.SESSION_DOWN)
    self.compiled_reads = 0
    ticks = int(0.05 * float(self.cal[clock.C_HZ]))
    while not stop():
        real = self.sock
        fast = False
        if real is not None:
            self.before_kernel()
            fast = self.fast_fd() >= 0 and self.fast_rx()
            if fast:
                if _rx_spin(self.fx, self.rx, real.fileno(), ticks) != fixgw.RX_NONE:
                    self.compiled_reads += 1
                    self.after_kernel_rx(self.clock())
                fast = self.sock is real and self.fast_fd() >= 0 and self.fast_rx()
        if fast:
            self.sock = _NoRead(real)
        try:
            self.step()
        finally:
            if isinstance(self.sock, _NoRead):
                self.sock = real


def _until(cond, timeout=10.0):
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline, "condition not reached"
        time.sleep(0.005)


@pytest.fixture
def compiled_harness(shm_dir, tmp_path, monkeypatch):
    from tests.fix.test_gateway import Harness
    monkeypatch.setattr(fixgw.Gateway, "run", _compiled_rx_run)
    h = Harness(shm_dir, tmp_path, refs={"BTCUSDT": "100.00"})
    yield h
    h.close()


def test_gateway_reading_through_compiled_code_gets_acks_fills_and_heals_a_gap(compiled_harness):
    """The venue's answers read by gw_rx (after_kernel_rx for what it leaves to Python): acks and
    fills arrive as records, a sequence gap goes through the session layer's resend, and the
    target number the store keeps is the venue's."""
    h = compiled_harness
    h.wait_state(R.SESSION_RECONCILED)
    buy = h.new_order(10_100, qty=5)                # crosses the 100.00 reference: filled
    got = h.next_records(lambda r: r["rtype"] == R.RT_FILL and r["clord_id"] == buy)
    assert any(r["rtype"] == R.RT_ACK and r["clord_id"] == buy for r in got)
    venue_store = h.srv.sessions[0].store
    _until(lambda: h.gw.store.next_target == venue_store.next_sender)   # after_kernel_rx noted it
    slow_before = h.gw.counters["slow_path_msgs"]
    venue_store.set_next_sender(venue_store.next_sender + 5)   # the venue skips five numbers
    gapped = h.new_order(9_001)
    ack = h.next_records(lambda r: r["rtype"] == R.RT_ACK and r["clord_id"] == gapped)[-1]
    assert ack["exec_type"] == R.EXEC_NEW
    assert h.gw.counters["slow_path_msgs"] > slow_before         # the session layer took it
    _until(lambda: h.gw.store.next_target == venue_store.next_sender)   # gap filled, in step
    after = h.new_order(9_002)
    h.next_records(lambda r: r["rtype"] == R.RT_ACK and r["clord_id"] == after)
    assert h.gw.compiled_reads > 0
    assert h.gw.session.garbled == 0
    # the store's mapping holds what a restart reads: the venue's next number
    _until(lambda: h.gw.store.next_target == venue_store.next_sender)
    assert int(bytes(h.gw.target_view).decode()) == venue_store.next_sender


def _unacked(sock) -> int:
    """Segments ``sock`` sent that its peer has not ACKed (Linux tcp_info.tcpi_unacked)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return int.from_bytes(info[24:28], "little")


@pytest.mark.parametrize("ack_reads", [True, False])
def test_ack_reads_sends_the_ack_of_what_was_read_at_once(ack_reads):
    """Gateway.ack_reads (the session's ``ack_reads``, default on): the venue's message is ACKed
    right after it is read, not left for the delayed-ACK timer or the next order's segment."""
    from types import SimpleNamespace
    gw_sock, venue = tcp_pair()
    try:
        gw_sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 0)    # delayed ACKs
        venue.sendall(ack(101, 1))
        deadline = time.time() + 5
        got = b""
        while not got and time.time() < deadline:
            got = gw_sock.recv(4096)
        assert got
        assert _unacked(venue) == 1                  # the gateway's kernel holds the ACK back
        gw = SimpleNamespace(sock=gw_sock, tls=None, cfg=SimpleNamespace(ack_reads=ack_reads))
        fixgw.Gateway.ack_reads(gw)
        _until(lambda: _unacked(venue) == 0, timeout=0.5) if ack_reads else time.sleep(0.005)
        assert _unacked(venue) == (0 if ack_reads else 1)
    finally:
        gw_sock.close()
        venue.close()




@pytest.mark.parametrize("ack_reads", [True, False])
def test_the_one_process_loop_acks_what_it_read_once_idle(ack_reads):
    """The group loop's own FIX input (gw_rx in the kernel) with G_FIX_ACK: the venue's report is
    ACKed by the loop once it is idle; without it the ACK stays with the kernel's delayed-ACK
    timer (or the next order)."""
    md, cal, en, fx, frx, g, wait_ = group.scratch_args("binance")
    fx = fx._replace(instr=INSTR, syms=SYMS)
    frx.pst[C.ST_EXPECT_SEQ] = 1
    gw_sock, venue = tcp_pair()
    try:
        gw_sock.setblocking(False)
        gw_sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 0)    # delayed ACKs
        venue.sendall(ack(101, 1))
        _until(lambda: select.select([gw_sock], [], [], 0.01)[0], timeout=5)
        assert _unacked(venue) == 1
        g[group.G_FIX_FD] = gw_sock.fileno()
        g[group.G_FIX_RX] = 1
        g[group.G_FIX_ACK] = 1 if ack_reads else 0
        g[group.G_BUDGET] = int(0.002 * float(cal[clock.C_HZ]))          # 2 ms of spinning ...
        deadline = time.time() + 5
        while True:     # ... again while a loaded CI host descheduled most of it (5 s at most)
            group.STEPS["binance"](md, cal, en, fx, frx, g, wait_)
            if g[group.G_RX_READS] > 0 or time.time() > deadline:
                break
        assert g[group.G_RX_READS] == 1 and frx.pst[C.ST_EXPECT_SEQ] == 2
        _until(lambda: _unacked(venue) == 0, timeout=0.5) if ack_reads else time.sleep(0.005)
        assert _unacked(venue) == (0 if ack_reads else 1)
    finally:
        gw_sock.close()
        venue.close()
