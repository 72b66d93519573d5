"""kill -9 of the engine, of the FIX gateway, and of both, mid-flow, with real processes: the
engine (`appliance engine`) and the FIX gateway (`appliance fix gateway`) as subprocesses, real
shared-memory rings, FIX 4.4 over loopback TCP to the mock exchange (in this process, so every
execution it makes can be counted), a market-data feeder replaying a recorded Binance session,
optionally the recorder (`appliance recorder`).

The exchange fills our resting orders all along (a reference price moved onto our best bid,
then our best ask), including while the engine is dead; the assertions compare the engine's
ledger with what the exchange executed, and look at the order and exec rings for what went out
when."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from decimal import Decimal

import pytest

from appliance import actor
from appliance.engine import recovery
from appliance.sim import exchange as X
from appliance.sim import matching as M
from appliance.transport import control, records, ring
from tests.configs import instruments_toml
from tests.engine import mdsource

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

SYMBOL = "NKNUSDT"


class RecordingVenue(X.MatchingVenue):
    """The mock exchange's matching, counting every execution; ``set_reference(b"@best", side)``
    (run in the exchange's thread) puts a one-level market for a moment onto the best working
    order of that side of sessions that are logged on, which fills it (a venue does not drop executions of a
    session that is away, it reports them on reconnect; this one cannot, so it makes none)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.executions = []        # (time, clord, side, qty)

    def _render(self, rows, n, want_owner=False):
        sim = self.sim
        for j in range(n):
            rt = int(rows[j][8])
            if rt != records.RT_FILL:
                continue
            rec = rows[j].view(records.RECORD_DTYPES[rt])[0]
            si = int(rec["session"])
            r = M.find(sim, si, int(rec["clord_id"]))
            if r < 0:
                continue
            ins = self.by_k[int(sim.orders[r, M.O_INS])]
            side = b"1" if int(sim.orders[r, M.O_SIDE]) == records.SIDE_BUY else b"2"
            self.executions.append((time.monotonic(), self._ids(si).name(int(rec["clord_id"])),
                                    side, ins.qty(int(rec["last_qty"]))))
        return super()._render(rows, n, want_owner)

    def _working(self, logged_on_only: bool = False) -> list:
        """(session, row) of every working order (of sessions logged on)."""
        for _ in range(100):
            try:
                owners = list(self.owners.items())
                break
            except RuntimeError:          # changed while copied: the exchange thread is busy
                continue
        else:
            raise AssertionError("could not read the exchange's sessions")
        return [(si, r) for si, owner in owners
                if not logged_on_only or (owner is not None and owner.logged_on)
                for r in self.working_rows(si)]

    def set_reference(self, symbol, price):
        if symbol != b"@best":
            return super().set_reference(symbol, price)
        buy = price == 1
        mine = [r for _si, r in self._working(logged_on_only=True)
                if (int(self.sim.orders[r, M.O_SIDE]) == records.SIDE_BUY) == buy]
        if not mine:
            return []
        px = (max if buy else min)(int(self.sim.orders[r, M.O_PRICE]) for r in mine)
        best = next(r for r in mine if int(self.sim.orders[r, M.O_PRICE]) == px)
        ins = self.by_k[int(self.sim.orders[best, M.O_INS])]
        out = super().set_reference(ins.symbol, ins.px(px))
        M.clear_book(self.sim, ins.k)          # a moment's market: later quotes rest again
        M.set_valid(self.sim, ins.k, False)
        return out

    def working(self) -> set:
        return {int(self._ids(si).name(int(self.sim.orders[r, M.O_CLORD])))
                for si, r in self._working()}

    def net(self) -> tuple[int, int]:
        """(fills, net lots bought) the exchange executed."""
        lots = 0
        for _t, _c, side, q in list(self.executions):
            n = int(q * Decimal(10**8))
            lots += n if side == b"1" else -n
        return len(self.executions), lots


class Rig:
    def __init__(self, tmp_path, shm_dir, *, exec_capacity=1 << 16, risk_extra="", recorder=False,
                 ack_timeout_ms=3000):
        self.tmp, self.shm = tmp_path, shm_dir
        self.state = tmp_path / "state"
        self.journal = tmp_path / "journal"
        self.venue = RecordingVenue()
        self.srv = X.ExchangeServer([("FIX.4.4", "SIMEX", "APPLIANCE")], venue=self.venue,
                                    store_dir=str(tmp_path / "venue")).start()
        self.recs, syms = mdsource.recorded("binance")
        self.cfg = tmp_path / "appliance.toml"
        self.cfg.write_text(f"""
[appliance]
shm_dir = "{shm_dir}"
state_dir = "{self.state}"
journal_dir = "{self.journal}"
[rings]
order_capacity = 65536
exec_capacity = {exec_capacity}
[wait]
strategy = "backoff"
backoff_max_ns = 200000
[engine]
max_iters = 256
snapshot_ms = 50
ack_timeout_ms = {ack_timeout_ms}
[risk]
reset_utc = ""
{risk_extra}
[risk.limits]
max_qty = 100000000000000
max_notional = 1000000.0
max_position = 100000000000000
max_open_orders = 8
collar_bps = 500
max_spread_ticks = 100000000
[risk.venues.binance]
rate_per_s = 1000
burst = 1000
check_balance = false
[[venues]]
name = "binance"
{instruments_toml("binance", syms)}
[[strategies]]
kind = "avellaneda_stoikov"
name = "mm"
venue = "binance"
symbol = "{SYMBOL}"
params = {{ qty = 50000000000, max_inventory = 10000000000000, levels = 1, warmup_events = 5, price_unit = 10000.0, requote_ticks = 2000, min_half_spread = 0.5 }}
[fix.sessions.t]
host = "127.0.0.1"
port = {self.srv.port}
sender_comp_id = "APPLIANCE"
target_comp_id = "SIMEX"
venue = "binance"
exec_ring = "exec"
reconnect_min_ms = 50
reconnect_max_ms = 500
reconcile_timeout_s = 2.0
""")
        self.md = ring.RingWriter.create("md.binance", records.MD_RECORD_SIZE, 1 << 16, str(shm_dir))
        self.procs: dict[str, subprocess.Popen] = {}
        self.runs: dict[str, int] = {}
        self.stop = threading.Event()
        self.filling = threading.Event()
        self.threads = [threading.Thread(target=self._feed, daemon=True),
                        threading.Thread(target=self._fill, daemon=True)]
        for t in self.threads:
            t.start()
        if recorder:
            self.spawn("recorder", "recorder", "--rings", "exec", "--flush-ms", "20")

    # -- the world around the actors ---------------------------------------------------------
    def _feed(self):
        while not self.stop.is_set():
            for k in range(self.recs.shape[0]):
                ring.publish(self.md.hdr, self.md.data, self.recs[k])
            time.sleep(0.1)

    def _fill(self):
        sides = (1, 1, 2)                 # buy, buy, sell: the position moves, both ways
        k = 0
        while not self.stop.is_set():
            if self.filling.is_set():
                self.srv.set_reference(b"@best", sides[k % 3])
                k += 1
            time.sleep(0.15)

    # -- processes ----------------------------------------------------------------------------
    def spawn(self, name, *args):
        n = self.runs.get(name, 0) + 1
        self.runs[name] = n
        log = open(self.tmp / f"{name}.{n}.log", "w")
        env = dict(os.environ, APPLIANCE_SHM_DIR=str(self.shm))
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "appliance.cli", "--config", str(self.cfg), *args],
            stdout=log, stderr=subprocess.STDOUT, env=env)
        return self.procs[name]

    def engine(self):
        return self.spawn("engine", "engine", "--wait-rings", "300")

    def gateway(self):
        return self.spawn("gateway", "fix", "gateway", "--session", "t")

    def kill9(self, name):
        p = self.procs.pop(name)
        p.send_signal(signal.SIGKILL)
        p.wait(30)

    def terminate(self, name):
        p = self.procs.pop(name)
        p.send_signal(signal.SIGTERM)
        assert p.wait(60) == 0, self.log(name)

    def order_head(self) -> int:
        r = ring.RingReader.attach("orders", consumer="test", shm_dir=str(self.shm))
        try:
            return int(ring.head(r.hdr))
        finally:
            r.close()

    def log(self, name) -> str:
        return (self.tmp / f"{name}.{self.runs[name]}.log").read_text()[-6000:]

    def status(self) -> dict:
        return actor.read_status(self.state, "engine") or {}

    def wait(self, pred, what, timeout=300.0):
        deadline = time.monotonic() + timeout
        while not pred():
            for name, p in self.procs.items():
                assert p.poll() is None, f"{name} exited ({p.returncode}):\n{self.log(name)}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}; engine status " \
                                                f"{self.status().get('recovery')}"
            time.sleep(0.1)

    def wait_up(self, timeout=600.0):
        """The (re)started engine is live and every session answered its reconcile request."""
        pid = self.procs["engine"].pid
        self.wait(lambda: self.status().get("pid") == pid and self.status().get("live")
                  and self.status().get("recovery", {}).get("state") in ("done", "refused"),
                  "the engine to recover and reconcile", timeout)
        return self.status()

    def ledger(self, st=None) -> tuple[int, int]:
        """(fills, net lots) of the engine's ledger in SYMBOL, from its status file."""
        st = st or self.status()
        p = [x for x in st.get("positions", []) if x["instrument"] == f"binance:{SYMBOL}"]
        return (p[0]["fills"], p[0]["position"]) if p else (0, 0)

    def rings(self):
        """Every record on the order ring and the exec ring so far."""
        out = []
        for name in ("orders", "exec"):
            r = ring.RingReader.attach(name, consumer="test", start=ring.START_OLDEST,
                                       shm_dir=str(self.shm))
            try:
                out.append(mdsource.order_records(r.hdr, r.data))
            finally:
                r.close()
        return out

    def close(self):
        self.stop.set()
        self.filling.clear()
        for t in self.threads:
            t.join(5)
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.srv.stop()
        self.md.close()


@pytest.fixture
def rig_factory(tmp_path, shm_dir):
    made = []

    def make(**kw):
        r = Rig(tmp_path, shm_dir, **kw)
        made.append(r)
        return r
    yield make
    for r in made:
        r.close()


def _trade_until(rig, n_fills, what):
    rig.filling.set()
    have = rig.venue.net()[0]
    rig.wait(lambda: rig.venue.net()[0] >= have + n_fills and rig.venue.working(), what, 300)


def _working_at_kill(rig):
    """Filling paused until an order is working (the filler may have just filled the last one),
    so an actor killed now leaves orders at the exchange. Returns them; filling stays paused."""
    rig.filling.clear()
    time.sleep(0.5)                       # a fill command already queued in the exchange
    rig.wait(lambda: rig.venue.working(), "an order working at the exchange", 60)
    return rig.venue.working()


def _kill_engine_leaving_orders(rig, attempts=5):
    """kill -9 of the engine at a moment it has orders working, and filling paused. Returns
    the orders working at the exchange once what the engine published before it died has
    reached the exchange. The engine pulls both quotes now and then (a book resync when the
    replayed session starts over) and sends the new ones a moment later: killed in between,
    nothing rests at the exchange and nothing can fill while it is dead, so it is started again
    and killed again."""
    for _ in range(attempts):
        _working_at_kill(rig)
        rig.kill9("engine")
        time.sleep(1.0)                   # the gateway forwards what the engine published
        at_kill = rig.venue.working()
        if at_kill:
            return at_kill
        print("the engine died with nothing working at the exchange: started and killed again")
        rig.engine()
        rig.wait_up()
    raise AssertionError(f"the engine left nothing working at the exchange in {attempts} kills")


def _settle(rig):
    """Stop filling; the engine's ledger must come to equal what the exchange executed."""
    rig.filling.clear()
    time.sleep(0.5)                       # a fill command already queued in the exchange
    rig.wait(lambda: rig.ledger() == rig.venue.net(),
             f"the engine's ledger {rig.ledger()} to equal the exchange's fills "
             f"{rig.venue.net()}", 60)


def _orderly_stop_leaves_nothing_working(rig):
    """SIGTERM: the engine cancels every order it knows. Nothing may stay working at the
    exchange: an order the engine did not know would."""
    rig.terminate("engine")
    rig.wait(lambda: not rig.venue.working(), "every order at the exchange to be cancelled", 60)
    snap = recovery.load(recovery.snapshot_path(rig.state))
    assert snap is not None


def _after_restart(rig, order_head):
    """Order records after ``order_head``: the restarted engine's RT_RECONCILE request comes
    first, and no NEW_ORDER / REPLACE is published before the gateway's SESSION_RECONCILED that
    answers it (publish TSCs: one clock on this host)."""
    orders, execs = rig.rings()
    mine = orders[order_head:]
    assert mine and int(mine[0][8]) == records.RT_RECONCILE
    rid = int(mine[0].view(records.RECONCILE)[0]["clord_id"])
    answers = [r for r in execs if int(r[8]) == records.RT_SESSION
               and r.view(records.SESSION)[0]["state"] == records.SESSION_RECONCILED
               and int(r.view(records.SESSION)[0]["reconcile_id"]) == rid]
    assert answers, "no SESSION_RECONCILED answered the engine's request"
    t_ok = int(answers[0].view(records.SESSION)[0]["publish_tsc"])
    new = [r for r in mine if int(r[8]) in (records.RT_NEW_ORDER, records.RT_REPLACE)]
    early = [int(r.view(records.HEADER)[0]["publish_tsc"]) for r in new
             if int(r.view(records.HEADER)[0]["publish_tsc"]) < t_ok]
    assert not early, f"{len(early)} orders went out before SESSION_RECONCILED"
    return new


def test_engine_killed_with_sigkill_restarts_with_the_exchanges_positions(rig_factory):
    rig = rig_factory()
    rig.gateway()
    rig.engine()
    rig.wait_up()
    _trade_until(rig, 12, "fills while the engine trades")
    at_kill = _kill_engine_leaving_orders(rig)
    t_kill = time.monotonic()
    rig.filling.set()                     # the exchange fills what the dead engine left working
    head = rig.order_head()
    rig.wait(lambda: any(t > t_kill for t, *_ in rig.venue.executions),
             "a fill of a resting order while the engine is dead", 60)
    dead_fills = sum(1 for t, *_ in rig.venue.executions if t > t_kill)
    rig.engine()
    st = rig.wait_up()
    rec = st["recovery"]
    assert rec["state"] == "done" and not rec["problems"]
    assert rec["replayed_fills"] >= dead_fills >= 1
    # every order that was working when the engine died is gone (cancelled, or filled)
    assert not (at_kill & rig.venue.working())
    _trade_until(rig, 6, "fills after the restart")
    assert _after_restart(rig, head), "no order after the restart"
    _settle(rig)
    fills, lots = rig.venue.net()
    print(f"engine kill -9: exchange {fills} fills, net {lots} lots; engine ledger "
          f"{rig.ledger()}; {dead_fills} while dead, replayed {rec['replayed_fills']}")
    _orderly_stop_leaves_nothing_working(rig)


def test_gateway_killed_with_sigkill_engine_keeps_the_exchanges_positions(rig_factory):
    # requests in flight when the gateway dies stay unanswered until it is back (a few seconds
    # here, to start a Python process): longer than ack_timeout_ms would pause the engine (by
    # design, until the breaker's reset), so it is longer than that here
    rig = rig_factory(ack_timeout_ms=60000)
    rig.gateway()
    rig.engine()
    rig.wait_up()
    _trade_until(rig, 8, "fills before the gateway dies")
    rig.kill9("gateway")
    time.sleep(1.0)                       # the engine goes on deciding; nothing reaches the venue
    rig.gateway()
    _trade_until(rig, 8, "fills after the gateway restarted")
    _settle(rig)
    st = rig.status()
    assert st["md_resyncs"].get("exec", 0) >= 1            # it saw the writer restart
    assert st["recovery"]["state"] == "done"
    fills, lots = rig.venue.net()
    print(f"gateway kill -9: exchange {fills} fills, net {lots} lots; engine ledger {rig.ledger()}")
    _orderly_stop_leaves_nothing_working(rig)


def test_engine_and_gateway_killed_together_restart_with_the_exchanges_positions(rig_factory):
    rig = rig_factory()
    rig.gateway()
    rig.engine()
    rig.wait_up()
    _trade_until(rig, 10, "fills before both die")
    at_kill = _working_at_kill(rig)
    rig.kill9("engine")
    rig.kill9("gateway")
    head = rig.order_head()
    rig.engine()                          # the engine first: its request waits for the gateway
    time.sleep(1.0)
    rig.gateway()
    st = rig.wait_up()
    assert st["recovery"]["state"] == "done" and not st["recovery"]["problems"]
    assert not (at_kill & rig.venue.working())
    _trade_until(rig, 6, "fills after both restarted")
    assert _after_restart(rig, head)
    _settle(rig)
    fills, lots = rig.venue.net()
    print(f"both kill -9: exchange {fills} fills, net {lots} lots; engine ledger {rig.ledger()}")
    _orderly_stop_leaves_nothing_working(rig)


def test_paused_engine_killed_with_sigkill_comes_back_paused(rig_factory):
    # any drawdown from the equity peak pauses (1e-8 USDT), reset by hand only
    rig = rig_factory(risk_extra="drawdown_pause = 0.00000001")
    rig.gateway()
    rig.engine()
    rig.wait_up()
    rig.filling.set()
    rig.wait(lambda: rig.status().get("risk", {}).get("state") == "PAUSED",
             "the drawdown breaker to pause the engine", 300)
    cause = rig.status()["risk"]["cause"]
    rig.filling.clear()
    rig.kill9("engine")
    head = rig.order_head()
    rig.engine()
    st = rig.wait_up()
    md0 = st["stats"]["batches"]
    assert st["risk"]["state"] == "PAUSED" and st["risk"]["cause"] == cause
    cb = control.ControlBlock.open(str(rig.shm))
    try:
        assert records.RISK_STATE_NAMES[int(cb.rec["risk_state"])] == "PAUSED"
    finally:
        cb.close()
    # it keeps reading the market, and sends no new order while PAUSED
    rig.wait(lambda: rig.status()["stats"]["batches"] > md0 + 500, "more book batches", 120)
    assert _after_restart(rig, head) == []
    assert rig.status()["risk"]["state"] == "PAUSED"


def test_exec_ring_lapped_while_the_engine_was_dead_is_replayed_from_the_journal(rig_factory):
    rig = rig_factory(exec_capacity=16, recorder=True)
    rig.gateway()
    rig.engine()
    rig.wait_up()
    _trade_until(rig, 6, "fills before the engine dies")
    rig.kill9("engine")
    r = ring.RingReader.attach("exec", consumer="test", shm_dir=str(rig.shm))
    start = int(ring.head(r.hdr))
    # while it is dead: fills of its resting orders, and gateway restarts (each reconciles and
    # reports), until the 16-record exec ring no longer holds what the engine had not read
    while int(ring.head(r.hdr)) - start < 40:
        rig.kill9("gateway")
        rig.gateway()
        rig.wait(lambda: rig.srv.sessions[0].logged_on, "the gateway to log on again", 300)
        time.sleep(1.0)
    r.close()
    time.sleep(0.5)                       # the recorder's last frame reaches the disk
    rig.engine()
    st = rig.wait_up()
    rec = st["recovery"]
    assert rec["state"] == "done" and not rec["problems"], rec
    assert rec["replayed"]["exec"]["journal"] > 0
    _trade_until(rig, 4, "fills after the restart")
    _settle(rig)
    fills, lots = rig.venue.net()
    print(f"journal replay: exchange {fills} fills, net {lots} lots; engine ledger "
          f"{rig.ledger()}; replayed {rec['replayed']['exec']}")
    _orderly_stop_leaves_nothing_working(rig)


def test_unprovable_restart_refuses_to_trade_until_an_operator_resets(rig_factory):
    rig = rig_factory()
    rig.gateway()
    rig.engine()
    rig.wait_up()
    _trade_until(rig, 4, "fills before the engine dies")
    rig.kill9("engine")
    recovery.snapshot_path(rig.state).unlink()          # the durable state is lost
    head = rig.order_head()
    rig.engine()
    st = rig.wait_up()
    assert st["recovery"]["state"] == "refused"
    assert "no snapshot" in st["recovery"]["problems"][0]
    out = subprocess.run([sys.executable, "-m", "appliance.cli", "--config", str(rig.cfg), "status"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "kill switch: SET" in out.stdout and "source recovery" in out.stdout
    assert "REFUSED TO TRADE" in out.stdout and "no snapshot" in out.stdout
    # the kill switch holds: the gateway cancelled what was working, nothing new went out
    rig.wait(lambda: not rig.venue.working(), "the gateway to cancel every working order", 60)
    orders, _ = rig.rings()
    assert not [r for r in orders[head:] if int(r[8]) in (records.RT_NEW_ORDER, records.RT_REPLACE)]
    # the operator checked the positions: reset, and trading resumes
    out = subprocess.run([sys.executable, "-m", "appliance.cli", "--config", str(rig.cfg), "kill",
                          "--reset", "--confirm"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rig.wait(lambda: [r for r in rig.rings()[0][head:] if int(r[8]) == records.RT_NEW_ORDER],
             "orders after the reset", 120)


def test_engine_halted_then_reset_while_stopped_trades_again_after_a_restart(rig_factory):
    # the halt is in the engine's last snapshot; the operator resets the kill switch while the
    # engine is down: the restarted engine must not stay HALTED on the snapshot's word
    rig = rig_factory()
    rig.gateway()
    rig.engine()
    rig.wait_up()
    _trade_until(rig, 2, "fills before the kill")
    rig.filling.clear()
    cli = [sys.executable, "-m", "appliance.cli", "--config", str(rig.cfg)]
    out = subprocess.run(cli + ["kill", "--reason", "test", "--timeout", "30"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    rig.wait(lambda: rig.status().get("risk", {}).get("state") == "HALTED", "the engine to halt", 60)
    rig.terminate("engine")
    out = subprocess.run(cli + ["kill", "--reset", "--confirm"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    head = rig.order_head()
    rig.engine()
    rig.wait_up()
    rig.wait(lambda: rig.status().get("risk", {}).get("state") == "RUNNING",
             "the restarted engine to resume after the reset", 120)
    rig.wait(lambda: [r for r in rig.rings()[0][head:] if int(r[8]) == records.RT_NEW_ORDER],
             "orders after the restart", 120)
