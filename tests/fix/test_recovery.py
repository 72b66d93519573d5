"""Our initiator against our acceptor over loopback, through disconnects, restarts and kill -9."""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import pytest

from appliance.fix import dictionary
from appliance.fix.session import Application, Session
from appliance.fix.store import FileStore, MessageLog
from appliance.fix.transport import EventLoop
from tests.fix.helpers import free_port, pump_until
from tests.fix.peer_proc import ExecApp, acceptor_config, initiator_config, order_body

DD = dictionary.for_version("FIX.4.4")
pytestmark = pytest.mark.timeout(120)


class Recorder(Application):
    def __init__(self):
        self.msgs = []

    def on_app_message(self, session, msg):
        self.msgs.append((msg.get_int(34), msg.get(11), msg.get(43) == b"Y"))


class RecordingExecApp(ExecApp):
    def __init__(self):
        super().__init__()
        self.orders = []

    def on_app_message(self, session, msg):
        self.orders.append((msg.get_int(34), msg.get(11), msg.get(43) == b"Y"))
        super().on_app_message(session, msg)


def _spawn(role, port, store, *extra):
    return subprocess.Popen([sys.executable, "-m", "tests.fix.peer_proc", role, "--port", str(port),
                             "--store", str(store), *extra], stdout=subprocess.PIPE, text=True)


def _assert_strictly_increasing(seqs):
    assert all(b > a for a, b in zip(seqs, seqs[1:])), f"sequence numbers not increasing: {seqs}"


def test_acceptor_killed_with_sigkill_recovers_by_resend_and_no_duplicate_seqnums(tmp_path):
    port = free_port()
    proc = _spawn("acceptor", port, tmp_path / "acc")
    assert proc.stdout.readline().startswith("listening")
    loop = EventLoop(tick=0.02)
    app = Recorder()
    ini = Session(initiator_config(), FileStore(tmp_path / "ini"), app, DD,
                  MessageLog(tmp_path / "ini" / "messages.log"), now=time.time())
    loop.add_initiator(ini, "127.0.0.1", port, reconnect_interval=0.2)
    try:
        assert pump_until([loop], lambda: ini.logged_on)
        for k in range(30):
            ini.send_app(b"D", order_body(f"C{k}", time.time()))
        loop.flush_session(ini)
        assert pump_until([loop], lambda: len(app.msgs) == 30)
        for k in range(30, 60):                  # a burst, then the acceptor dies mid-stream
            ini.send_app(b"D", order_body(f"C{k}", time.time()))
        loop.flush_session(ini)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        pump_until([loop], lambda: not ini.logged_on, timeout=5)
        proc = _spawn("acceptor", port, tmp_path / "acc")
        assert proc.stdout.readline().startswith("listening")
        want = {b"C%d" % k for k in range(60)}
        assert pump_until([loop], lambda: {m[1] for m in app.msgs} >= want, timeout=30), \
            f"missing reports for {sorted(want - {m[1] for m in app.msgs})}"
        _assert_strictly_increasing([m[0] for m in app.msgs])
        assert ini.logged_on
    finally:
        loop.close()
        proc.kill()
        proc.wait()


def test_initiator_killed_with_sigkill_restarts_without_reusing_sequence_numbers(tmp_path):
    loop = EventLoop(tick=0.02)
    app = RecordingExecApp()
    acc = Session(acceptor_config(), FileStore(tmp_path / "acc"), app, DD,
                  MessageLog(tmp_path / "acc" / "messages.log"), now=time.time())
    loop.add_acceptor_session(acc)
    port = loop.listen("127.0.0.1", 0)
    stop = threading.Event()
    th = threading.Thread(target=loop.run, args=(stop.is_set,), daemon=True)
    th.start()
    procs = []
    try:
        p = _spawn("initiator", port, tmp_path / "ini", "--first", "0", "--count", "100000")
        procs.append(p)
        sent = []
        while len(sent) < 40:
            line = p.stdout.readline()
            assert line, "initiator died"
            sent.append(line.split()[2])
        p.send_signal(signal.SIGKILL)
        p.wait()
        p = _spawn("initiator", port, tmp_path / "ini", "--first", "1000", "--count", "20")
        procs.append(p)
        want = {f"C{k}".encode() for k in range(1000, 1020)} | {s.encode() for s in sent}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not want <= {o[1] for o in list(app.orders)}:
            time.sleep(0.05)
        got = list(app.orders)
        assert want <= {o[1] for o in got}, f"missing {sorted(want - {o[1] for o in got})[:10]}"
        _assert_strictly_increasing([o[0] for o in got])
        ids = [o[1] for o in got]
        assert len(ids) == len(set(ids)), "an order was delivered twice"
        log = (tmp_path / "acc" / "messages.log").read_bytes()
        assert b"MsgSeqNum too low" not in log
    finally:
        stop.set()
        th.join(5)
        loop.close()
        for p in procs:
            p.kill()
            p.wait()


def test_clean_restart_of_both_sides_continues_sequence_numbers(tmp_path):
    loop = EventLoop(tick=0.02)
    acc = Session(acceptor_config(), FileStore(tmp_path / "acc"), RecordingExecApp(), DD, now=time.time())
    loop.add_acceptor_session(acc)
    port = loop.listen("127.0.0.1", 0)
    app = Recorder()
    ini = Session(initiator_config(), FileStore(tmp_path / "ini"), app, DD, now=time.time())
    loop.add_initiator(ini, "127.0.0.1", port, reconnect_interval=0.1)
    try:
        assert pump_until([loop], lambda: ini.logged_on)
        ini.send_app(b"D", order_body("A", time.time()))
        loop.flush_session(ini)
        assert pump_until([loop], lambda: len(app.msgs) == 1)
        loop.flush_session(ini, ini.logout("end of day"))
        assert pump_until([loop], lambda: not ini.connected_flag and not acc.connected_flag, timeout=5)
        before = (ini.store.next_sender, ini.store.next_target)
        ini.store.close()
        ini2 = Session(initiator_config(), FileStore(tmp_path / "ini"), app, DD, now=time.time())
        assert (ini2.store.next_sender, ini2.store.next_target) == before
        loop.initiators.clear()
        loop.add_initiator(ini2, "127.0.0.1", port, reconnect_interval=0.1)
        assert pump_until([loop], lambda: ini2.logged_on)
        ini2.send_app(b"D", order_body("B", time.time()))
        loop.flush_session(ini2)
        assert pump_until([loop], lambda: len(app.msgs) == 2)
        _assert_strictly_increasing([m[0] for m in app.msgs])
        assert [o[1] for o in acc.app.orders] == [b"A", b"B"]
    finally:
        loop.close()
