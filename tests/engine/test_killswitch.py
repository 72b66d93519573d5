"""Kill switch: persistence, and across processes (CLI in one, engine in another, md flooding)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from numba import njit

from appliance.engine import killswitch
from appliance.transport import control, records, ring
from tests.configs import instruments_toml
from tests.engine import mdsource


def test_persisted_halt_round_trips_and_reset_clears_it(tmp_path):
    assert killswitch.read_state(tmp_path) == {"halted": False}
    killswitch.persist_halt(tmp_path, "too much loss", "max_loss", 7)
    st = killswitch.read_state(tmp_path)
    assert st["halted"] is True and st["reason"] == "too much loss" and st["epoch"] == 7
    assert not list(tmp_path.glob(".*.tmp"))         # the temporary file was renamed away
    killswitch.persist_reset(tmp_path)
    assert killswitch.read_state(tmp_path)["halted"] is False


def test_corrupt_persisted_state_reads_as_halted(tmp_path):
    killswitch.state_path(tmp_path).write_text('{"halted": tru')
    st = killswitch.read_state(tmp_path)
    assert st["halted"] is True and "corrupt" in st["reason"]


def test_kill_with_nobody_running_is_set_and_persisted_but_not_confirmed(shm_dir, tmp_path):
    cb = control.ControlBlock.open(str(shm_dir))
    try:
        r = killswitch.kill(cb, tmp_path, "test", timeout_s=0.1)
        assert r["confirmed"] is False and r["engine_pid"] == 0 and r["gateways"] == {}
        assert cb.killed and cb.epoch == r["epoch"]
        assert killswitch.read_state(tmp_path)["halted"] is True
        killswitch.reset(cb, tmp_path)
        assert not cb.killed and killswitch.read_state(tmp_path)["halted"] is False
    finally:
        cb.close()


# ------------------------------------------------------------------------------ across processes

@njit(cache=True, nogil=True)
def _flood(hdr, data, recs, n):
    for k in range(n):
        ring.publish(hdr, data, recs[k])


def _config(tmp_path, shm_dir, symbols):
    cfg = tmp_path / "appliance.toml"
    cfg.write_text(f"""
[appliance]
shm_dir = "{shm_dir}"
state_dir = "{tmp_path / 'state'}"
[rings]
order_capacity = 262144
[wait]
strategy = "backoff"
backoff_max_ns = 200000
[engine]
max_iters = 256
[risk.limits]
max_qty = 1000000
max_notional = 1000000.0
max_position = 100000000
max_open_orders = 16
collar_bps = 10000
max_spread_ticks = 1000000000000
[risk.venues.binance]
rate_per_s = 100000
burst = 10000
check_balance = false
[[venues]]
name = "binance"
""" + instruments_toml("binance", symbols) + "".join(f"""
[[strategies]]
kind = "avellaneda_stoikov"
venue = "binance"
symbol = "{s}"
[strategies.params]
warmup_events = 1
""" for s in symbols))
    return cfg


def _cli(cfg, *args, timeout=120):
    return subprocess.run([sys.executable, "-m", "appliance.cli", "--config", str(cfg), *args],
                          capture_output=True, text=True, timeout=timeout)


def _working_after(orders):
    """clord ids left working after an order stream (new/replace add, cancel/replace remove)."""
    working = set()
    for o in orders:
        rt = o[8]
        if rt == records.RT_NEW_ORDER:
            working.add(int(o.view(records.NEW_ORDER)[0]["clord_id"]))
        elif rt == records.RT_REPLACE:
            r = o.view(records.REPLACE)[0]
            working.discard(int(r["orig_clord_id"]))
            working.add(int(r["clord_id"]))
        elif rt == records.RT_CANCEL:
            working.discard(int(o.view(records.CANCEL)[0]["orig_clord_id"]))
    return working


@pytest.mark.timeout(400)
def test_kill_across_processes_stops_orders_cancels_all_and_survives_restart(shm_dir, tmp_path):
    recs, syms = mdsource.recorded("binance")
    cfg = _config(tmp_path, shm_dir, syms)
    md = ring.RingWriter.create("md.binance", records.MD_RECORD_SIZE, 1 << 16, shm_dir=str(shm_dir))
    ex = ring.RingWriter.create("exec", records.EXEC_RECORD_SIZE, 1 << 10, shm_dir=str(shm_dir))
    up = np.zeros(1, records.SESSION)          # what a FIX gateway says once logged on and
    up[0]["rtype"] = records.RT_SESSION        # reconciled: the engine sends nothing before it
    up[0]["session"] = 0
    up[0]["state"] = records.SESSION_RECONCILED
    ex.publish(up)
    env = dict(os.environ, APPLIANCE_SHM_DIR=str(shm_dir))
    eng = subprocess.Popen([sys.executable, "-m", "appliance.cli", "--config", str(cfg), "engine"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    stop = threading.Event()
    engine_out = []
    try:
        orders_r = None
        deadline = time.monotonic() + 300
        while orders_r is None:
            assert eng.poll() is None, eng.stdout.read()
            assert time.monotonic() < deadline, "engine did not create its order ring"
            try:
                orders_r = ring.RingReader.attach("orders", consumer="test", shm_dir=str(shm_dir))
            except Exception:
                time.sleep(0.2)

        acker = ring.RingReader.attach("orders", consumer="venue", shm_dir=str(shm_dir))

        def flood():
            # md flood, and a loopback venue that accepts every order (the OMS waits for acks)
            while not stop.is_set():
                _flood(md.hdr, md.data, recs, recs.shape[0])
                mdsource.ack_orders(acker, ex)
                time.sleep(0.05)     # ~250 orders a pass: the order ring must not lap

        t = threading.Thread(target=flood, daemon=True)
        t.start()
        while int(ring.head(orders_r.hdr)) < 20:
            assert eng.poll() is None
            assert time.monotonic() < deadline, "engine wrote no orders from the md flood"
            time.sleep(0.05)
        r = _cli(cfg, "kill", "--reason", "test kill", "--timeout", "30", "--json")
        head_at_ack = int(ring.head(orders_r.hdr))
        assert r.returncode == 0, r.stdout + r.stderr
        k = json.loads(r.stdout)
        assert k["confirmed"] and k["engine_acked"] and k["engine_ack_ns"] > 0
        time.sleep(1.0)                       # md keeps flooding in while HALTED
        assert int(ring.head(orders_r.hdr)) == head_at_ack   # nothing after the acknowledgement
        orders = mdsource.order_records(orders_r.hdr, orders_r.data)
        assert sum(o[8] == records.RT_CANCEL for o in orders) > 0
        assert _working_after(orders) == set()     # a cancel went out for every working order
        st = json.loads(_cli(cfg, "status", "--json").stdout)
        assert st["kill"]["set"] and st["risk_state"] == "HALTED"
        assert any(a["name"] == "engine" and a["alive"] for a in st["actors"])
    finally:
        stop.set()
        eng.terminate()
        engine_out.append(eng.communicate(timeout=60)[0])
    # restart: the control block is wiped (as after a reboot); the persisted file halts it again
    cb = control.ControlBlock.open(str(shm_dir))
    cb.reset_kill()
    cb.close()
    eng = subprocess.Popen([sys.executable, "-m", "appliance.cli", "--config", str(cfg), "engine"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        cb = control.ControlBlock.open(str(shm_dir))
        deadline = time.monotonic() + 120
        while not (cb.killed and cb.ack_epoch >= cb.epoch and killswitch.engine_alive(cb)):
            assert eng.poll() is None, eng.stdout.read()
            assert time.monotonic() < deadline, "restarted engine did not come up HALTED"
            time.sleep(0.1)
        head0 = int(ring.head(orders_r.hdr))
        _flood(md.hdr, md.data, recs, recs.shape[0])
        time.sleep(1.0)
        assert int(ring.head(orders_r.hdr)) == head0          # HALTED: md in, no orders out
        r = _cli(cfg, "kill", "--reset")
        assert r.returncode == 2 and "--confirm" in r.stderr
        r = _cli(cfg, "kill", "--reset", "--confirm")
        assert r.returncode == 0 and not cb.killed
        deadline = time.monotonic() + 60
        while int(ring.head(orders_r.hdr)) == head0:        # trading resumes after the reset
            _flood(md.hdr, md.data, recs, recs.shape[0])
            assert time.monotonic() < deadline, "no orders after the manual reset"
            time.sleep(0.1)
        cb.close()
    finally:
        eng.terminate()
        eng.communicate(timeout=60)
        orders_r.close()
        md.close()
        ex.close()


def test_kill_cli_with_nobody_running_persists_but_exits_1_then_status_shows_it(shm_dir, tmp_path):
    cfg = _config(tmp_path, shm_dir, ["NKNUSDT"])
    r = _cli(cfg, "kill", "--reason", "nobody home")
    assert r.returncode == 1, r.stderr
    assert "NOT confirmed" in r.stderr and "no engine and no FIX gateway" in r.stderr
    assert killswitch.read_state(tmp_path / "state")["reason"] == "nobody home"
    st = json.loads(_cli(cfg, "status", "--json").stdout)
    assert st["kill"]["set"] and st["kill"]["reason"] == "nobody home"
    assert st["risk_state"] == "HALTED (no engine)" and st["engine_pid"] == 0
