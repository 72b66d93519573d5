"""Hostile peers against a real acceptor process (``appliance fix acceptor``) over loopback:
memory stays bounded before logon, HeartBtInt=0 is refused, the open-file limit does not take the
listener down."""
from __future__ import annotations

import errno
import resource
import socket
import subprocess
import sys
import time

import pytest

from tests.fix.helpers import free_port
from tests.fix.test_transport import closed_by_peer, logon, read_message

pytestmark = pytest.mark.timeout(180)


def _acceptor(tmp_path, nofile=None):
    port = free_port()

    def limit():
        if nofile:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    p = subprocess.Popen([sys.executable, "-m", "appliance.cli", "fix", "acceptor", "--port", str(port),
                          "--store", str(tmp_path / "acc")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, preexec_fn=limit)
    assert p.stdout.readline().startswith("listening"), p.stderr.read()
    return p, port


def _peak_rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def _stop(p):
    p.terminate()
    try:
        p.wait(15)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    return p.stderr.read()


def _logs_on(port) -> bool:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        s.sendall(logon())
        return read_message(s, 10).msg_type == b"A"
    finally:
        s.close()


def test_300_connections_each_sending_a_2mb_partial_message_before_logon_stay_bounded(tmp_path):
    p, port = _acceptor(tmp_path)
    base = _peak_rss_mb(p.pid)
    socks = []
    try:
        head = b"8=FIX.4.4\x019=999999\x0135=A\x0134=1\x0149=TW44\x0156=ISLD\x0158="
        chunk = b"x" * 65536
        for _ in range(300):
            s = socket.create_connection(("127.0.0.1", port))
            s.setblocking(False)
            s.send(head)
            socks.append(s)
        sent = [len(head)] * len(socks)
        for _ in range(40):                            # push up to 2 MB into each, as far as it goes
            for i, s in enumerate(socks):
                if sent[i] < 2_000_000:
                    try:
                        sent[i] += s.send(chunk)
                    except (BlockingIOError, InterruptedError):
                        pass
                    except OSError as e:               # closed by the acceptor: what we want
                        assert e.errno in (errno.EPIPE, errno.ECONNRESET)
                        sent[i] = 2_000_000
        closed = 0
        for s in socks:
            s.setblocking(True)
            if closed_by_peer(s, 10):
                closed += 1
        assert closed == len(socks)                    # every one of them was cut off before 2 MB
        assert _logs_on(port)                          # a real client is still served
        assert p.poll() is None
        grew = _peak_rss_mb(p.pid) - base
        assert grew < 100, f"peak RSS grew by {grew:.0f} MB"
    finally:
        for s in socks:
            s.close()
        err = _stop(p)
    assert "bytes before a Logon" in err


def test_logon_with_heartbtint_0_is_refused_and_the_real_client_logs_on(tmp_path):
    p, port = _acceptor(tmp_path)
    try:
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(logon(hb=b"0"))
        m = read_message(s)
        assert m.msg_type == b"5" and b"HeartBtInt 0" in m.get(58)
        assert closed_by_peer(s)
        s.close()
        assert _logs_on(port)
    finally:
        _stop(p)


def test_open_file_limit_reached_listener_logs_and_keeps_serving(tmp_path):
    p, port = _acceptor(tmp_path, nofile=128)
    socks = []
    try:
        for _ in range(200):                            # more than the acceptor has descriptors for
            socks.append(socket.create_connection(("127.0.0.1", port)))
        time.sleep(0.5)
        assert p.poll() is None
        assert _logs_on(port)                           # served although the table was full
        assert p.poll() is None
    finally:
        for s in socks:
            s.close()
        err = _stop(p)
    assert "accept failed" in err and "Traceback" not in err
