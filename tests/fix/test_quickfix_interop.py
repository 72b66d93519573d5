"""Interop with the real QuickFIX engine (the ``quickfix`` package, its own data dictionaries and
default validation), FIX 4.2 and 4.4, in both roles:

- QuickFIX as initiator against ``appliance fix exchange`` (a subprocess): orders, fills,
  replaces, cancels, status; the exchange killed with SIGKILL while QuickFIX queues an order,
  restarted on its store: the order arrives once, by resend;
- QuickFIX as acceptor for ``appliance fix gateway`` (a subprocess, real rings): the same flow
  from the engine's side; the gateway killed with SIGKILL while the venue sends a fill: the fill
  arrives by resend after the restart and the working orders are reconciled.

No Reject (35=3) or BusinessMessageReject (35=j) in either direction."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest

pytest.importorskip("quickfix")

from appliance.transport import records as R  # noqa: E402
from tests.fix.helpers import VENUE_TOML, free_port  # noqa: E402
from tests.fix.test_gateway_recovery import Engine  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SPEC = Path(sys.prefix) / "share" / "quickfix"
VERSIONS = ("FIX.4.2", "FIX.4.4")


def _settings(path: Path, role: str, port: int, sessions, store: Path) -> Path:
    lines = ["[DEFAULT]", f"ConnectionType={role}", "ReconnectInterval=1", f"FileStorePath={store}",
             "StartTime=00:00:00", "EndTime=00:00:00", "UseDataDictionary=Y", "HeartBtInt=30",
             "ValidateUserDefinedFields=Y"]
    if role == "initiator":
        lines += ["SocketConnectHost=127.0.0.1", f"SocketConnectPort={port}"]
    else:
        lines += [f"SocketAcceptPort={port}", "SocketReuseAddress=Y"]
    for bs, sender, target in sessions:
        lines += ["[SESSION]", f"BeginString={bs}", f"SenderCompID={sender}", f"TargetCompID={target}",
                  f"DataDictionary={SPEC / ('FIX' + bs[4] + bs[6] + '.xml')}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def _utc() -> str:
    t = time.time()
    return time.strftime("%Y%m%d-%H:%M:%S", time.gmtime(t)) + ".%03d" % (int(t * 1000) % 1000)


class Peer:
    """The QuickFIX process (tests/fix/qf_peer.py) and what it reported."""

    def __init__(self, role: str, settings: Path, sessions):
        self.sessions = [list(x) for x in sessions]
        self.names = [f"{b}:{s}->{t}" for b, s, t in sessions]
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.fix.qf_peer", role, str(settings),
                                      json.dumps(self.sessions)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lock = threading.Lock()
        self.logged_on = set()
        self.app_in = []          # (session string, msg type, {tag: value})
        self.types_in = []
        self.types_out = []
        self.ready = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        assert self.ready.wait(60), f"QuickFIX peer did not start: {self.proc.stderr.read()[-2000:]}"

    def _read(self):
        for line in self.proc.stdout:
            ev = json.loads(line)
            with self.lock:
                k = ev["ev"]
                if k == "ready":
                    self.ready.set()
                elif k == "logon":
                    self.logged_on.add(ev["sid"])
                elif k == "logout":
                    self.logged_on.discard(ev["sid"])
                elif k == "type":
                    (self.types_in if ev["dir"] == "in" else self.types_out).append(ev["mt"])
                elif k == "in":
                    self.app_in.append((ev["sid"], ev["mt"], {int(t): v for t, v in ev["f"].items()}))

    def _cmd(self, **c):
        self.proc.stdin.write(json.dumps(c) + "\n")
        self.proc.stdin.flush()

    def send(self, i: int, mt: str, fields):
        self._cmd(cmd="send", sid=i, mt=mt, fields=[[t, str(v)] for t, v in fields])

    def fill(self, i: int, clord: str):
        self._cmd(cmd="fill", sid=i, clord=clord)

    def rejects(self):
        with self.lock:
            return [t for t in self.types_in + self.types_out if t in ("3", "j")]

    def wait(self, pred, timeout=60.0, what="condition"):
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                if pred():
                    return
            assert self.proc.poll() is None, f"QuickFIX peer died: {self.proc.stderr.read()[-2000:]}"
            time.sleep(0.01)
        raise AssertionError(f"QuickFIX side: timed out waiting for {what}; received {self.app_in[-10:]}")

    def stop(self):
        if self.proc.poll() is None:
            try:
                self._cmd(cmd="stop")
                self.proc.wait(15)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


# ---- QuickFIX initiator -> appliance fix exchange -----------------------------------------------
def _exchange_config(tmp_path: Path, port: int) -> Path:
    cfg = tmp_path / "exchange.toml"
    cfg.write_text(f"""
[appliance]
state_dir = "{tmp_path}/state"
{VENUE_TOML}
[fix.sessions.qf44]
host = "127.0.0.1"
port = {port}
begin_string = "FIX.4.4"
sender_comp_id = "QF44"
target_comp_id = "SIMEX"
venue = "binance"

[fix.sessions.qf42]
session_index = 1
host = "127.0.0.1"
port = {port}
begin_string = "FIX.4.2"
sender_comp_id = "QF42"
target_comp_id = "SIMEX"
venue = "binance"
""")
    return cfg


def _start_exchange(cfg: Path, port: int, store: Path):
    p = subprocess.Popen([sys.executable, "-m", "appliance.cli", "--config", str(cfg), "fix", "exchange",
                          "--port", str(port), "--ref", "BTCUSDT=100.00", "--store", str(store)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    assert line.startswith("listening"), f"exchange did not start: {line!r} {p.stderr.read()[-2000:]}"
    return p


def _order(bs, clord, side, px, qty="1.5"):
    f = [(11, clord), (55, "BTCUSDT"), (54, side), (38, qty), (40, "2"), (44, px), (59, "1"), (60, _utc())]
    if bs == "FIX.4.2":
        f.append((21, "1"))
    return f


def test_quickfix_initiator_trades_with_the_exchange_in_4_2_and_4_4_and_recovers_after_sigkill(tmp_path):
    port = free_port()
    cfg = _exchange_config(tmp_path, port)
    ex = _start_exchange(cfg, port, tmp_path / "exstore")
    sessions = [("FIX.4.4", "QF44", "SIMEX"), ("FIX.4.2", "QF42", "SIMEX")]
    app = Peer("initiator", _settings(tmp_path / "qf.cfg", "initiator", port, sessions, tmp_path / "qfstore"),
               sessions)
    sids = {bs: i for i, (bs, _, _) in enumerate(sessions)}
    names = {bs: n for (bs, _, _), n in zip(sessions, app.names)}
    try:
        app.wait(lambda: len(app.logged_on) == 2, what="both logons")

        def reports(bs, clord):
            return [f for s, mt, f in app.app_in if s == names[bs] and mt == "8" and f.get(11) == clord]

        for bs in VERSIONS:
            sid = sids[bs]
            v = bs[-1]
            app.send(sid, "D", _order(bs, f"R{v}", "1", "99.00"))          # rests
            app.send(sid, "D", _order(bs, f"X{v}", "1", "101.00"))         # crosses: fills at 100
            app.wait(lambda: len(reports(bs, f"X{v}")) == 2, what=f"{bs} fill")
            new, fill = reports(bs, f"X{v}")
            assert new[150] == "0" and fill[39] == "2" and Decimal(fill[31]) == 100 \
                and Decimal(fill[32]) == Decimal("1.5")
            assert fill[150] == ("2" if bs == "FIX.4.2" else "F")
            if bs == "FIX.4.2":
                assert new[20] == "0" and fill[20] == "0"
            app.send(sid, "G", [(41, f"R{v}"), (11, f"R{v}b"), (55, "BTCUSDT"), (54, "1"), (38, "2"),
                                (40, "2"), (44, "98.00"), (60, _utc())] + ([(21, "1")] if bs == "FIX.4.2" else []))
            app.wait(lambda: reports(bs, f"R{v}b"), what=f"{bs} replace")
            assert reports(bs, f"R{v}b")[0][150] == "5" and Decimal(reports(bs, f"R{v}b")[0][44]) == 98
            app.send(sid, "H", [(11, f"R{v}b"), (55, "BTCUSDT"), (54, "1")])
            app.wait(lambda: len(reports(bs, f"R{v}b")) == 2, what=f"{bs} status")
            st = reports(bs, f"R{v}b")[1]
            assert st[39] == "0" and (st[20] == "3" if bs == "FIX.4.2" else st[150] == "I")
            app.send(sid, "F", [(41, f"R{v}b"), (11, f"C{v}"), (55, "BTCUSDT"), (54, "1"), (38, "2"),
                                (60, _utc())])
            app.wait(lambda: reports(bs, f"C{v}"), what=f"{bs} cancel")
            assert reports(bs, f"C{v}")[0][150] == "4" and reports(bs, f"C{v}")[0][39] == "4"
        # the exchange dies; QuickFIX keeps (and numbers) what it sends meanwhile
        ex.send_signal(signal.SIGKILL)
        ex.wait()
        app.wait(lambda: not app.logged_on, what="logouts")
        for bs in VERSIONS:
            app.send(sids[bs], "D", _order(bs, f"Q{bs[-1]}", "2", "150.00"))
        ex = _start_exchange(cfg, port, tmp_path / "exstore")
        app.wait(lambda: len(app.logged_on) == 2, timeout=90, what="logons after the restart")
        for bs in VERSIONS:
            app.wait(lambda: len(reports(bs, f"Q{bs[-1]}")) >= 1, what=f"{bs} resent order")
        time.sleep(0.5)
        for bs in VERSIONS:
            got = reports(bs, f"Q{bs[-1]}")
            assert [f[150] for f in got if f[150] == "0"] == ["0"], got      # acknowledged once
        assert app.rejects() == []
        assert "2" in app.types_in or "2" in app.types_out      # the gap went through a ResendRequest
    finally:
        app.stop()
        ex.send_signal(signal.SIGTERM)
        try:
            ex.wait(15)
        except subprocess.TimeoutExpired:
            ex.kill()


# ---- appliance fix gateway -> QuickFIX acceptor -------------------------------------------------
def _gateway_config(tmp_path, shm_dir, port, bs):
    cfg = tmp_path / f"gw{bs[-1]}.toml"
    cfg.write_text(f"""
[appliance]
shm_dir = "{shm_dir}"
state_dir = "{tmp_path}/state"
[wait]
strategy = "backoff"
backoff_max_ns = 200000
{VENUE_TOML}
[fix.sessions.t]
host = "127.0.0.1"
port = {port}
begin_string = "{bs}"
sender_comp_id = "APPLIANCE"
target_comp_id = "VENUE{bs[-1]}"
reconnect_min_ms = 100
reconnect_max_ms = 1000
venue = "binance"
""")
    return cfg


def _spawn_gateway(cfg, shm_dir):
    env = dict(os.environ, APPLIANCE_SHM_DIR=str(shm_dir))
    return subprocess.Popen([sys.executable, "-m", "appliance.cli", "--config", str(cfg), "fix", "gateway",
                             "--session", "t"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.mark.parametrize("bs", VERSIONS)
def test_gateway_trades_with_a_quickfix_acceptor_and_recovers_a_fill_sent_while_it_was_killed(
        bs, shm_dir, tmp_path):
    port = free_port()
    sessions = [(bs, f"VENUE{bs[-1]}", "APPLIANCE")]
    venue = Peer("acceptor", _settings(tmp_path / "qf.cfg", "acceptor", port, sessions, tmp_path / "qfstore"),
                 sessions)
    cfg = _gateway_config(tmp_path, shm_dir, port, bs)
    e = Engine(shm_dir)
    gw = _spawn_gateway(cfg, shm_dir)
    try:
        e.attach(proc=gw)
        e.wait_state(R.SESSION_RECONCILED, timeout=120)
        rest = e.new_order(9_900, qty=1500)            # 99.00 x 1.5: rests
        cross = e.new_order(10_100, qty=2000)          # 101.00: the venue fills it
        recs = e.next_records(lambda r: r["rtype"] == R.RT_FILL)
        f = recs[-1]
        assert f["clord_id"] == cross and f["last_price"] == 10_100 and f["last_qty"] == 2000
        rep = e.replace(rest, 9_800, qty=1000)
        a = e.next_records(lambda r: r["rtype"] == R.RT_ACK and r["exec_type"] == R.EXEC_REPLACED)[-1]
        assert a["clord_id"] == rep and a["orig_clord_id"] == rest and a["price"] == 9_800 and a["qty"] == 1000
        other = e.new_order(9_500, qty=1000)
        e.next_records(lambda r: r["rtype"] == R.RT_ACK and r["clord_id"] == other)
        e.clord += 1
        e.send(R.CANCEL, rtype=R.RT_CANCEL, clord_id=e.clord, orig_clord_id=other, qty=1000, side=R.SIDE_BUY)
        c = e.next_records(lambda r: r["rtype"] == R.RT_ACK and r["exec_type"] == R.EXEC_CANCELED)[-1]
        assert c["orig_clord_id"] == other and c["ord_status"] == ord("4")
        # the gateway dies; the venue fills the replaced order meanwhile (QuickFIX stores the report)
        gw.send_signal(signal.SIGKILL)
        gw.wait()
        venue.wait(lambda: not venue.logged_on, what="the venue to see the logout")
        venue.fill(0, str(rep))
        gw = _spawn_gateway(cfg, shm_dir)
        recs = e.wait_state(R.SESSION_RECONCILED, timeout=120)
        fills = [r for r in recs if r["rtype"] == R.RT_FILL]
        assert [int(r["clord_id"]) for r in fills] == [rep] and fills[0]["last_qty"] == 1000
        assert fills[0]["flags"] & R.F_POSS_DUP                  # it came by resend
        late = e.new_order(10_200, qty=1000)                      # flows again
        f = e.next_records(lambda r: r["rtype"] == R.RT_FILL)[-1]
        assert f["clord_id"] == late
        assert venue.rejects() == []
        mlog = (tmp_path / "state" / "fix" / "t" / "messages.log").read_bytes()
        assert b"|35=3|" not in mlog and b"|35=j|" not in mlog
        assert b"|35=2|" in mlog                                  # our ResendRequest for the fill
    finally:
        if gw.poll() is None:
            gw.send_signal(signal.SIGTERM)
            try:
                gw.wait(20)
            except subprocess.TimeoutExpired:
                gw.kill()
        e.close()
        venue.stop()
