"""The main job end to end: every actor as a real process on loopback and shared memory."""
from __future__ import annotations

import json
import subprocess
import sys


def test_sim_runs_every_actor_trades_halts_on_kill_and_journals(tmp_path):
    run = tmp_path / "run"
    p = subprocess.run([sys.executable, "-m", "appliance.cli", "sim", "--seconds", "8", "--dir", str(run)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    rep = json.loads((run / "report.json").read_text())
    # the recording plays at its real pace, about 9 frames/s: ~11 s of streaming gives ~100
    assert rep["md"]["frames"] > 50 and rep["md"]["errors"] == 0 and rep["md"]["gaps"] == 0
    eng = rep["engine"]["stats"]
    assert eng["md"] > 1000                      # the engine consumed the md ring
    assert eng["new"] >= 1                       # the market maker quoted through the risk gate
    assert eng["acked_epoch"] == 1               # and acknowledged the kill switch
    assert rep["kill"]["exit"] == 0 and "acknowledged" in rep["kill"]["output"]
    assert all(code == 0 for code in rep["exit_codes"].values()), rep["exit_codes"]
    rings = {r["ring"]: r for r in rep["journal"]["rings"]} if "rings" in rep["journal"] else {}
    assert rings, rep["journal"]
    assert rings["md.binance"]["records"] == rep["md"]["records"]   # every md record journalled
    assert rings["orders"]["records"] >= eng["new"]
