"""``appliance sim``: the whole appliance in sim mode on one box, end to end, then a report.

Starts, as separate processes on loopback and a private shared-memory directory:

    venue-sim (recorded Binance session, real WebSocket + REST)
      -> appliance md --venue binance            -> [md.binance ring]
      -> appliance engine (market maker, risk)   -> [orders ring]
      -> appliance fix gateway --session sim     -> FIX over TCP -> appliance fix exchange
         exchange acks / fills                   -> [exec ring] -> engine
    appliance recorder journals every ring (zstd)

After ``--seconds`` it pulls the kill switch (``appliance kill``: the engine cancels every
working order and acknowledges), stops every process with SIGTERM, and prints what happened:
md frames and records, orders, fills, tick-to-trade latency, kill acknowledgement time, and the
journal's record and gap counts. Logs of every process are kept in the run directory.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path



def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _recordings() -> Path:
    from appliance import data
    d = data.venues_dir()
    if not (d / "BINANCE.ws.1.0").exists():
        raise FileNotFoundError(f"no Binance recording in {d}")
    return d


def _toml_str(v: str) -> str:
    return json.dumps(v)


def write_config(run: Path, ws_port: int, fix_port: int) -> Path:
    from appliance.venues import binance
    data = _recordings()
    symbols = ["NKNUSDT", "BLZETH", "LRCBTC", "RUNEEUR"]
    instruments = binance.load_instruments((data / "BINANCE.0").read_bytes(), symbols)
    instr = "\n".join(f"""[[instruments]]
venue = "binance"
symbol = {_toml_str(i.symbol)}
tick = {_toml_str(i.tick)}
lot = {_toml_str(i.lot)}
""" for i in instruments)
    text = f"""
[appliance]
mode = "sim"
journal_dir = {_toml_str(str(run / "journal"))}
state_dir = {_toml_str(str(run / "state"))}
log_dir = {_toml_str(str(run / "log"))}

[wait]
strategy = "backoff"
spin_iterations = 200
backoff_min_ns = 20000
backoff_max_ns = 500000

[[venues]]
name = "binance"
ws_url = "ws://127.0.0.1:{ws_port}/binance"
rest_url = "http://127.0.0.1:{ws_port}/binance"

{instr}

[[strategies]]
kind = "avellaneda_stoikov"
name = "mm-nknusdt"
venue = "binance"
symbol = "NKNUSDT"
session = 0
params = {{ qty = 1, levels = 1, warmup_events = 5, max_inventory = 50, price_unit = 10000.0, requote_ticks = 5000 }}

[risk]
max_loss = 1000.0
loss_streak_reduce = 5
loss_streak_pause = 10

[risk.limits]
max_qty = 1000000000
max_notional = 1000.0
max_position = 1000000000
max_open_orders = 8
collar_bps = 500
max_spread_ticks = 10000000
self_trade_prevention = true

[risk.venues.binance]
rate_per_s = 50
burst = 100
check_balance = false

[fix.sessions.sim]
host = "127.0.0.1"
port = {fix_port}
sender_comp_id = "APPLIANCE"
target_comp_id = "SIMEX"
begin_string = "FIX.4.4"
heartbeat_s = 5
exec_ring = "exec"
order_ring = "orders"
session_index = 0
venue = "binance"
"""
    path = run / "appliance.toml"
    path.write_text(text)
    return path


class Proc:
    def __init__(self, name: str, argv: list[str], run: Path, env: dict):
        self.name = name
        self.log = open(run / f"{name}.log", "wb")
        self.p = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                  start_new_session=True)

    def alive(self) -> bool:
        return self.p.poll() is None

    def stop(self, timeout: float = 10.0) -> int:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log.close()
        return self.p.returncode


def _appliance(cfg: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "appliance.cli", "--config", str(cfg), *args]


def _wait_for(pred, timeout: float, what: str, procs) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        dead = [p.name for p in procs if not p.alive()]
        if dead:
            raise RuntimeError(f"{', '.join(dead)} exited while waiting for {what}")
        time.sleep(0.1)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


def run(seconds: float = 20.0, keep: bool = False, run_dir: str | None = None) -> int:
    from appliance import actor

    run = Path(run_dir) if run_dir else Path(tempfile.mkdtemp(prefix="appliance-sim-"))
    run.mkdir(parents=True, exist_ok=True)
    shm_dir = Path(tempfile.mkdtemp(prefix="appliance-sim-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    env = dict(os.environ, APPLIANCE_SHM_DIR=str(shm_dir), PYTHONUNBUFFERED="1")
    ws_port, fix_port = _free_port(), _free_port()
    cfg = write_config(run, ws_port, fix_port)
    data = _recordings()
    procs: list[Proc] = []
    print(f"sim run directory {run} (config, logs, journal); shared memory {shm_dir}")
    try:
        procs.append(Proc("venue-sim", _appliance(cfg, "venue-sim", "--venue", "binance", "--port",
                                                  str(ws_port), "--recording", str(data / "BINANCE.ws.1.0"),
                                                  "--pace", "realtime"), run, env))
        procs.append(Proc("exchange", _appliance(cfg, "fix", "exchange", "--port", str(fix_port)), run, env))
        procs.append(Proc("md.binance", _appliance(cfg, "md", "--venue", "binance", "--stats",
                                                   str(run / "md-stats.json"), "--stats-every", "1"), run, env))
        _wait_for(lambda: (shm_dir / "md.binance").exists(), 120, "the md ring", procs)
        procs.append(Proc("fix.sim", _appliance(cfg, "fix", "gateway", "--session", "sim"), run, env))
        _wait_for(lambda: (shm_dir / "exec").exists(), 120, "the exec ring", procs)
        procs.append(Proc("engine", _appliance(cfg, "engine"), run, env))
        _wait_for(lambda: (shm_dir / "orders").exists(), 120, "the order ring", procs)
        procs.append(Proc("recorder", _appliance(cfg, "recorder", "--dir", str(run / "journal")), run, env))
        # the engine creates its ring before its first compiled step (minutes on a cold numba
        # cache): trading time starts once it loops and writes its status
        _wait_for(lambda: actor.status_path(run / "state", "engine").exists(), 480,
                  "the engine's first loop (compiling on a cold cache)", procs)
        print(f"all actors up; trading for {seconds:.0f} s ...")
        t_end = time.monotonic() + seconds
        while time.monotonic() < t_end:
            dead = [p.name for p in procs if not p.alive()]
            if dead:
                raise RuntimeError(f"{', '.join(dead)} exited early (see {run})")
            time.sleep(0.5)
        kill = subprocess.run(_appliance(cfg, "kill", "--reason", "end of sim run"), env=env,
                              capture_output=True, text=True, timeout=60)
        print(f"kill switch: {kill.stdout.strip() or kill.stderr.strip()} (exit {kill.returncode})")
        time.sleep(1.0)
        status = subprocess.run(_appliance(cfg, "status", "--json"), env=env, capture_output=True,
                                text=True, timeout=60)
    except Exception as e:  # report, then stop everything below
        print(f"sim failed: {e}")
        for p in procs:
            p.stop()
        tail = {p.name: (run / f"{p.name}.log").read_text(errors="replace")[-1500:] for p in procs}
        for name, t in tail.items():
            print(f"--- {name}.log (tail)\n{t}")
        return 1
    # stop along the data flow: sources first, the recorder last so it journals everything
    order = ["venue-sim", "md.binance", "engine", "fix.sim", "exchange", "recorder"]
    codes = {p.name: p.stop() for p in sorted(procs, key=lambda p: order.index(p.name))}
    _report(run, status.stdout, codes, kill)
    reset = subprocess.run(_appliance(cfg, "kill", "--reset", "--confirm"), env=env,
                           capture_output=True, text=True, timeout=60)
    if not keep:
        import shutil
        shutil.rmtree(shm_dir, ignore_errors=True)
    return 0 if reset.returncode == 0 else 1


def _report(run: Path, status_json: str, codes: dict, kill) -> None:
    try:
        md = json.loads((run / "md-stats.json").read_text())
    except (OSError, ValueError):
        md = {}
    try:
        st = json.loads(status_json)
    except ValueError:
        st = {}
    print("\n=== sim report")
    c = md.get("counters", md)
    print("md gateway: " + ", ".join(f"{k} {c[k]}" for k in ("frames", "records", "gaps", "resyncs",
                                                           "errors") if k in c))
    eng = st.get("engine") or {}
    if eng:
        print("engine: " + json.dumps(eng.get("stats", eng))[:600])
        lat = eng.get("order_latency_ns")
        if lat:
            print(f"tick-to-trade (md event -> order record): p50 {lat.get('p50')} ns, p99 {lat.get('p99')} ns")
    print("exit codes: " + ", ".join(f"{k} {v}" for k, v in codes.items()))
    js = subprocess.run([sys.executable, "-m", "appliance.cli", "journal", "stats", str(run / "journal")],
                        capture_output=True, text=True, timeout=120)
    print("journal:\n" + (js.stdout.strip() or js.stderr.strip()))
    jj = subprocess.run([sys.executable, "-m", "appliance.cli", "journal", "stats", "--json",
                         str(run / "journal")], capture_output=True, text=True, timeout=120)
    try:
        journal = json.loads(jj.stdout)
    except ValueError:
        journal = {"error": jj.stderr.strip()[-500:]}
    report = {"md": c, "engine": eng, "exit_codes": codes, "journal": journal,
              "kill": {"exit": kill.returncode, "output": kill.stdout.strip() or kill.stderr.strip()}}
    (run / "report.json").write_text(json.dumps(report, indent=1))
    print(f"report: {run / 'report.json'}")
