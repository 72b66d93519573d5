"""`appliance exporter`: scraped over HTTP while feeder processes publish, parsed with
prometheus-client's parser; its failure modes; the Grafana dashboard against what it exports."""
from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from appliance.ops import exporter
from appliance.transport import hist
from tests.ops.conftest import REPO, config_text

DASHBOARD = REPO / "appliance/ops/grafana/appliance.json"
# counter names the real actors publish in telemetry (the dashboard's gateway and engine panels)
MD_COUNTERS = ("frames", "records", "gaps", "resyncs", "errors")
FIX_COUNTERS = ("sent", "execs", "refused")


class Exporter:
    """`appliance exporter` as a process; ``url`` once it printed its address."""

    def __init__(self, cfg: Path, *args: str):
        self.p = subprocess.Popen([sys.executable, "-m", "appliance.cli", "--config", str(cfg),
                                   "exporter", *args], cwd=REPO, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=dict(os.environ))
        line = self.p.stdout.readline()
        m = re.search(r"serving (http://\S+/metrics)", line)
        assert m, (line, self.p.stderr.read() if self.p.poll() is not None else "")
        self.url = m.group(1)

    def scrape(self) -> dict:
        with urllib.request.urlopen(self.url, timeout=30) as r:
            assert r.headers["Content-Type"].startswith("text/plain")
            text = r.read().decode()
        return {f.name: f for f in text_string_to_metric_families(text)}

    def stop(self) -> int:
        self.p.terminate()
        try:
            self.p.wait(20)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        return self.p.returncode


@pytest.fixture
def exporters():
    started = []

    def start(cfg, *args):
        e = Exporter(cfg, *args)
        started.append(e)
        return e
    yield start
    for e in started:
        e.stop()


def samples(fams: dict, name: str, **labels) -> list:
    """Samples named ``name`` (a family's sample name, e.g. x_total or x_bucket) with labels."""
    out = []
    for f in fams.values():
        for s in f.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                out.append(s)
    return out


def value(fams: dict, name: str, **labels) -> float:
    got = samples(fams, name, **labels)
    assert len(got) == 1, (name, labels, got)
    return got[0].value


def test_histogram_buckets_are_cumulative_le_edges_that_hold_exactly():
    row = hist.new_row()
    values = [0, 5, 127, 128, 129, 191, 192, 1000, 1023, 1024, 5_000, 123_456, 10 ** 9, 10 ** 12]
    for v in values:
        hist.record(row, v)
    bk, ssum, count = exporter.buckets(row)
    assert count == len(values) and ssum == sum(values) / 1e9
    assert bk[-1] == ("+Inf", float(len(values)))
    prev = 0.0
    for le, n in bk[:-1]:
        assert n >= prev
        prev = n
        # exactly the values <= le (integer ns): the edge is the last value of a bucket
        assert n == sum(1 for v in values if v <= round(float(le) * 1e9)), le
    les = [float(le) for le, _ in bk[:-1]]
    assert les == sorted(les) and les[0] == 127e-9 and 51 < les[-1] < 52


def test_scrape_has_actors_rings_latency_counters_kill_risk_and_trading(ops_cfg, shm_dir,
                                                                       feeders, exporters):
    md = feeders(ops_cfg, "md", "binance", "1024")
    eng = feeders(ops_cfg, "engine")
    md.do("snapshot 0 1000 1001 5", "hist frame_to_publish 900 3", "hist frame_to_publish 40000",
          *(f"counter {c} {i + 1}" for i, c in enumerate(MD_COUNTERS)), "gauge books_valid 4")
    eng.do("hist md_to_order 2500 2", "counter fills 3")
    e = exporters(ops_cfg, "--port", "0")
    assert e.url.startswith("http://127.0.0.1:")
    fams = e.scrape()
    assert value(fams, "appliance_up") == 1
    assert value(fams, "appliance_actor_up", actor="md.binance", kind="md") == 1
    assert value(fams, "appliance_actor_up", actor="engine", kind="engine") == 1
    assert 0 <= value(fams, "appliance_actor_heartbeat_age_seconds", actor="engine") < 60
    assert value(fams, "appliance_actor_loops_total", actor="engine") > 0
    assert fams["appliance_actor_loops"].type == "counter"
    assert value(fams, "appliance_ring_records_total", ring="md.binance") == 12
    assert value(fams, "appliance_ring_capacity", ring="md.binance") == 1024
    assert value(fams, "appliance_ring_writer_up", ring="md.binance") == 1
    # latency histogram: counts, sum, buckets
    lab = {"actor": "md.binance", "hop": "frame_to_publish", "venue": "binance"}
    assert fams["appliance_hop_latency_seconds"].type == "histogram"
    assert value(fams, "appliance_hop_latency_seconds_count", **lab) == 4
    assert math.isclose(value(fams, "appliance_hop_latency_seconds_sum", **lab), 42700e-9)
    bks = {s.labels["le"]: s.value for s in samples(fams, "appliance_hop_latency_seconds_bucket", **lab)}
    assert bks["+Inf"] == 4
    assert bks["7.67e-07"] == 0 and bks["1.023e-06"] == 3
    assert bks["3.2767e-05"] == 3 and bks["4.9151e-05"] == 4
    assert value(fams, "appliance_hop_latency_seconds_count", actor="engine", hop="md_to_order",
                 venue="") == 2
    # telemetry counters and gauges, by family
    for i, c in enumerate(MD_COUNTERS):
        assert value(fams, f"appliance_md_{c}_total", actor="md.binance", venue="binance") == i + 1
    assert fams["appliance_md_frames"].type == "counter"
    assert value(fams, "appliance_md_books_valid", actor="md.binance") == 4
    assert fams["appliance_md_books_valid"].type == "gauge"
    assert value(fams, "appliance_engine_fills_total", actor="engine") == 3
    # kill switch and risk state
    assert value(fams, "appliance_kill_switch") == 0 and value(fams, "appliance_kill_persisted") == 0
    assert value(fams, "appliance_risk_state", state="RUNNING") == 1
    assert value(fams, "appliance_risk_state", state="HALTED") == 0
    # trading, from the engine's status file (a real EngineState snapshot)
    assert value(fams, "appliance_position", venue="binance", instrument="NKNUSDT") == 0
    assert value(fams, "appliance_strategy_pnl", strategy="mm-nknusdt", quote="USDT") == 0
    assert value(fams, "appliance_strategy_open_orders", strategy="mm-nknusdt") == 0
    assert value(fams, "appliance_risk_passed_total") == 0
    # every sample name is a valid metric name with the prefix
    for f in fams.values():
        assert f.name.startswith("appliance_")
        for s in f.samples:
            assert re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", s.name)


def test_a_kill_shows_in_the_next_scrape_with_the_engines_ack(ops_cfg, shm_dir, feeders,
                                                              exporters):
    from appliance import config
    from appliance.engine import killswitch
    from appliance.transport import control
    feeders(ops_cfg, "engine")
    e = exporters(ops_cfg, "--port", "0")
    assert value(e.scrape(), "appliance_kill_switch") == 0
    cfg = config.load(ops_cfg)
    cb = control.ControlBlock.open(str(shm_dir))
    try:
        assert killswitch.kill(cb, cfg.appliance.state_dir, "test", timeout_s=60)["confirmed"]
    finally:
        cb.close()
    fams = e.scrape()
    assert value(fams, "appliance_kill_switch") == 1
    assert value(fams, "appliance_kill_epoch") == value(fams, "appliance_kill_ack_epoch") == 1
    assert value(fams, "appliance_kill_persisted") == 1
    assert value(fams, "appliance_risk_state", state="HALTED") == 1


def test_nothing_running_is_exported_as_down_not_an_error(tmp_path, exporters):
    cfg = tmp_path / "appliance.toml"
    cfg.write_text(config_text(tmp_path / "no-shm", tmp_path / "state"))
    e = exporters(cfg, "--port", "0")
    fams = e.scrape()
    assert value(fams, "appliance_up") == 0
    assert samples(fams, "appliance_actor_up") == []
    assert not (tmp_path / "no-shm").exists()
    assert e.stop() == 0                       # SIGTERM: a clean stop


def test_sigint_stops_the_exporter_cleanly_too(tmp_path, exporters):
    cfg = tmp_path / "appliance.toml"
    cfg.write_text(config_text(tmp_path / "no-shm", tmp_path / "state"))
    e = exporters(cfg, "--port", "0")
    e.p.send_signal(signal.SIGINT)
    assert e.p.wait(20) == 0
    assert "Traceback" not in e.p.stderr.read()


def test_exporter_binds_the_configured_host_and_port(tmp_path, exporters):
    with socket.socket() as s:
        s.bind(("127.0.0.2", 0))
        port = s.getsockname()[1]
    cfg = tmp_path / "appliance.toml"
    cfg.write_text(config_text(tmp_path / "shm", tmp_path / "state",
                               f'\n[telemetry]\nexporter_host = "127.0.0.2"\n'
                               f'exporter_port = {port}\n'))
    e = exporters(cfg)
    assert e.url == f"http://127.0.0.2:{port}/metrics"
    e.scrape()
    with pytest.raises(OSError):                # not on the other loopback addresses
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
    e2 = exporters(cfg, "--host", "127.0.0.1", "--port", "0")
    assert e2.url.startswith("http://127.0.0.1:")


def _run(*args, cfg=None) -> subprocess.CompletedProcess:
    pre = ["--config", str(cfg)] if cfg else []
    return subprocess.run([sys.executable, "-m", "appliance.cli", *pre, *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_busy_port_is_one_line_and_exit_2(ops_cfg):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = _run("exporter", "--port", str(port), cfg=ops_cfg)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in r.stderr and "in use" in r.stderr


@pytest.mark.parametrize("args,why", [
    (["--port", "99999"], "not a TCP port"),
    (["--host", "no.such.host.invalid", "--port", "0"], "cannot listen on no.such.host.invalid"),
])
def test_bad_address_is_one_line_and_exit_2(ops_cfg, args, why):
    r = _run("exporter", *args, cfg=ops_cfg)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert why in lines[-1]
    if ": error: " not in lines[-1]:           # argparse: usage lines, then the error line
        assert len(lines) == 1, r.stderr


@pytest.mark.parametrize("text,why", [
    ("[appliance\n", "not valid TOML"),
    ("[telemetry]\nexporter_port = 0\n", "exporter_port"),
    ("[telemetry]\nrefresh_hz = 1000\n", "refresh_hz"),
    ("[telemetry]\nbogus = 1\n", "bogus"),
])
@pytest.mark.parametrize("cmd", ["exporter", "top"])
def test_bad_config_is_one_line_and_exit_2(tmp_path, text, why, cmd):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    r = _run(cmd, cfg=cfg)
    assert r.returncode == 2 and why in r.stderr, r.stderr
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr


@pytest.mark.parametrize("cmd", ["exporter", "top"])
def test_missing_config_is_one_line_and_exit_2(tmp_path, cmd):
    r = _run(cmd, cfg=tmp_path / "missing.toml")
    assert r.returncode == 2 and "cannot read config" in r.stderr
    assert r.stderr.strip().count("\n") == 0


def test_help_of_both_commands():
    for cmd in ("top", "exporter"):
        r = _run(cmd, "--help")
        assert r.returncode == 0 and f"appliance {cmd}" in r.stdout
    assert "--port" in _run("exporter", "--help").stdout


# --- the Grafana dashboard ---------------------------------------------------------------------

def dashboard_metrics() -> set[str]:
    d = json.loads(DASHBOARD.read_text())
    names = set()
    for p in d["panels"]:
        for t in p.get("targets", []):
            for m in re.findall(r"\b(appliance_[a-zA-Z0-9_]+)", t["expr"]):
                names.add(m)
    return names


def test_dashboard_is_valid_json_with_prometheus_panels_and_unique_ids():
    d = json.loads(DASHBOARD.read_text())
    assert d["uid"] and d["title"] and d["schemaVersion"] >= 30
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    queried = [p for p in d["panels"] if p["type"] != "row"]
    assert len(queried) >= 15
    for p in queried:
        assert p["datasource"]["type"] == "prometheus" and p["targets"], p["title"]
        for t in p["targets"]:
            assert t["expr"].strip() and t["refId"]
    assert {v["name"] for v in d["templating"]["list"]} >= {"datasource"}
    assert len(dashboard_metrics()) >= 20


def test_every_metric_the_dashboard_queries_is_exported(ops_cfg, shm_dir, feeders, exporters):
    from appliance.engine.kernels import STAT_NAMES
    from appliance.transport import ring as ring_mod
    md = feeders(ops_cfg, "md", "binance", "1024")
    eng = feeders(ops_cfg, "engine")
    md.do("snapshot 0 1000 1001 5", "hist frame_to_publish 900",
          *(f"counter {c} 1" for c in MD_COUNTERS))
    # the engine's counter names are the real ones (its stats)
    eng.do("hist md_to_order 2500", *(f"counter {n} 1" for n in STAT_NAMES.values()))
    fix = feeders(ops_cfg, "fix", "sim")
    fix.do("working 2", "killack 1", *(f"counter {c} 1" for c in FIX_COUNTERS),
           *(f"hist {h} 1000" for h in ("order_to_wire", "wire_to_ack", "tick_to_trade")))
    r = ring_mod.RingReader.attach("md.binance", consumer="engine", shm_dir=str(shm_dir))
    from appliance import config
    from appliance.engine import killswitch
    from appliance.transport import control
    try:
        cb = control.ControlBlock.open(str(shm_dir))
        try:
            assert killswitch.kill(cb, config.load(ops_cfg).appliance.state_dir, "t",
                                   timeout_s=60)["confirmed"]
        finally:
            cb.close()
        e = exporters(ops_cfg, "--port", "0")
        fams = e.scrape()
    finally:
        r.close()
    assert value(fams, "appliance_fix_working_orders", actor="fix.sim") == 2
    assert value(fams, "appliance_actor_kill_ack_epoch", actor="fix.sim") == 1
    assert value(fams, "appliance_actor_up", actor="fix.sim", kind="fix") == 1
    assert value(fams, "appliance_fix_sent_total", actor="fix.sim", venue="binance") == 1
    exported = {s.name for f in fams.values() for s in f.samples}
    missing = sorted(m for m in dashboard_metrics() if m not in exported)
    assert not missing, missing
