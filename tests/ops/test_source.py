"""The observer: what top and the exporter read, from regions written by real processes."""
from __future__ import annotations

import hashlib
import json

import pytest

from appliance import actor, config, fsutil
from appliance.ops import source
from appliance.transport import ring, telemetry


def _digest(d) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}


def test_no_shm_dir_says_nothing_is_running_without_creating_it(tmp_path, monkeypatch):
    missing = tmp_path / "nope"
    cfg = config.parse({"appliance": {"shm_dir": str(missing), "state_dir": str(tmp_path / "st")}})
    snap = source.Observer(cfg).collect()
    assert not snap["present"] and not snap["running"]
    assert snap["problems"] and "nothing is running" in snap["problems"][0]
    assert str(missing) in snap["problems"][0]
    assert not missing.exists()


def test_empty_dir_reports_no_control_block(tmp_path):
    d = tmp_path / "shm"
    d.mkdir()
    cfg = config.parse({"appliance": {"shm_dir": str(d), "state_dir": str(tmp_path / "st")}})
    snap = source.Observer(cfg).collect()
    assert snap["present"] and not snap["control"]
    assert any("no control block" in p for p in snap["problems"])


def test_reads_actors_rings_telemetry_and_status_of_live_processes_without_writing(
        ops_cfg, shm_dir, feeders):
    md = feeders(ops_cfg, "md", "binance", "1024")
    eng = feeders(ops_cfg, "engine")
    md.do("snapshot 0 1000 1001 5", "hist frame_to_publish 900 3", "hist frame_to_publish 40000",
          "counter frames 42", "gauge books_valid 1")
    eng.do("hist md_to_order 2500")
    cfg = config.load(ops_cfg)
    obs = source.Observer(cfg)
    # a consumer that is behind, so lag shows
    r = ring.RingReader.attach("md.binance", consumer="slow", start="oldest", shm_dir=str(shm_dir))
    try:
        before = {k: v for k, v in _digest(shm_dir).items() if k != "control"}
        snap = obs.collect()
        # the control block takes heartbeats, telemetry and rings change only by their writers:
        # compare the ring (no consumer of ours was added) and the telemetry regions
        after = {k: v for k, v in _digest(shm_dir).items() if k != "control"}
    finally:
        r.close()
    assert before["md.binance"] == after["md.binance"]
    assert snap["running"] and snap["control"] and not snap["problems"]
    names = {a["name"]: a for a in snap["actors"]}
    assert names["md.binance"]["pid"] == md.p.pid and names["md.binance"]["alive"]
    assert names["md.binance"]["kind"] == "md" and names["engine"]["kind"] == "engine"
    assert names["engine"]["heartbeat_age_s"] < 30
    assert snap["engine_pid"] == eng.p.pid and snap["risk_state"] == "RUNNING"
    assert snap["kill"]["set"] is False
    (rg,) = [x for x in snap["rings"] if x["name"] == "md.binance"]
    # snapshot: 5 bids + 5 asks + BATCH_END + BOOK_STATUS
    assert rg["head"] == 12 and rg["capacity"] == 1024 and rg["writer_pid"] == md.p.pid
    assert rg["writer_alive"]
    (slow,) = [c for c in rg["consumers"] if c["name"] == "slow"]
    assert slow["lag"] == 12 and slow["lost"] == 0
    t = snap["telemetry"]["md.binance"]
    assert t["pid"] == md.p.pid and t["alive"]
    assert t["counters"]["frames"] == 42 and t["gauges"]["books_valid"] == 1
    h = t["hists"]["frame_to_publish"]
    assert h["count"] == 4 and h["min"] == 900 and h["max"] == 40000
    hops = {(x["actor"], x["hop"]): x for x in snap["hops"]}
    assert hops[("md.binance", "frame_to_publish")]["venue"] == "binance"
    assert hops[("engine", "md_to_order")]["p50"] == 2500
    eng_st = snap["engine"]
    assert eng_st is not None and eng_st["pid"] == eng.p.pid
    assert [s["name"] for s in eng_st["strategies"]] == ["mm-nknusdt"]
    assert snap["status"]["md.binance"]["age_s"] < 30


def test_stopped_actors_read_as_dead_and_the_view_says_nothing_runs(ops_cfg, shm_dir, feeders):
    md = feeders(ops_cfg, "md", "binance", "64")
    md.do("counter frames 5")
    assert md.stop() == 0
    snap = source.Observer(config.load(ops_cfg)).collect()
    assert not snap["running"]
    assert any("nothing is running" in p for p in snap["problems"])
    (a,) = snap["actors"]
    assert a["name"] == "md.binance" and not a["alive"]
    assert snap["telemetry"]["md.binance"]["counters"]["frames"] == 5
    assert not snap["telemetry"]["md.binance"]["alive"]
    (rg,) = snap["rings"]
    assert not rg["writer_alive"]


def test_kill_state_and_the_engines_ack_time_come_from_the_control_block(ops_cfg, shm_dir,
                                                                         feeders):
    from appliance.engine import killswitch
    from appliance.transport import control
    feeders(ops_cfg, "engine")
    cfg = config.load(ops_cfg)
    cb = control.ControlBlock.open(str(shm_dir))
    try:
        r = killswitch.kill(cb, cfg.appliance.state_dir, "test 554=hunter2 halt", timeout_s=60)
    finally:
        cb.close()
    assert r["confirmed"] is True and r["engine_acked"] is True
    snap = source.Observer(cfg).collect()
    k = snap["kill"]
    assert k["set"] and k["epoch"] == 1 and k["ack_epoch"] == 1 and k["source"] == "cli"
    assert "hunter2" not in k["reason"] and "554=***" in k["reason"]
    from appliance.transport import clock
    if clock.calibration()[clock.C_MODE] == clock.MODE_TSC:
        assert k["ack_ns"] > 0
    else:
        assert k["ack_ns"] is None             # raw TSC stamps are no clock without invariant TSC
    assert snap["risk_state"] == "HALTED"
    assert snap["persisted_halt"]["halted"] is True


def test_a_half_written_or_foreign_file_in_the_dir_is_skipped(ops_cfg, shm_dir, feeders):
    feeders(ops_cfg, "md", "binance", "64")
    (shm_dir / "junk").write_bytes(b"not a region" * 100)
    (shm_dir / "telemetry.bogus").write_bytes(b"\0" * 8192)
    snap = source.Observer(config.load(ops_cfg)).collect()
    assert [r["name"] for r in snap["rings"]] == ["md.binance"]
    assert "bogus" not in snap["telemetry"]


def test_status_files_are_read_for_every_registered_actor(tmp_path, shm_dir):
    cfg = config.parse({"appliance": {"shm_dir": str(shm_dir), "state_dir": str(tmp_path / "st")}})
    tm = telemetry.Telemetry.create("recorder", str(shm_dir))
    try:
        fsutil.write_atomic(actor.status_path(cfg.appliance.state_dir, "recorder"),
                            json.dumps({"name": "recorder", "time_ns": 1, "rings": []}).encode())
        snap = source.Observer(cfg).collect()
    finally:
        tm.close()
    assert snap["status"]["recorder"]["rings"] == []
    assert snap["status"]["recorder"]["age_s"] > 1e6


def test_redact_hides_fix_secrets_and_keeps_the_rest():
    s = "8=FIX.4.4\x01553=user\x01554=s3cret\x01925=n3w\x0196=c2lnbg==\x0158=hi|554=x"
    out = source.redact(s)
    for secret in ("s3cret", "n3w", "c2lnbg=="):
        assert secret not in out
    assert "553=user" in out and "58=hi" in out and out.count("***") == 4
    assert source.redact("1554=ok 2096=ok") == "1554=ok 2096=ok"


def test_strategy_pnl_and_positions_convert_on_the_instrument_grid(ops_cfg):
    cfg = config.load(ops_cfg)
    inst = cfg.instrument("binance", "NKNUSDT")
    from decimal import Decimal
    pnl, quote = source.strategy_pnl(cfg, {"legs": [{"venue": "binance", "symbol": "NKNUSDT"}],
                                           "pnl_tl": 12345})
    assert quote == "USDT"
    assert pnl == float(Decimal(12345) * Decimal(inst.tick) * Decimal(inst.lot))
    assert source.strategy_pnl(cfg, {"legs": [{"venue": "binance", "symbol": "NOPE"}],
                                     "pnl_tl": 1}) == (None, "")
    assert source.position_units(cfg, "binance:NKNUSDT", 7) == float(7 * Decimal(inst.lot))
    assert source.position_units(cfg, "binance:NOPE", 7) is None


def test_regions_are_mapped_read_only(ops_cfg, shm_dir, feeders):
    feeders(ops_cfg, "md", "binance", "64")
    r = source.ReadOnlyRegion(shm_dir / "md.binance")
    try:
        assert not r.mem.flags.writeable
        with pytest.raises((ValueError, TypeError)):
            r.mem[0] = 1
    finally:
        r.close()


def test_a_fix_gateways_kill_line_is_read(ops_cfg, feeders):
    fix = feeders(ops_cfg, "fix", "sim")
    fix.do("working 3", "killack 2")
    snap = source.Observer(config.load(ops_cfg)).collect()
    (a,) = [a for a in snap["actors"] if a["name"] == "fix.sim"]
    assert a["kind"] == "fix" and a["kill_ack_epoch"] == 2
    assert a["gw_kill"]["working"] == 3 and a["gw_kill"]["seen_epoch"] == 0
    assert source.actor_venue(config.load(ops_cfg), "fix.sim") == "binance"
