"""Both commands as an operator runs them, against real actors: the venue simulator, the real
`appliance md` gateway publishing a recorded Binance session into shared memory, and the
engine's side of the kill protocol (a feeder: the real engine's cold compile takes minutes).
`appliance exporter` is scraped over HTTP, `appliance top` runs in a pseudo-terminal; its kill
key halts the appliance and the next scrape says so."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal

import pytest

from tests.ops.conftest import REPO, SYMBOLS, config_text, wait_until
from tests.ops.test_exporter import Exporter, value
from tests.ops.test_top import Pty


@pytest.mark.slow
def test_exporter_and_top_watch_a_real_md_gateway_and_halt_it(tmp_path, shm_dir, feeders):
    from appliance.sim import venue as sim
    from appliance.sim.venue import VenueSim
    from appliance.venues import replay

    (book_path,) = [p for p in sim.default_recordings("binance") if ".ws." in p.name]
    offline = replay.run(book_path, "binance")
    with VenueSim("binance") as s:
        cfg = tmp_path / "appliance.toml"
        text = config_text(shm_dir, tmp_path / "state", "\n[rings]\nmd_capacity = 262144\n")
        cfg.write_text(text.replace("ws://127.0.0.1:1/binance", s.ws_url)
                       .replace("http://127.0.0.1:1/binance", s.rest_url))
        stats = tmp_path / "md-stats.json"
        md = subprocess.Popen([sys.executable, "-m", "appliance.cli", "--config", str(cfg), "md",
                               "--venue", "binance", "--stats", str(stats), "--stats-every", "0.2"],
                              cwd=REPO, env=dict(os.environ), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
        eng = feeders(cfg, "engine")
        exp = Exporter(cfg, "--port", "0")
        t = None
        try:
            def md_done():
                assert md.poll() is None, md.stderr.read()[-3000:]
                try:
                    st = json.loads(stats.read_text())
                except (OSError, ValueError):
                    return False
                return (s.stats.completed >= 1 and st["frames"] >= s.stats.frames_sent
                        and st["books_valid"] == len(SYMBOLS))
            wait_until(md_done, timeout=300, interval=0.2)
            fams = exp.scrape()
            assert value(fams, "appliance_up") == 1
            assert value(fams, "appliance_actor_up", actor="md.binance", kind="md") == 1
            st = json.loads(stats.read_text())
            assert value(fams, "appliance_md_frames_total", actor="md.binance",
                         venue="binance") >= s.stats.frames_sent
            head = value(fams, "appliance_ring_records_total", ring="md.binance")
            assert head >= st["records"] > 0
            assert value(fams, "appliance_kill_switch") == 0

            t = Pty([sys.executable, "-m", "appliance.cli", "--config", str(cfg), "top"],
                    cols=200, rows=80)
            screen = t.wait(lambda x: x.count("synced") == len(SYMBOLS) and "md.binance" in x)
            want = offline.top("NKNUSDT", 5)
            bid, ask = want["bids"][0][0], want["asks"][0][0]
            assert any(len(ln.split()) >= 4 and Decimal(ln.split()[1]) == Decimal(bid)
                       and Decimal(ln.split()[2]) == Decimal(ask)
                       for ln in screen.splitlines()
                       if len(ln.split()) >= 4 and _decimals(ln.split()[:4])), screen
            # while top is attached, its consumer shows on the md ring in the exporter
            fams = exp.scrape()
            assert value(fams, "appliance_ring_consumer_lost_total", ring="md.binance",
                         consumer="top") == 0
            t.send("k")
            t.wait(lambda x: "Pull the kill switch?" in x)
            t.send("y")
            screen = t.wait(lambda x: f"HALTED (epoch 1): engine pid {eng.p.pid} acknowledged" in x)
            fams = exp.scrape()
            assert value(fams, "appliance_kill_switch") == 1
            assert value(fams, "appliance_kill_ack_epoch") == 1
            assert value(fams, "appliance_risk_state", state="HALTED") == 1
            t.send("q")
            wait_until(lambda: (t.pump(0.1), t.p.poll() is not None)[1], timeout=30)
            assert t.p.returncode == 0
        finally:
            if t is not None:
                t.close()
            exp.stop()
            md.terminate()
            md.wait(30)


def _decimals(words) -> bool:
    try:
        [Decimal(w) for w in words]
    except ArithmeticError:
        return False
    return True
