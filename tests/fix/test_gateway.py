"""FIX gateway actor against the mock exchange over loopback TCP, with real shared-memory rings."""
from __future__ import annotations

import os
import random
import threading
import time

import numpy as np
import pytest

from appliance.config import ConfigError
from appliance.fix import admin
from appliance.fix import codec as C
from appliance.sim import exchange as X
from appliance.fix import gateway as G
from appliance.fix.store import FileStore
from appliance.transport import records as R
from appliance.transport import ring, wait

INSTRUMENTS = [{"symbol": "BTCUSDT", "tick_size": "0.01", "lot_size": "0.001"},
               {"symbol": "ETHUSDT", "tick_size": "0.05", "lot_size": "0.01"}]


class Harness:
    """Engine side (order writer, exec reader), gateway thread, mock exchange thread."""

    def __init__(self, shm_dir, tmp_path, refs=None, **extra):
        self.srv = X.ExchangeServer([("FIX.4.4", "SIMEX", "APPLIANCE")],
                                    venue=X.MatchingVenue(references=refs or {})).start()
        table = {"host": "127.0.0.1", "port": self.srv.port, "sender_comp_id": "APPLIANCE",
                 "target_comp_id": "SIMEX", "instruments": INSTRUMENTS, "store_dir": str(tmp_path / "store"),
                 "reconnect_min_ms": 20, "reconnect_max_ms": 200, "reconcile_timeout_s": 5.0}
        table.update(extra)
        self.gcfg = G.GatewayConfig.from_table("t", table)
        G.warm(self.gcfg)                   # as the actor does: no compile once live
        self.orders = ring.RingWriter.create("orders", R.ORDER_RECORD_SIZE, 1024, shm_dir)
        reader = ring.RingReader.attach("orders", "fix.t", "latest", shm_dir)
        self.exec_writer = ring.RingWriter.create("exec.t", R.EXEC_RECORD_SIZE, 4096, shm_dir)
        self.execs = ring.RingReader.attach("exec.t", "engine", "oldest", shm_dir)
        self.store = FileStore(self.gcfg.store_dir)
        wp = wait.make("backoff", spin_iterations=200, backoff_min_ns=20_000, backoff_max_ns=200_000)
        self.gw = G.Gateway(self.gcfg, reader, self.exec_writer, self.store, wait_params=wp)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.gw.run, args=(self.stop.is_set,), daemon=True)
        self.thread.start()
        self.clord = 1000

    def close(self):
        self.stop.set()
        self.thread.join(10)
        self.gw.close()
        self.srv.stop()
        self.store.close()

    def next_records(self, pred, timeout=30.0):
        """Exec records up to and including the first one matching ``pred``."""
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

    def wait_state(self, state, timeout=30.0):
        return self.next_records(lambda r: r["rtype"] == R.RT_SESSION and r["state"] == state, timeout)

    def send(self, kind, **f):
        rec = np.zeros(1, kind)
        for k, v in f.items():
            rec[0][k] = v
        self.orders.publish(rec)
        return rec[0]

    def new_order(self, price, qty=5, side=R.SIDE_BUY, instrument=0, tif=R.TIF_GTC, **kw):
        self.clord += 1
        f = dict(rtype=R.RT_NEW_ORDER, clord_id=self.clord, price=price, qty=qty, side=side,
                 ord_type=R.ORD_LIMIT, tif=tif, instrument=instrument, strategy=7)
        f.update(kw)
        self.send(R.NEW_ORDER, **f)
        return self.clord


def describe(r):
    return {k: r[k] for k in r.dtype.names if k not in ("ver", "publish_tsc")}


@pytest.fixture
def harness(shm_dir, tmp_path):
    h = Harness(shm_dir, tmp_path, refs={"BTCUSDT": "100.00"})
    yield h
    h.close()


def test_session_comes_up_and_reports_reconciled_with_nothing_working(harness):
    recs = harness.wait_state(R.SESSION_RECONCILED)
    states = [int(r["state"]) for r in recs if r["rtype"] == R.RT_SESSION]
    assert states == [R.SESSION_DOWN, R.SESSION_UP, R.SESSION_RECONCILED]


def test_order_round_trip_gives_ack_then_fill_records(harness):
    h = harness
    h.wait_state(R.SESSION_RECONCILED)
    rest = h.new_order(9_900)                 # 99.00 < ref: rests
    cross = h.new_order(10_100, qty=7)       # 101.00 >= ref: fills at 100.00
    recs = h.next_records(lambda r: r["rtype"] == R.RT_FILL)
    acks = [r for r in recs if r["rtype"] == R.RT_ACK]
    assert [int(a["clord_id"]) for a in acks] == [rest, cross]
    a = acks[0]
    assert a["exec_type"] == R.EXEC_NEW and a["ord_status"] == ord("0") and a["price"] == 9_900
    assert a["qty"] == 5 and a["leaves_qty"] == 5 and a["side"] == R.SIDE_BUY and a["session"] == 0
    assert a["venue"] == R.VENUE_SIM and a["instrument"] == 0 and a["origin_tsc"] > 0
    f = recs[-1]
    assert f["clord_id"] == cross and f["last_price"] == 10_000 and f["last_qty"] == 7
    assert f["cum_qty"] == 7 and f["leaves_qty"] == 0 and f["ord_status"] == ord("2") and f["liquidity"] == 2
    assert h.gw.gst[G.G_OPEN] == 1           # the filled order left the open-order table
    from appliance.transport import hist
    o2w, w2a, t2t = (h.gw.hists[h.gw.hidx[k]] for k in (G.HOP_O2W, G.HOP_W2A, G.HOP_T2T))
    assert o2w[hist.H_COUNT] == 2 and w2a[hist.H_COUNT] == 2    # one per order: sent, first answer
    assert t2t[hist.H_COUNT] == 0                                # the test orders carry no origin
    assert 0 < hist.percentiles(o2w)[0.5] and 0 < hist.percentiles(w2a)[0.5]


def test_cancel_replace_and_unknown_cancel(harness):
    h = harness
    h.wait_state(R.SESSION_RECONCILED)
    oid = h.new_order(9_000)
    h.next_records(lambda r: r["rtype"] == R.RT_ACK and r["clord_id"] == oid)
    h.send(R.REPLACE, rtype=R.RT_REPLACE, clord_id=oid + 100, orig_clord_id=oid, price=9_100, qty=6,
           side=R.SIDE_BUY, ord_type=R.ORD_LIMIT, tif=R.TIF_GTC)
    rep = h.next_records(lambda r: r["rtype"] == R.RT_ACK and r["exec_type"] == R.EXEC_REPLACED)[-1]
    assert rep["clord_id"] == oid + 100 and rep["orig_clord_id"] == oid and rep["price"] == 9_100
    assert rep["qty"] == 6
    h.send(R.CANCEL, rtype=R.RT_CANCEL, clord_id=oid + 200, orig_clord_id=oid + 100, qty=6, side=R.SIDE_BUY)
    cx = h.next_records(lambda r: r["rtype"] == R.RT_ACK and r["exec_type"] == R.EXEC_CANCELED)[-1]
    assert cx["orig_clord_id"] == oid + 100 and cx["ord_status"] == ord("4")
    h.send(R.CANCEL, rtype=R.RT_CANCEL, clord_id=oid + 300, orig_clord_id=555, qty=1, side=R.SIDE_BUY)
    rj = h.next_records(lambda r: r["rtype"] == R.RT_REJECT)[-1]
    assert rj["is_cancel_reject"] == 1 and rj["clord_id"] == oid + 300 and rj["orig_clord_id"] == 555
    assert rj["reason"] == 1 and rj["text"] == b"unknown order"
    assert h.gw.gst[G.G_OPEN] == 0


def test_mass_cancel_cancels_every_working_order(harness):
    h = harness
    h.wait_state(R.SESSION_RECONCILED)
    ids = [h.new_order(9_000 + i) for i in range(3)]
    h.next_records(lambda r: r["rtype"] == R.RT_ACK and r["clord_id"] == ids[-1])
    h.send(R.MASS_CANCEL, rtype=R.RT_MASS_CANCEL, clord_id=1, scope=7)
    got = []
    for _ in ids:
        got.append(int(h.next_records(lambda r: r["rtype"] == R.RT_ACK and r["exec_type"] == R.EXEC_CANCELED)[-1]["clord_id"]))
    assert sorted(got) == ids
    deadline = time.time() + 5
    while h.gw.gst[G.G_OPEN] and time.time() < deadline:
        time.sleep(0.01)
    assert h.gw.gst[G.G_OPEN] == 0


def test_unencodable_order_becomes_reject_record_with_gateway_reason(harness):
    h = harness
    h.wait_state(R.SESSION_RECONCILED)
    oid = h.new_order(100, instrument=9)
    rj = h.next_records(lambda r: r["rtype"] == R.RT_REJECT)[-1]
    assert rj["clord_id"] == oid and rj["reason"] == G.RJ_ENCODE_BASE - C.E_BAD_INSTRUMENT
    assert rj["strategy"] == 7 and rj["is_cancel_reject"] == 0
    assert "unknown instrument" in G.RJ_NAMES[int(rj["reason"])]


def test_orders_for_another_session_are_skipped(harness):
    h = harness
    h.wait_state(R.SESSION_RECONCILED)
    h.new_order(9_000, session=3)
    mine = h.new_order(9_001)
    recs = h.next_records(lambda r: r["rtype"] == R.RT_ACK)
    assert [int(r["clord_id"]) for r in recs if r["rtype"] == R.RT_ACK] == [mine]
    assert h.gw.gst[G.G_FOREIGN] == 1


def test_disconnect_reports_down_then_reconnect_reconciles_before_new_orders(harness):
    h = harness
    h.wait_state(R.SESSION_RECONCILED)
    working = [h.new_order(9_000), h.new_order(80_000, instrument=1, side=R.SIDE_SELL)]
    h.next_records(lambda r: r["rtype"] == R.RT_ACK and r["clord_id"] == working[-1])
    h.srv.restart()                                   # the venue drops every connection
    h.wait_state(R.SESSION_DOWN)
    refused = h.new_order(9_200)                      # while down: refused, never queued
    recs = h.wait_state(R.SESSION_RECONCILED)
    rj = [r for r in recs if r["rtype"] == R.RT_REJECT]
    assert [int(r["clord_id"]) for r in rj] == [refused] and rj[0]["reason"] == G.RJ_NOT_READY
    kinds = [(int(r["rtype"]), int(r["state"]) if r["rtype"] == R.RT_SESSION else int(r["exec_type"]))
             for r in recs if r["rtype"] in (R.RT_SESSION, R.RT_ACK)]
    assert kinds[0] == (R.RT_SESSION, R.SESSION_UP)
    statuses = [r for r in recs if r["rtype"] == R.RT_ACK]
    # each order answered by its OrderStatusRequest and by the mass status reply (FIX 4.4)
    assert sorted(set(int(r["clord_id"]) for r in statuses)) == sorted(working)
    assert all(r["exec_type"] == R.EXEC_ORDER_STATUS and r["ord_status"] == ord("0") for r in statuses)
    assert kinds[-1] == (R.RT_SESSION, R.SESSION_RECONCILED)
    after = h.new_order(10_500)                       # flows again, and fills
    f = h.next_records(lambda r: r["rtype"] == R.RT_FILL)[-1]
    assert f["clord_id"] == after
    assert h.gw.counters["reconciles"] == 2 and h.gw.counters["status_requests"] == 2


def test_sequence_numbers_survive_reconnect_without_resets(harness):
    h = harness
    h.wait_state(R.SESSION_RECONCILED)
    h.new_order(9_000)
    h.next_records(lambda r: r["rtype"] == R.RT_ACK)
    before = h.store.next_sender
    h.srv.restart()
    h.wait_state(R.SESSION_RECONCILED)
    assert h.store.next_sender > before               # continued, not reset to 1
    srv_session = h.srv.sessions[0]
    # the mass status reply can confirm the order before the venue has read our last status
    # request: wait until it has taken everything we sent
    deadline = time.time() + 10
    while srv_session.store.next_target != h.store.next_sender and time.time() < deadline:
        time.sleep(0.01)
    assert srv_session.store.next_target == h.store.next_sender
    assert h.gw.session.garbled == 0 and h.srv.sessions[0].garbled == 0 and srv_session.rejects_sent == 0


# ---- open-order table and configuration (no sockets) -------------------------------------------
def test_open_order_table_matches_a_dict_under_random_inserts_and_deletes():
    ot = np.zeros((64, G.OT_COLS), np.int64)
    gst = np.zeros(G.G_SIZE, np.int64)
    ref = {}
    rnd = random.Random(3)
    keys = [rnd.randrange(1, 2 ** 63) for _ in range(40)] + list(range(1, 40))
    for _ in range(3000):
        k = rnd.choice(keys)
        if rnd.random() < 0.55:
            r = G.ot_insert(ot, gst, k, k % 7, 1, 10)
            if len(ref) < 48 or k in ref:
                assert r >= 0
                ref[k] = k % 7
            else:
                assert r == -1
        else:
            assert G.ot_delete(ot, gst, k) == (k in ref)
            ref.pop(k, None)
        assert gst[G.G_OPEN] == len(ref)
    for k in keys:
        i = G.ot_find(ot, k)
        assert (i >= 0) == (k in ref)
        if i >= 0:
            assert ot[i, G.OT_INSTR] == ref[k]


def test_open_order_file_restores_every_order_even_into_a_smaller_configured_table(tmp_path):
    path = tmp_path / "open_orders"
    gst = np.zeros(G.G_SIZE, np.int64)
    oo = G.OpenOrderFile(path, 256, gst)
    keys = list(range(1000, 1150))                 # 150 orders: more than 64 rows can hold
    for k in keys:
        assert G.ot_insert(oo.ot, gst, k, k % 5, 1, k) >= 0
    oo.close()
    gst = np.zeros(G.G_SIZE, np.int64)
    oo = G.OpenOrderFile(path, 64, gst)            # the config asks for fewer rows now
    try:
        assert oo.restored == len(keys) == gst[G.G_OPEN]
        assert oo.ot.shape[0] == 256 and oo.hdr[G.H_CAP] == 256     # grown to hold them
        for k in keys:
            i = G.ot_find(oo.ot, k)
            assert i >= 0 and oo.ot[i, G.OT_INSTR] == k % 5 and oo.ot[i, G.OT_QTY] == k
    finally:
        oo.close()
    gst = np.zeros(G.G_SIZE, np.int64)
    oo = G.OpenOrderFile(path, 1024, gst)          # and a larger one keeps them as well
    try:
        assert oo.restored == len(keys) and oo.ot.shape[0] == 1024
    finally:
        oo.close()


def test_config_rejects_unknown_key_and_missing_required_by_name():
    base = {"host": "h", "port": 1, "sender_comp_id": "A", "target_comp_id": "B", "instruments": INSTRUMENTS}
    with pytest.raises(ConfigError, match=r"fix.sessions.x.hots: unknown key"):
        G.GatewayConfig.from_table("x", {**base, "hots": "h"})
    with pytest.raises(ConfigError, match=r"fix.sessions.x.port: required"):
        G.GatewayConfig.from_table("x", {k: v for k, v in base.items() if k != "port"})
    with pytest.raises(ConfigError, match=r"instruments"):
        G.GatewayConfig.from_table("x", {**base, "instruments": [{"symbol": "X", "tick_size": "-1", "lot_size": "1"}]})
    g = G.GatewayConfig.from_table("x", base, state_dir="/tmp/st")
    assert g.exec_ring == "exec.x" and g.store_dir == "/tmp/st/fix/x" and g.instruments[1][0] == "ETHUSDT"


def test_credentials_file_readable_by_others_is_refused(tmp_path):
    p = tmp_path / "cred.toml"
    p.write_text('username = "u"\npassword = "p"\n')
    os.chmod(p, 0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        admin.read_credentials(str(p))
    os.chmod(p, 0o600)
    assert admin.read_credentials(str(p)) == [(553, b"u"), (554, b"p")]


def test_sequence_gap_from_venue_goes_through_session_resend_and_reports_still_arrive(harness):
    h = harness
    h.wait_state(R.SESSION_RECONCILED)
    first = h.new_order(9_000)
    h.next_records(lambda r: r["rtype"] == R.RT_ACK and r["clord_id"] == first)
    slow_before = h.gw.counters["slow_path_msgs"]
    venue_store = h.srv.sessions[0].store
    venue_store.set_next_sender(venue_store.next_sender + 5)   # the venue skips five numbers
    gapped = h.new_order(9_001)
    ack = h.next_records(lambda r: r["rtype"] == R.RT_ACK and r["clord_id"] == gapped)[-1]
    assert ack["exec_type"] == R.EXEC_NEW
    assert h.gw.counters["slow_path_msgs"] > slow_before         # handled by the session layer
    assert h.gw.store.next_target == venue_store.next_sender   # gap filled, in step again
    after = h.new_order(9_002)                                   # back on the compiled path
    slow_mid = h.gw.counters["slow_path_msgs"]
    h.next_records(lambda r: r["rtype"] == R.RT_ACK and r["clord_id"] == after)
    assert h.gw.counters["slow_path_msgs"] == slow_mid
    assert h.gw.session.garbled == 0


def _free_port() -> int:
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_gateway_and_exchange_cli_processes_trade_and_stop_on_sigterm(shm_dir, tmp_path):
    import signal
    import subprocess
    import sys
    port = _free_port()
    cfg = tmp_path / "appliance.toml"
    cfg.write_text(f"""
[appliance]
shm_dir = "{shm_dir}"
state_dir = "{tmp_path}/state"
[wait]
strategy = "backoff"
backoff_max_ns = 200000
[[venues]]
name = "binance"
[[instruments]]
venue = "binance"
symbol = "BTCUSDT"
tick = "0.01"
lot = "0.001"
[fix.sessions.sim]
host = "127.0.0.1"
port = {port}
sender_comp_id = "APPLIANCE"
target_comp_id = "SIMEX"
venue = "binance"
""")
    orders = ring.RingWriter.create("orders", R.ORDER_RECORD_SIZE, 1024, shm_dir)
    env = dict(os.environ, APPLIANCE_SHM_DIR=str(shm_dir))
    base = [sys.executable, "-m", "appliance.cli", "--config", str(cfg), "fix"]
    ex = subprocess.Popen(base + ["exchange", "--port", str(port)], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True)
    gw = None
    try:
        assert ex.stdout.readline().startswith("listening 127.0.0.1:")
        gw = subprocess.Popen(base + ["gateway", "--session", "sim"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        execs = None
        while execs is None:
            try:
                execs = ring.RingReader.attach("exec.sim", "test", "oldest", shm_dir)
            except Exception:
                assert time.time() < deadline and gw.poll() is None, "gateway did not create its exec ring"
                time.sleep(0.1)
        rec = np.zeros(R.EXEC_RECORD_SIZE, np.uint8)

        def wait_for(pred):
            while time.time() < deadline:
                if execs.poll(rec):
                    r = rec.view(R.RECORD_DTYPES[int(rec[8])])[0]
                    if pred(r):
                        return r
                else:
                    time.sleep(0.001)
            raise AssertionError("timed out waiting for an exec record")

        wait_for(lambda r: r["rtype"] == R.RT_SESSION and r["state"] == R.SESSION_RECONCILED)
        o = np.zeros(1, R.NEW_ORDER)
        o[0]["rtype"], o[0]["clord_id"], o[0]["price"], o[0]["qty"] = R.RT_NEW_ORDER, 77, 12_345, 3
        o[0]["side"], o[0]["ord_type"], o[0]["tif"] = R.SIDE_BUY, R.ORD_LIMIT, R.TIF_GTC
        orders.publish(o)
        ack = wait_for(lambda r: r["rtype"] == R.RT_ACK)
        assert ack["clord_id"] == 77 and ack["price"] == 12_345 and ack["qty"] == 3
        from appliance.transport import control
        cb = control.ControlBlock.open(shm_dir)
        (me,) = [a for a in cb.actors() if a["name"] == "fix.sim"]
        assert me["pid"] == gw.pid and me["kind"] == control.ACTOR_FIX and me["heartbeat_age_ms"] < 5000
        cb.close()
        gw.send_signal(signal.SIGTERM)
        assert gw.wait(30) == 0
        down = wait_for(lambda r: r["rtype"] == R.RT_SESSION)
        assert down["state"] == R.SESSION_DOWN
        execs.close()
    finally:
        for p in (gw, ex):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
    assert ex.returncode == 0
    assert (tmp_path / "state" / "fix" / "sim" / "seqnums").exists()
