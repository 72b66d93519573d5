"""Both commands from a second terminal during `appliance sim --keep` (every real actor:
venue simulator, md gateway, engine, FIX gateway, exchange simulator, recorder): the exporter is
scraped over HTTP and parsed, `appliance top` runs in a pseudo-terminal, both pointed at the
run's config and shared memory the way the sim prints them."""
from __future__ import annotations

import os
import queue
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

ACTORS = ("md.binance", "engine", "fix.sim", "exchange", "recorder")
HOP_METRICS = {"appliance_hop_latency_seconds_bucket", "appliance_hop_latency_seconds_count"}


def _lines(stream, q: queue.Queue) -> None:
    for line in stream:
        q.put(line)
    q.put(None)


def _expect(q: queue.Queue, pattern: str, out: list, timeout: float) -> re.Match:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            line = q.get(timeout=1)
        except queue.Empty:
            continue
        if line is None:
            break
        out.append(line)
        m = re.search(pattern, line)
        if m:
            return m
    raise AssertionError(f"sim never printed {pattern!r}:\n" + "".join(out)[-4000:])


@pytest.mark.slow
def test_exporter_and_top_during_a_sim_run(tmp_path):
    run = tmp_path / "run"
    sim = subprocess.Popen([sys.executable, "-m", "appliance.cli", "sim", "--seconds", "25",
                            "--keep", "--dir", str(run)], cwd=REPO, env=dict(os.environ),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    q: queue.Queue = queue.Queue()
    threading.Thread(target=_lines, args=(sim.stdout, q), daemon=True).start()
    out: list[str] = []
    shm = None
    exp = t = None
    try:
        shm = _expect(q, r"shared memory (\S+)", out, 120).group(1)
        _expect(q, r"all actors up", out, 900)
        cfg = run / "appliance.toml"
        exp = Exporter(cfg, "--port", "0", "--shm-dir", shm)
        fams = exp.scrape()
        assert value(fams, "appliance_up") == 1
        for a in ACTORS:
            assert samples(fams, "appliance_actor_up", actor=a)[0].value == 1, a
        assert value(fams, "appliance_ring_records_total", ring="md.binance") > 0
        for r in ("orders", "exec"):
            assert value(fams, "appliance_ring_writer_up", ring=r) == 1
        assert value(fams, "appliance_ring_consumer_lost_total", ring="md.binance",
                     consumer="engine") == 0
        assert value(fams, "appliance_kill_switch") == 0
        assert value(fams, "appliance_risk_state", state="RUNNING") == 1
        assert value(fams, "appliance_strategy_open_orders", strategy="mm-nknusdt") >= 0
        wait_until(lambda: value(exp.scrape(), "appliance_engine_md_total", actor="engine") > 0,
                   timeout=60, interval=0.5)

        t = Pty([sys.executable, "-m", "appliance.cli", "--config", str(cfg), "top",
                 "--shm-dir", shm], cols=200, rows=90)
        screen = t.wait(lambda s: "binance:NKNUSDT  synced" in s and "mm-nknusdt" in s
                        and all(a in s for a in ACTORS))
        assert "kill switch: clear" in screen and "risk state: RUNNING" in screen
        for a in ACTORS:
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

        # the sim ends by pulling the kill switch: the engine's ack stays in the control block
        sim.wait(600)
        fams = exp.scrape()
        assert value(fams, "appliance_up") == 0
        assert value(fams, "appliance_kill_ack_epoch") >= value(fams, "appliance_kill_epoch") >= 1
        assert value(fams, "appliance_kill_ack_seconds") > 0
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
