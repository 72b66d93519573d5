"""The real actors on loopback, in both layouts, fill their per-hop telemetry: the md gateway's
frame_to_publish, the FIX gateway's order_to_wire and tick_to_trade (and the one-process group
runs the three actors as themselves: control-block lines, status files, one pid)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from appliance.sim.run import config_header
from tests.configs import instruments_toml


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(run: Path, shm: Path, ws_port: int, fix_port: int) -> Path:
    text = config_header(run, shm) + f"""
[[venues]]
name = "binance"
ws_url = "ws://127.0.0.1:{ws_port}/binance"
rest_url = "http://127.0.0.1:{ws_port}/binance"

{instruments_toml("binance", ["NKNUSDT"])}

[[strategies]]
kind = "avellaneda_stoikov"
name = "mm"
venue = "binance"
symbol = "NKNUSDT"
session = 0
params = {{ qty = 50000000000, max_inventory = 200000000000, levels = 1, warmup_events = 2, price_unit = 10000.0, requote_ticks = 0, min_half_spread = 0.5 }}

[risk]
max_loss = 100.0

[risk.limits]
max_qty = 100000000000000
max_notional = 1000.0
max_position = 1000000000000
max_open_orders = 8
collar_bps = 500
max_spread_ticks = 100000000
self_trade_prevention = true

[risk.venues.binance]
rate_per_s = 1000
burst = 1000
check_balance = false

[fix.sessions.binance]
host = "127.0.0.1"
port = {fix_port}
sender_comp_id = "APPLIANCE"
target_comp_id = "SIM-BINANCE"
begin_string = "FIX.4.4"
heartbeat_s = 5
session_index = 0
venue = "binance"
exec_ring = "exec.binance"
"""
    path = run / "appliance.toml"
    path.write_text(text)
    return path


def _cli(cfg: Path | None, *args: str) -> list[str]:
    return [sys.executable, "-m", "appliance.cli"] + (["--config", str(cfg)] if cfg else []) + list(args)


def _hist_counts(shm: Path) -> dict:
    from appliance.transport import telemetry
    out = {}
    for actor, snap in telemetry.read_all(str(shm)).items():
        for hop, h in snap["hists"].items():
            out[(actor, hop)] = h
    return out


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["one", "split"])
def test_real_actors_fill_frame_order_and_tick_to_trade_histograms(tmp_path, layout):
    from appliance import actor, data
    from appliance.sim import venue as venue_sim
    run = tmp_path / "run"
    run.mkdir()
    shm = tmp_path / "shm"
    shm.mkdir()
    ws_port, fix_port = _port(), _port()
    cfg = _config(run, shm, ws_port, fix_port)
    env = dict(os.environ, APPLIANCE_SHM_DIR=str(shm))
    procs = {}

    def spawn(name, argv):
        log = open(run / f"{name}.log", "wb")
        procs[name] = (subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True), log)

    recs = venue_sim.default_recordings("binance", data.venues_dir())
    spawn("venue-sim", _cli(cfg, "venue-sim", "--venue", "binance", "--port", str(ws_port),
                            "--pace", "realtime", "--speed", "20", "--loop", *sum((["--recording", str(r)] for r in recs), [])))
    spawn("exchange", _cli(cfg, "fix", "exchange", "--port", str(fix_port)))
    if layout == "one":
        spawn("group", _cli(cfg, "group", "--venue", "binance", "--session", "binance"))
    else:
        spawn("md", _cli(cfg, "md", "--venue", "binance"))
        spawn("engine", _cli(cfg, "engine"))
        spawn("fix", _cli(cfg, "fix", "gateway", "--session", "binance"))
    want = {("md.binance", "frame_to_publish"), ("fix.binance", "order_to_wire"),
            ("fix.binance", "tick_to_trade"), ("fix.binance", "wire_to_ack")}
    hists = {}
    try:
        end = time.monotonic() + 540
        while time.monotonic() < end:
            for name, (p, _log) in procs.items():
                assert p.poll() is None, f"{name} exited {p.returncode}: " + \
                    (run / f"{name}.log").read_text(errors="replace")[-3000:]
            hists = _hist_counts(shm)
            if all((hists.get(k) or {}).get("count") for k in want):
                break
            time.sleep(0.5)
        statuses = {n: actor.read_status(run / "state", n) for n in ("md.binance", "engine",
                                                                      "fix.binance")}
    finally:
        codes = {}
        for name in ("group", "md", "fix", "engine", "exchange", "venue-sim"):
            if name in procs:
                p, log = procs[name]
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
                log.close()
                codes[name] = p.returncode
    for k in want:
        h = hists.get(k)
        assert h and h["count"] > 0, f"{k}: {h} (all: {sorted(hists)})"
        assert 0 < h["p50"] <= h["max"] and h["min"] <= h["p50"]
    # tick-to-trade spans the whole path: never shorter than the FIX gateway's part of it
    assert hists[("fix.binance", "tick_to_trade")]["min"] >= 0
    for n, st in statuses.items():
        assert st and st["live"], (n, st)
    if layout == "one":
        assert len({st["pid"] for st in statuses.values()}) == 1
        text = (run / "group.log").read_text(errors="replace")
        assert codes["group"] == 0, text[-3000:]
        # the venue's answers were read by the compiled loop itself, not only by Python
        final = [json.loads(line[line.index("{"):]) for line in text.splitlines()
                 if '"fix_reads"' in line]
        assert final and final[-1]["fix_reads"] > 0, final
    else:
        assert codes["md"] == codes["engine"] == codes["fix"] == 0


def test_sender_number_written_by_compiled_code_survives_a_restart(tmp_path):
    """What the one-process loop writes into the store's mapped seqnums file before it sends
    (fixgw.put_seq through FileStore.sender_view) is what a restarted store reads back."""
    from numba import njit

    from appliance.fix import gateway as fixgw
    from appliance.fix.store import FileStore

    @njit
    def put(view, n):                   # put_seq is compiled-only (no Python entry point)
        fixgw.put_seq(view, n)

    st = FileStore(tmp_path / "store")
    st.set_next_target(7)
    view = st.sender_view()
    assert view is not None and view.shape == (20,)
    put(view, 123456789012)
    st.note_next_sender(123456789012)
    st.close()
    st = FileStore(tmp_path / "store")
    assert (st.next_sender, st.next_target) == (123456789012, 7)
    st.close()
    # fsync "always": every number must go through the store's own fsynced write, so compiled
    # code gets no view (and the loop leaves order sending to the FIX gateway's Python step)
    st = FileStore(tmp_path / "always", fsync="always")
    assert st.sender_view() is None
    st.close()
