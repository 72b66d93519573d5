"""Both commands from a second terminal during `appliance sim --keep` (every real actor:
venue simulators, md gateways, engine, FIX gateways, exchange simulator, recorder): the exporter
is scraped over HTTP and parsed, `appliance top` runs in a pseudo-terminal, both given only the
run's config (`appliance --config RUN/appliance.toml ...`, which names the run's shm dir)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time

import pytest

from tests.ops.conftest import REPO, wait_until
from tests.ops.test_exporter import Exporter, dashboard_metrics, samples, value
from tests.ops.test_top import Pty

HOP_METRICS = {"appliance_hop_latency_seconds_bucket", "appliance_hop_latency_seconds_count"}


def _lines(stream, out: list) -> None:
    for line in stream:
        out.append(line)


def _actors(cfg) -> list[str]:
    venues = [v.name for v in cfg.venues]
    return [f"md.{v}" for v in venues] + [f"fix.{v}" for v in venues] + ["engine", "exchange",
                                                                        "recorder"]


def _live(sim, run, out: list, timeout: float):
    """The run's config once every actor of it says it is live (status files)."""
    from appliance import actor, config
    end = time.monotonic() + timeout
    cfg = None
    while time.monotonic() < end:
        assert sim.poll() is None, "the sim ended before its actors were live:\n" + \
            "".join(out)[-4000:]
        if cfg is None and (run / "appliance.toml").exists():
            cfg = config.load(run / "appliance.toml")
        if cfg is not None and all((actor.read_status(cfg.appliance.state_dir, a) or {})
                                   .get("live") for a in _actors(cfg)):
            return cfg
        time.sleep(0.2)
    raise AssertionError("the sim's actors never all went live:\n" + "".join(out)[-4000:])


@pytest.mark.slow
def test_exporter_and_top_during_a_sim_run(tmp_path):
    run = tmp_path / "run"
    sim = subprocess.Popen([sys.executable, "-m", "appliance.cli", "sim", "--seconds", "25",
                            "--keep", "--dir", str(run)], cwd=REPO, env=dict(os.environ),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out: list[str] = []
    threading.Thread(target=_lines, args=(sim.stdout, out), daemon=True).start()
    shm = None
    exp = t = None
    try:
        c = _live(sim, run, out, 900)
        shm = c.appliance.shm_dir
        venues = [v.name for v in c.venues]
        assert "binance" in venues and len(venues) >= 2
        actors = _actors(c)
        cfg = run / "appliance.toml"
        exp = Exporter(cfg, "--port", "0")
        fams = exp.scrape()
        assert value(fams, "appliance_up") == 1
        for a in actors:
            assert samples(fams, "appliance_actor_up", actor=a)[0].value == 1, a
        assert value(fams, "appliance_ring_records_total", ring="md.binance") > 0
        sessions = c.extra["fix"]["sessions"].values()
        for r in ["orders"] + [x.get("exec_ring", "exec") for x in sessions]:
            assert value(fams, "appliance_ring_writer_up", ring=r) == 1, r
        assert value(fams, "appliance_ring_consumer_lost_total", ring="md.binance",
                     consumer="engine") == 0
        assert value(fams, "appliance_kill_switch") == 0
        assert value(fams, "appliance_risk_state", state="RUNNING") == 1
        assert value(fams, "appliance_strategy_open_orders", strategy="mm-nknusdt") >= 0
        wait_until(lambda: value(exp.scrape(), "appliance_engine_md_total", actor="engine") > 0,
                   timeout=60, interval=0.5)

        t = Pty([sys.executable, "-m", "appliance.cli", "--config", str(cfg), "top"],
                cols=200, rows=120)
        screen = t.wait(lambda s: "binance:NKNUSDT  synced" in s and "mm-nknusdt" in s
                        and all(a in s for a in actors))
        assert "kill switch: clear" in screen and "risk state: RUNNING" in screen
        for a in actors:
            assert re.search(rf"^ {re.escape(a)}\s+\S+\s+\d+\s+alive", screen, re.M), (a, screen)
        t.send("q")
        wait_until(lambda: (t.pump(0.1), t.p.poll() is not None)[1], timeout=30)
        assert t.p.returncode == 0

        # the dashboard's queries, against the running appliance (the kill ack comes below)
        exported = {s.name for f in exp.scrape().values() for s in f.samples}
        missing = {m for m in dashboard_metrics() if m not in exported}
        missing.discard("appliance_kill_ack_seconds")
        if "appliance_hop_latency_seconds_count" in exported:
            assert not missing, sorted(missing)
        else:                                  # no actor publishes a hop histogram yet
            assert missing <= HOP_METRICS, sorted(missing)

        # the sim ends by pulling the kill switch: the halt and the engine's ack stay
        sim.wait(600)
        fams = exp.scrape()
        assert value(fams, "appliance_up") == 0
        assert value(fams, "appliance_kill_switch") == 1 == value(fams, "appliance_kill_persisted")
        assert value(fams, "appliance_kill_ack_epoch") >= value(fams, "appliance_kill_epoch") >= 1
        assert value(fams, "appliance_kill_ack_seconds") > 0
        for v in venues:
            assert value(fams, "appliance_actor_kill_ack_epoch", actor=f"fix.{v}") >= 1
    finally:
        if t is not None:
            t.close()
        if exp is not None:
            exp.stop()
        if sim.poll() is None:
            sim.terminate()
            sim.wait(60)
        if shm and shm.startswith("/dev/shm/appliance-sim-"):
            shutil.rmtree(shm, ignore_errors=True)
