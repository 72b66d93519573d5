"""Fixtures of the ops tests: a config over a private shm dir and state dir, feeder processes."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.configs import instruments_toml

REPO = Path(__file__).resolve().parents[2]
SYMBOLS = ["NKNUSDT", "BLZETH", "LRCBTC", "RUNEEUR"]


def config_text(shm_dir, state_dir, extra: str = "") -> str:
    return f"""
[appliance]
shm_dir = "{shm_dir}"
state_dir = "{state_dir}"

[[venues]]
name = "binance"
ws_url = "ws://127.0.0.1:1/binance"
rest_url = "http://127.0.0.1:1/binance"

{instruments_toml("binance", SYMBOLS)}

[[strategies]]
kind = "avellaneda_stoikov"
name = "mm-nknusdt"
venue = "binance"
symbol = "NKNUSDT"
session = 0
params = {{ qty = 1, levels = 1, warmup_events = 5, max_inventory = 50, price_unit = 10000.0, requote_ticks = 5000 }}

[fix.sessions.sim]
host = "127.0.0.1"
port = 1
sender_comp_id = "APPLIANCE"
target_comp_id = "SIMEX"
begin_string = "FIX.4.4"
exec_ring = "exec"
order_ring = "orders"
session_index = 0
venue = "binance"
{extra}
"""


@pytest.fixture
def ops_cfg(tmp_path, shm_dir) -> Path:
    p = tmp_path / "appliance.toml"
    p.write_text(config_text(shm_dir, tmp_path / "state"))
    return p


class Feeder:
    """A tests.ops.procs process; ``do(cmd)`` sends one command and waits for its ``ok``."""

    def __init__(self, cfg: Path, *args: str, env: dict | None = None):
        self.p = subprocess.Popen([sys.executable, "-m", "tests.ops.procs", args[0], str(cfg),
                                   *args[1:]], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, cwd=REPO,
                                  env=env or dict(os.environ))
        line = self.p.stdout.readline()
        assert line.strip() == "live", (line, self.p.stderr.read() if self.p.poll() is not None else "")

    def do(self, *cmds: str) -> None:
        for cmd in cmds:
            self.p.stdin.write(cmd + "\n")
            self.p.stdin.flush()
            got = self.p.stdout.readline().strip()
            assert got == "ok " + " ".join(cmd.split()), (cmd, got)

    def stop(self) -> int:
        if self.p.poll() is None:
            try:
                self.p.stdin.write("exit\n")
                self.p.stdin.flush()
            except BrokenPipeError:
                pass
            try:
                self.p.wait(20)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        return self.p.returncode


@pytest.fixture
def feeders():
    started: list[Feeder] = []

    def start(cfg, *args) -> Feeder:
        f = Feeder(cfg, *args)
        started.append(f)
        return f
    yield start
    for f in started:
        f.stop()


def wait_until(pred, timeout: float = 30.0, interval: float = 0.05):
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        time.sleep(interval)
