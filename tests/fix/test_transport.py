"""Transport over real loopback sockets: garbage on the wire, duplicate identity, a peer that
stops reading, FIX.4.2 counterparty, logon hooks end to end."""
from __future__ import annotations

import socket
import time

import pytest

from appliance.fix import dictionary, wire
from tests.fix.helpers import AcceptorThread
from appliance.fix.session import Session
from appliance.fix.store import MemoryStore
from appliance.fix.transport import EventLoop
from tests.fix.defscript import complete, expand_time
from tests.fix.helpers import pump_until
from tests.fix.peer_proc import ExecApp, acceptor_config

pytestmark = pytest.mark.timeout(60)


def logon(sender=b"TW44", bs=b"FIX.4.4", hb=b"30", seq=1):
    return complete(expand_time(b"8=%s\x0135=A\x0134=%d\x0149=%s\x0152=<TIME>\x0156=ISLD\x0198=0\x01108=%s\x01"
                                % (bs, seq, sender, hb), time.time()))


def read_message(s, timeout=5.0):
    s.settimeout(timeout)
    buf = b""
    while b"\x0110=" not in buf or not buf.endswith(b"\x01"):
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return wire.parse(buf[: buf.index(b"\x0110=") + 8])


def closed_by_peer(s, timeout=5.0) -> bool:
    s.settimeout(timeout)
    try:
        while True:
            if not s.recv(65536):
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


@pytest.fixture
def acceptor(tmp_path):
    acc = AcceptorThread(store_dir=tmp_path).start()
    yield acc
    acc.stop()


def test_garbage_before_logon_is_skipped_and_logon_succeeds(acceptor):
    s = socket.create_connection(("127.0.0.1", acceptor.port))
    s.sendall(b"\x00\x01\x02 GET / HTTP/1.1\r\n\r\n8=FIX.4.4\x019=ZZ\x01" + b"\xff" * 1000)
    s.sendall(logon())
    m = read_message(s)
    assert m.msg_type == b"A" and m.get(56) == b"TW44"
    s.close()


def test_truncated_logon_then_silence_is_dropped_after_timeout():
    loop = EventLoop(tick=0.02, unbound_timeout=0.3)
    loop.add_acceptor_session(Session(acceptor_config(), MemoryStore(), ExecApp(),
                                      dictionary.for_version("FIX.4.4"), now=time.time()))
    port = loop.listen("127.0.0.1", 0)
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(logon(sender=b"CLIENT")[:40])
    assert pump_until([loop], lambda: not loop.conns, timeout=5)
    assert closed_by_peer(s, 1)
    loop.close()


def test_second_connection_with_same_identity_is_closed_first_keeps_working(acceptor):
    a = socket.create_connection(("127.0.0.1", acceptor.port))
    a.sendall(logon())
    assert read_message(a).msg_type == b"A"
    b = socket.create_connection(("127.0.0.1", acceptor.port))
    b.sendall(logon())
    assert closed_by_peer(b)
    a.sendall(complete(expand_time(b"8=FIX.4.4\x0135=1\x0134=2\x0149=TW44\x0152=<TIME>\x0156=ISLD\x01112=X\x01",
                                   time.time())))
    hb = read_message(a)
    assert hb.msg_type == b"0" and hb.get(112) == b"X"
    a.close()


def test_fix42_counterparty_gets_echo_and_business_reject(acceptor):
    s = socket.create_connection(("127.0.0.1", acceptor.port))
    s.sendall(logon(sender=b"TW42", bs=b"FIX.4.2"))
    m = read_message(s)
    assert (m.begin_string, m.msg_type) == (b"FIX.4.2", b"A")
    s.sendall(complete(expand_time(
        b"8=FIX.4.2\x0135=D\x0134=2\x0149=TW42\x0152=<TIME>\x0156=ISLD\x0111=O1\x0121=1\x0140=1"
        b"\x0154=1\x0155=IBM\x0160=<TIME>\x01", time.time())))
    echo = read_message(s)
    assert (echo.msg_type, echo.get(11), echo.get(34)) == (b"D", b"O1", b"2")
    s.sendall(complete(expand_time(b"8=FIX.4.2\x0135=B\x0134=3\x0149=TW42\x0152=<TIME>\x0156=ISLD"
                                   b"\x01148=hello\x0133=1\x0158=news\x01", time.time())))
    rej = read_message(s)
    assert (rej.msg_type, rej.get(380), rej.get(45), rej.get(372)) == (b"j", b"3", b"3", b"B")
    s.close()


def test_peer_that_stops_reading_is_disconnected_and_others_are_served():
    loop = EventLoop(tick=0.02, max_outbuf=256 << 10, stall_timeout=0.5)
    from appliance.sim.acceptor import build
    build(loop)
    port = loop.listen("127.0.0.1", 0)
    slow = socket.create_connection(("127.0.0.1", port))
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.sendall(logon())
    assert pump_until([loop], lambda: loop.bound)
    big = b"Z" * 4000
    seq = 2
    t0 = time.monotonic()
    # keep asking for heartbeats echoing a 4 kB TestReqID and never read the answers
    while loop.bound and time.monotonic() - t0 < 20:
        msg = complete(expand_time(b"8=FIX.4.4\x0135=1\x0134=%d\x0149=TW44\x0152=<TIME>\x0156=ISLD"
                                   b"\x01112=%s\x01" % (seq, big), time.time()))
        try:
            slow.sendall(msg)
        except OSError:
            break
        seq += 1
        loop.poll(0)
    assert pump_until([loop], lambda: not loop.bound, timeout=5), "slow peer never disconnected"
    # the loop still serves another counterparty promptly
    other = socket.create_connection(("127.0.0.1", port))
    other.sendall(logon(sender=b"TW42", bs=b"FIX.4.2"))
    got = []
    assert pump_until([loop], lambda: _try_read(other, got), timeout=5)
    assert got[0].msg_type == b"A"
    slow.close()
    other.close()
    loop.close()


def test_large_backlog_to_a_peer_that_reads_is_not_mistaken_for_a_stall():
    loop = EventLoop(tick=0.02, max_outbuf=64 << 10, stall_timeout=2.0, sndbuf=8192)
    from appliance.sim.acceptor import build
    build(loop)
    port = loop.listen("127.0.0.1", 0)
    c = socket.socket()
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    c.connect(("127.0.0.1", port))
    c.sendall(logon())
    assert pump_until([loop], lambda: loop.bound)
    big = b"Z" * 8000
    burst = b"".join(complete(expand_time(b"8=FIX.4.4\x0135=1\x0134=%d\x0149=TW44\x0152=<TIME>\x0156=ISLD"
                                          b"\x01112=%s\x01" % (seq, big), time.time())) for seq in range(2, 60))
    c.sendall(burst)                           # ~460 kB of heartbeats queue up at once
    c.setblocking(False)
    received = 0
    peak = 0
    deadline = time.monotonic() + 20
    while received < 58 * 8000 and time.monotonic() < deadline:
        loop.poll(0.005)
        peak = max([peak] + [len(cn.outbuf) for cn in loop.bound.values()])
        time.sleep(0.002)                      # a slow but steady reader
        try:
            received += len(c.recv(1 << 16))
        except BlockingIOError:
            pass
    assert peak > loop.max_outbuf, "backlog never exceeded the soft cap; test proves nothing"
    assert received >= 58 * 8000 and loop.bound, "reading peer was disconnected"
    c.close()
    loop.close()


def _try_read(s, got):
    s.setblocking(False)
    try:
        data = s.recv(65536)
    except BlockingIOError:
        return False
    if data:
        got.append(wire.parse(data[: data.index(b"\x0110=") + 8]))
        return True
    return False
