"""The main job end to end: `appliance sim` with every actor as a real process on loopback and
shared memory, judged by its JSON report (built from the journal, the actors' status and their
telemetry)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_sim_trades_answers_every_order_and_halts_clean_on_the_kill(tmp_path):
    run = tmp_path / "run"
    p = subprocess.run([sys.executable, "-m", "appliance.cli", "sim", "--seconds", "20",
                        "--dir", str(run), "--json"], capture_output=True, text=True,
                       timeout=1800)
    rep = json.loads(p.stdout)                       # exactly one JSON object on stdout
    assert p.returncode == 0, (rep.get("problems"), p.stderr[-3000:])
    assert rep["ok"] and rep["problems"] == []
    # it traded: orders went out on every configured instrument, and some filled
    assert rep["orders"] > 0 and rep["fills"] > 0
    assert all(r["orders"] > 0 for r in rep["instruments"].values()), rep["instruments"]
    assert rep["unanswered"] == 0                    # every order answered by the venue
    # market data was clean over the looped recordings: no gap, no resync, every book synced
    assert rep["md_gaps"] == 0 and rep["md_resyncs"] == 0
    for v, m in rep["md"].items():
        assert m["errors"] == 0 and m["books_valid"] == m["books"], (v, m)
    # the kill: confirmed by the engine and every gateway, nothing new after it
    k = rep["kill"]
    assert k["confirmed"] and k["engine_acked"] and rep["kill_ack_ns"] > 0
    assert all(g["confirmed"] for g in k["gateways"].values())
    assert rep["orders_after_kill"] == 0
    # per-hop latency histograms were filled by the actors themselves
    for hop in ("tick_to_trade", "order_to_wire", "wire_to_ack"):
        assert rep["latency_ns"][hop]["count"] > 0, rep["latency_ns"].keys()
    assert rep["tick_to_trade_p50_ns"] is not None and rep["tick_to_trade_p99_ns"] is not None
    assert set(rep["exit_codes"].values()) == {0}
    assert rep["journal_gaps"] == 0
    assert (run / "report.json").exists()


def test_sim_refuses_a_bad_argument_in_one_line():
    p = subprocess.run([sys.executable, "-m", "appliance.cli", "sim", "--seconds", "0"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "must be a finite number > 0" in p.stderr
    assert "Traceback" not in p.stderr
