"""FIX gateway reliability: kill -9 and restart, the kill switch without the engine, venue
rejects of our messages, FIX 4.2. Real rings in shared memory, real TCP to the mock exchange."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from appliance.fix import gateway as G
from appliance.fix.dictionary import REJ_REQUIRED_MISSING, ValidationError
from appliance.fix.session import BR_UNKNOWN_SECURITY, BusinessReject
from appliance.fix.store import FileStore
from appliance.sim import exchange as X
from appliance.sim import matching as M
from appliance.transport import control, ring, wait
from appliance.transport import records as R
from tests.fix.helpers import VENUE_TOML
from tests.fix.test_gateway import INSTRUMENTS, describe

pytestmark = pytest.mark.timeout(300)


class Engine:
    """The engine's side of the rings: publishes orders, reads exec records."""

    def __init__(self, shm_dir, exec_ring="exec.t"):
        self.shm_dir = shm_dir
        self.orders = ring.RingWriter.create("orders", R.ORDER_RECORD_SIZE, 1024, shm_dir)
        self.exec_ring = exec_ring
        self.execs = None
        self.clord = 5000

    def attach(self, deadline=120.0, proc=None):
        end = time.time() + deadline
        while self.execs is None:
            try:
                self.execs = ring.RingReader.attach(self.exec_ring, "engine", "oldest", self.shm_dir)
            except Exception:
                assert time.time() < end and (proc is None or proc.poll() is None), "no exec ring"
                time.sleep(0.05)

    def next_records(self, pred, timeout=60.0):
        out = []
        rec = np.zeros(R.EXEC_RECORD_SIZE, np.uint8)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.execs.poll(rec):
                r = rec.view(R.RECORD_DTYPES[int(rec[8])])[0].copy()
                out.append(r)
                if pred(r):
                    return out
            else:
                time.sleep(0.0005)
        raise AssertionError(f"no matching exec record within {timeout}s; got {[describe(r) for r in out]}")

    def wait_state(self, state, timeout=60.0):
        return self.next_records(lambda r: r["rtype"] == R.RT_SESSION and r["state"] == state, timeout)

    def send(self, kind, **f):
        rec = np.zeros(1, kind)
        for k, v in f.items():
            rec[0][k] = v
        self.orders.publish(rec)

    def new_order(self, price, qty=5, side=R.SIDE_BUY, instrument=0):
        self.clord += 1
        self.send(R.NEW_ORDER, rtype=R.RT_NEW_ORDER, clord_id=self.clord, price=price, qty=qty, side=side,
                  ord_type=R.ORD_LIMIT, tif=R.TIF_GTC, instrument=instrument, strategy=3)
        return self.clord

    def replace(self, orig, price, qty=5, side=R.SIDE_BUY):
        self.clord += 1
        self.send(R.REPLACE, rtype=R.RT_REPLACE, clord_id=self.clord, orig_clord_id=orig, price=price,
                  qty=qty, side=side, ord_type=R.ORD_LIMIT, tif=R.TIF_GTC, strategy=3)
        return self.clord

    def close(self):
        if self.execs is not None:
            self.execs.close()
        self.orders.close()


class InProcess:
    """Gateway thread + mock exchange thread + control block, FIX 4.4 or 4.2."""

    def __init__(self, shm_dir, tmp_path, begin="FIX.4.4", validate=True, **extra):
        self.srv = X.ExchangeServer([(begin, "SIMEX", "APPLIANCE")], validate=validate,
                                    venue=X.MatchingVenue(references={"BTCUSDT": "100.00"})).start()
        table = {"host": "127.0.0.1", "port": self.srv.port, "sender_comp_id": "APPLIANCE",
                 "target_comp_id": "SIMEX", "begin_string": begin, "instruments": INSTRUMENTS,
                 "store_dir": str(tmp_path / "store"), "reconnect_min_ms": 20, "reconnect_max_ms": 200,
                 "reconcile_timeout_s": 5.0}
        table.update(extra)
        self.gcfg = G.GatewayConfig.from_table("t", table)
        G.warm(self.gcfg)                   # as the actor does: no compile once live
        self.eng = Engine(shm_dir)
        reader = ring.RingReader.attach("orders", "fix.t", "latest", shm_dir)
        self.exec_writer = ring.RingWriter.create("exec.t", R.EXEC_RECORD_SIZE, 4096, shm_dir)
        self.eng.attach()
        self.cb = control.ControlBlock.open(shm_dir)
        self.idx = self.cb.register_actor("fix.t", control.ACTOR_FIX)
        self.store = FileStore(self.gcfg.store_dir)
        wp = wait.make("backoff", spin_iterations=200, backoff_min_ns=20_000, backoff_max_ns=200_000)
        self.gw = G.Gateway(self.gcfg, reader, self.exec_writer, self.store, wait_params=wp,
                            control_words=self.cb.words, actor_index=self.idx)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.gw.run, args=(self.stop.is_set,), daemon=True)
        self.thread.start()

    def gw_kill(self):
        return self.cb.rec["gw_kill"][self.idx]

    def close(self):
        self.stop.set()
        self.thread.join(10)
        self.gw.close()
        self.srv.stop()
        self.store.close()
        self.eng.close()


@pytest.fixture(params=["FIX.4.4", "FIX.4.2"])
def inproc(request, shm_dir, tmp_path):
    h = InProcess(shm_dir, tmp_path, begin=request.param)
    yield h
    h.close()


def test_kill_flag_refuses_new_orders_cancels_working_ones_and_acks_in_the_control_block(inproc):
    h = inproc
    e = h.eng
    e.wait_state(R.SESSION_RECONCILED)
    ids = [e.new_order(9_000 + i) for i in range(3)]
    e.next_records(lambda r: r["rtype"] == R.RT_ACK and r["clord_id"] == ids[-1])
    assert h.gw.gst[G.G_OPEN] == 3
    epoch = h.cb.request_kill("test kill")
    cancelled = set()
    e.next_records(lambda r: r["rtype"] == R.RT_ACK and r["exec_type"] == R.EXEC_CANCELED
                   and cancelled.add(int(r["orig_clord_id"] or r["clord_id"])) is None and len(cancelled) == 3)
    assert cancelled == set(ids)
    deadline = time.time() + 30
    while h.cb.rec["actors"][h.idx]["kill_ack_epoch"] != epoch and time.time() < deadline:
        time.sleep(0.01)
    k = h.gw_kill()
    assert (k["seen_epoch"], k["sent_epoch"]) == (epoch, epoch)
    assert h.cb.rec["actors"][h.idx]["kill_ack_epoch"] == epoch
    assert k["done_time_ns"] > 0 and k["working"] == 0 and h.gw.gst[G.G_OPEN] == 0
    if h.gcfg.begin_string == "FIX.4.4":
        assert h.srv.venue.counts["mass_cancels"] == 1 and h.srv.venue.counts["cancels"] == 0
    else:
        assert h.srv.venue.counts["mass_cancels"] == 0 and h.srv.venue.counts["cancels"] == 3
    late = e.new_order(9_500)                        # the flag is still set: refused, never sent
    rj = e.next_records(lambda r: r["rtype"] == R.RT_REJECT)[-1]
    assert rj["clord_id"] == late and rj["reason"] == G.RJ_KILLED
    assert h.srv.venue.counts["orders"] == 3
    assert h.srv.sessions[0].rejects_sent == 0       # every message was valid for the venue's dialect


def test_fix42_mass_cancel_record_goes_out_as_one_cancel_per_order(shm_dir, tmp_path):
    h = InProcess(shm_dir, tmp_path, begin="FIX.4.2")
    try:
        e = h.eng
        e.wait_state(R.SESSION_RECONCILED)
        ids = [e.new_order(9_000 + i) for i in range(2)] + [e.new_order(80_000, instrument=1, side=R.SIDE_SELL)]
        e.next_records(lambda r: r["rtype"] == R.RT_ACK and r["clord_id"] == ids[-1])
        e.send(R.MASS_CANCEL, rtype=R.RT_MASS_CANCEL, clord_id=1, scope=1, instrument=0)
        got = set()
        e.next_records(lambda r: r["rtype"] == R.RT_ACK and r["exec_type"] == R.EXEC_CANCELED
                       and got.add(int(r["orig_clord_id"])) is None and len(got) == 2)
        assert got == set(ids[:2]) and h.gw.gst[G.G_OPEN] == 1
        assert h.srv.venue.counts["cancels"] == 2 and h.srv.sessions[0].rejects_sent == 0
    finally:
        h.close()


def test_engine_reconcile_request_confirms_orders_and_cancels_unknown_working_ones(shm_dir, tmp_path):
    from decimal import Decimal
    h = InProcess(shm_dir, tmp_path)
    try:
        e = h.eng
        e.wait_state(R.SESSION_RECONCILED)
        assert h.gw.counters["mass_status_requests"] == 1          # at logon (nothing working)
        ids = [e.new_order(9_000 + i) for i in range(2)]
        e.next_records(lambda r: r["rtype"] == R.RT_ACK and r["clord_id"] == ids[-1])
        # an order at the venue on our session that this gateway never sent (e.g. its state lost)
        srv_session = h.srv.sessions[0]
        stray = X.Order("O999", b"999", b"BTCUSDT", b"2", b"2", b"1", Decimal(2), Decimal("120.00"),
                        owner=srv_session)
        h.srv.venue.orders[b"999"] = stray
        e.send(R.RECONCILE, rtype=R.RT_RECONCILE, session=0, reason=R.RECONCILE_CONFIRM)
        recs = e.wait_state(R.SESSION_RECONCILED)
        up = [i for i, r in enumerate(recs) if r["rtype"] == R.RT_SESSION and r["state"] == R.SESSION_UP]
        assert up, "no SESSION_UP before RECONCILED"
        statuses = {int(r["clord_id"]) for r in recs[up[-1]:] if r["rtype"] == R.RT_ACK
                    and r["exec_type"] == R.EXEC_ORDER_STATUS}
        assert set(ids) <= statuses
        cx = e.next_records(lambda r: r["rtype"] == R.RT_ACK and r["exec_type"] == R.EXEC_CANCELED)[-1]
        assert cx["orig_clord_id"] == 999 and int(cx["clord_id"]) & G.GW_ID_BIT
        assert stray.status == b"4" and h.gw.counters["unknown_cancels"] == 1
        assert all(h.srv.venue.orders[b"%d" % i].working for i in ids)     # ours stay working
        assert h.gw.gst[G.G_OPEN] == 2 and h.srv.sessions[0].rejects_sent == 0
        late = e.new_order(10_500)                                         # and trading goes on
        f = e.next_records(lambda r: r["rtype"] == R.RT_FILL)[-1]
        assert f["clord_id"] == late
    finally:
        h.close()


def test_venue_session_reject_and_business_reject_of_our_orders_become_reject_records(shm_dir, tmp_path):
    h = InProcess(shm_dir, tmp_path)
    try:
        e = h.eng
        e.wait_state(R.SESSION_RECONCILED)
        srv = h.srv.sessions[0]
        real_dd = srv.dd                            # shared by every session of the process: wrap it

        class VenueRules:                           # the venue wants Account (1) on ETH orders
            def validate(self, msg):
                if msg.msg_type == b"D" and msg.get(55) == b"ETHUSDT":
                    return ValidationError(REJ_REQUIRED_MISSING, 1)
                return real_dd.validate(msg)

            def __getattr__(self, name):
                return getattr(real_dd, name)
        srv.dd = VenueRules()
        real_app = h.srv.app.on_app_message

        def on_app(session, msg):                   # and refuses replaces of BTC at 91.00
            if msg.msg_type == b"G" and msg.get(44) == b"91.00":
                raise BusinessReject(BR_UNKNOWN_SECURITY, "no replace today")
            return real_app(session, msg)
        h.srv.app.on_app_message = on_app
        eth = e.new_order(80_000, instrument=1, side=R.SIDE_SELL)
        rj = e.next_records(lambda r: r["rtype"] == R.RT_REJECT)[-1]
        assert rj["clord_id"] == eth and rj["reason"] == G.RJ_SESSION_REJECT and rj["is_cancel_reject"] == 0
        assert rj["instrument"] == 1 and rj["ord_status"] == R.EXEC_REJECTED
        assert rj["text"].startswith(b"Required tag missing")
        btc = e.new_order(9_000)
        e.next_records(lambda r: r["rtype"] == R.RT_ACK and r["clord_id"] == btc)
        rep = e.replace(btc, 9_100)
        rj = e.next_records(lambda r: r["rtype"] == R.RT_REJECT)[-1]
        assert rj["clord_id"] == rep and rj["orig_clord_id"] == btc and rj["is_cancel_reject"] == 1
        assert rj["reason"] == G.RJ_BUSINESS_REJECT and rj["text"] == b"no replace today"
        assert h.gw.gst[G.G_OPEN] == 1                 # only btc is working
        assert h.gw.counters["session_rejects"] == 1 and h.gw.counters["business_rejects"] == 1
    finally:
        h.close()


# ---- kill -9 of the gateway process --------------------------------------------------------------
def _config(tmp_path, shm_dir, port, begin="FIX.4.4"):
    cfg = tmp_path / "appliance.toml"
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
sender_comp_id = "APPLIANCE"
target_comp_id = "SIMEX"
begin_string = "{begin}"
reconnect_min_ms = 50
reconnect_max_ms = 500
venue = "binance"
""")
    return cfg


def _spawn_gateway(cfg, shm_dir):
    env = dict(os.environ, APPLIANCE_SHM_DIR=str(shm_dir))
    return subprocess.Popen([sys.executable, "-m", "appliance.cli", "--config", str(cfg), "fix", "gateway",
                             "--session", "t"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_gateway_killed_with_sigkill_reconciles_its_orders_and_rejects_what_came_while_down(shm_dir, tmp_path):
    srv = X.ExchangeServer([("FIX.4.4", "SIMEX", "APPLIANCE")], store_dir=str(tmp_path / "venue"),
                           venue=X.MatchingVenue(references={"BTCUSDT": "100.00"})).start()
    cfg = _config(tmp_path, shm_dir, srv.port)
    e = Engine(shm_dir)
    gw = _spawn_gateway(cfg, shm_dir)
    try:
        e.attach(proc=gw)
        e.wait_state(R.SESSION_RECONCILED, timeout=120)
        ids = [e.new_order(9_000 + i) for i in range(3)]
        e.next_records(lambda r: r["rtype"] == R.RT_ACK and r["clord_id"] == ids[-1])
        gw.send_signal(signal.SIGKILL)
        gw.wait()
        rep = e.replace(ids[0], 9_100)                  # while the gateway is dead
        new = e.new_order(9_200)
        gw = _spawn_gateway(cfg, shm_dir)
        recs = e.wait_state(R.SESSION_RECONCILED, timeout=120)
        rj = {int(r["clord_id"]): r for r in recs if r["rtype"] == R.RT_REJECT}
        assert set(rj) == {rep, new}, [describe(r) for r in recs]
        assert all(r["reason"] == G.RJ_NOT_READY for r in rj.values())
        assert rj[rep]["is_cancel_reject"] == 1 and rj[rep]["orig_clord_id"] == ids[0]
        up = [i for i, r in enumerate(recs) if r["rtype"] == R.RT_SESSION and r["state"] == R.SESSION_UP]
        statuses = [r for r in recs[up[-1]:] if r["rtype"] == R.RT_ACK]
        # each order answered by its status request and by the mass status reply (FIX 4.4)
        assert sorted(set(int(r["clord_id"]) for r in statuses)) == sorted(ids)
        assert all(r["exec_type"] == R.EXEC_ORDER_STATUS and r["ord_status"] == ord("0") for r in statuses)
        # the mass status reply (sent first) can complete the reconciliation before the
        # exchange's thread reads the three OrderStatusRequests sent right after it
        deadline = time.monotonic() + 30
        while srv.venue.counts["status"] < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert srv.venue.counts["status"] == 3 and srv.venue.counts["replaces"] == 0
        after = e.new_order(10_500)                     # flows again, and fills
        f = e.next_records(lambda r: r["rtype"] == R.RT_FILL)[-1]
        assert f["clord_id"] == after
        gw.send_signal(signal.SIGTERM)
        assert gw.wait(30) == 0
        err = gw.stderr.read().decode()
        assert "restored" in err and "refused and answered with a REJECT" in err
    finally:
        if gw.poll() is None:
            gw.kill()
            gw.wait()
        e.close()
        srv.stop()


# ---- the engine restarted (RT_RECONCILE reason ENGINE_RESTART) -------------------------------------
@pytest.mark.parametrize("begin", ["FIX.4.4", "FIX.4.2"])
def test_engine_restart_request_cancels_every_working_order_before_answering(shm_dir, tmp_path, begin):
    from decimal import Decimal
    h = InProcess(shm_dir, tmp_path, begin=begin)
    try:
        e = h.eng
        e.wait_state(R.SESSION_RECONCILED)
        ids = [e.new_order(9_000 + i) for i in range(3)]
        e.next_records(lambda r: r["rtype"] == R.RT_ACK and r["clord_id"] == ids[-1])
        stray = None
        if begin == "FIX.4.4":      # and one nobody here knows (found by the mass status)
            stray = X.Order("O999", b"999", b"BTCUSDT", b"2", b"2", b"1", Decimal(2), Decimal("120.00"),
                            owner=h.srv.sessions[0])
            h.srv.venue.orders[b"999"] = stray
        e.send(R.RECONCILE, rtype=R.RT_RECONCILE, session=0, clord_id=4242,
               reason=R.RECONCILE_ENGINE_RESTART)
        recs = e.next_records(lambda r: r["rtype"] == R.RT_SESSION and r["state"] == R.SESSION_RECONCILED)
        assert recs[-1]["reconcile_id"] == 4242
        up = [r for r in recs if r["rtype"] == R.RT_SESSION and r["state"] == R.SESSION_UP]
        assert up and up[-1]["reconcile_id"] == 4242
        cancelled = {int(r["orig_clord_id"] or r["clord_id"]) for r in recs
                     if r["rtype"] == R.RT_ACK and r["exec_type"] == R.EXEC_CANCELED}
        assert set(ids) <= cancelled          # every cancel confirmed before the answer
        # nothing of the session works at the venue any more, and the gateway knows it
        assert not h.srv.venue.working_rows(0)
        assert h.gw.gst[G.G_OPEN] == 0 and h.gw.counters["engine_restarts"] == 1
        assert h.gw.oo.hdr[G.H_ENGINE_RESTART] == 0 and h.gw.oo.hdr[G.H_ENGINE_DONE] == 4242
        if stray is not None:
            assert stray.status == b"4"
        assert h.srv.sessions[0].rejects_sent == 0
        # the same request published again (its answer crossed it): answered again, nothing
        # cancelled; a new order placed meanwhile keeps working
        live = e.new_order(9_500)
        e.next_records(lambda r: r["rtype"] == R.RT_ACK and r["clord_id"] == live)
        e.send(R.RECONCILE, rtype=R.RT_RECONCILE, session=0, clord_id=4242,
               reason=R.RECONCILE_ENGINE_RESTART)
        again = e.next_records(lambda r: r["rtype"] == R.RT_SESSION)
        assert again[-1]["state"] == R.SESSION_RECONCILED and again[-1]["reconcile_id"] == 4242
        assert h.srv.venue.orders[b"%d" % live].working
        late = e.new_order(10_500)                  # and trading goes on
        f = e.next_records(lambda r: r["rtype"] == R.RT_FILL)[-1]
        assert f["clord_id"] == late
    finally:
        h.close()


def test_engine_restart_request_while_the_venue_is_away_is_finished_after_the_logon(shm_dir, tmp_path):
    h = InProcess(shm_dir, tmp_path)
    try:
        e = h.eng
        e.wait_state(R.SESSION_RECONCILED)
        ids = [e.new_order(9_000 + i) for i in range(2)]
        e.next_records(lambda r: r["rtype"] == R.RT_ACK and r["clord_id"] == ids[-1])
        h.srv.stop()                                # the venue goes away
        e.wait_state(R.SESSION_DOWN)
        e.send(R.RECONCILE, rtype=R.RT_RECONCILE, session=0, clord_id=77,
               reason=R.RECONCILE_ENGINE_RESTART)
        deadline = time.time() + 30
        while h.gw.engine_req != 77 and time.time() < deadline:
            time.sleep(0.01)
        assert h.gw.oo.hdr[G.H_ENGINE_RESTART] == 77     # kept (and persisted) until answered
        h.srv._open()
        h.srv.start()
        recs = e.next_records(lambda r: r["rtype"] == R.RT_SESSION and r["state"] == R.SESSION_RECONCILED,
                              timeout=60)
        assert recs[-1]["reconcile_id"] == 77
        assert not any(h.srv.venue.orders[b"%d" % i].working for i in ids)
        assert h.gw.gst[G.G_OPEN] == 0
    finally:
        h.close()


def test_confirm_request_keeps_the_orders_working(shm_dir, tmp_path):
    h = InProcess(shm_dir, tmp_path)
    try:
        e = h.eng
        e.wait_state(R.SESSION_RECONCILED)
        ids = [e.new_order(9_000 + i) for i in range(2)]
        e.next_records(lambda r: r["rtype"] == R.RT_ACK and r["clord_id"] == ids[-1])
        e.send(R.RECONCILE, rtype=R.RT_RECONCILE, session=0, clord_id=5, reason=R.RECONCILE_CONFIRM)
        recs = e.wait_state(R.SESSION_RECONCILED)
        assert recs[-1]["reconcile_id"] == 5
        assert all(h.srv.venue.orders[b"%d" % i].working for i in ids) and h.gw.gst[G.G_OPEN] == 2
    finally:
        h.close()


def test_engine_restart_request_not_confirmed_by_the_venue_is_rejected_and_retried(shm_dir, tmp_path):
    h = InProcess(shm_dir, tmp_path, reconcile_timeout_s=1.0)
    try:
        e = h.eng
        e.wait_state(R.SESSION_RECONCILED)
        ids = [e.new_order(9_000 + i) for i in range(2)]
        e.next_records(lambda r: r["rtype"] == R.RT_ACK and r["clord_id"] == ids[-1])
        stuck = b"%d" % ids[0]
        venue = h.srv.venue
        deaf = {"on": True}
        real_mass, real_cancel = venue._mass_cancel, venue._cancel

        def mass_cancel(msg, owner, si, v42):  # a venue that keeps one order whatever we ask:
            if not deaf["on"]:                 # hidden from its mass cancel (of this session)
                return real_mass(msg, owner, si, v42)
            r = M.find(venue.sim, si, venue._ids(si).of(stuck, create=False))
            venue.sim.orders[r, M.O_SESSION] = si + 1000
            try:
                return real_mass(msg, owner, si, v42)
            finally:
                venue.sim.orders[r, M.O_SESSION] = si

        def cancel(msg, owner, si, v42):
            if deaf["on"] and msg.get(41) == stuck:
                return []                     # no answer at all
            return real_cancel(msg, owner, si, v42)
        venue._mass_cancel, venue._cancel = mass_cancel, cancel
        e.send(R.RECONCILE, rtype=R.RT_RECONCILE, session=0, clord_id=99,
               reason=R.RECONCILE_ENGINE_RESTART)
        rj = e.next_records(lambda r: r["rtype"] == R.RT_REJECT)[-1]
        assert rj["reason"] == R.RJ_GW_UNCONFIRMED and rj["is_cancel_reject"] == 1
        assert rj["clord_id"] == ids[0] and h.gw.gst[G.G_READY] == 0
        assert not venue.orders[b"%d" % ids[1]].working and venue.orders[stuck].working
        deaf["on"] = False                    # the venue answers again: the retry gets through
        recs = e.next_records(lambda r: r["rtype"] == R.RT_SESSION and r["state"] == R.SESSION_RECONCILED)
        assert recs[-1]["reconcile_id"] == 99
        assert not venue.orders[stuck].working and h.gw.gst[G.G_OPEN] == 0
        assert h.gw.counters["unconfirmed"] >= 1
    finally:
        h.close()
