"""``appliance sim``: the whole appliance in sim mode on one box, end to end, then a report.

Every actor runs as its own process, on loopback and a private shared-memory directory, from one
config file written to the run directory (``sim.toml`` for the trading setup and its
instruments, plus the run's ports, directories, venues and FIX sessions)::

    venue-sim --loop (recorded session, real WebSocket + REST), one per venue
      -> appliance md --venue V        -> [md.V ring]
      -> appliance engine              -> [orders ring]   (books, market makers, risk gate, OMS)
      -> appliance fix gateway --session V  -> FIX over TCP -> appliance fix exchange
         the exchange simulator follows the md rings and fills by queue position
         acks / fills                  -> [exec.V ring] -> engine
    appliance recorder journals every ring (zstd)

It compiles every kernel first (``appliance compile``; cached), starts the actors, waits until
all of them are live, trades for ``--seconds`` printing a line every two seconds, pulls the kill
switch (``appliance kill``: the engine cancels everything, every FIX gateway confirms nothing is
working), stops the actors along the data flow (the recorder last) and reports from the journal
(the record of truth: orders, acks, fills, position and PnL per instrument), the actors' status
and their telemetry (per-hop latency). ``--json`` prints the report as one JSON object.

Exit status 0 only if the run traded and ended clean: orders sent and all answered, the kill
confirmed with nothing new after it, every actor exited 0, no md gap or resync, and no actor
compiled or loaded a kernel after its warm-up (``live_compiles``: a stall in a live loop).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

SIM_TOML = Path(__file__).with_name("sim.toml")
PROGRESS_EVERY_S = 2.0


class SimFailed(RuntimeError):
    """The sim could not run (the message says which actor and why)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _toml(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(x)}" for k, x in v.items()) + " }"
    raise TypeError(v)


def _table(name: str, t: dict) -> str:
    """A TOML table (nested dicts as sub-tables)."""
    flat = {k: v for k, v in t.items() if not isinstance(v, dict)}
    out = [f"[{name}]"] + [f"{json.dumps(k)} = {_toml(v)}" for k, v in flat.items()]
    for k, v in t.items():
        if isinstance(v, dict):
            out.append(_table(f"{name}.{json.dumps(k)}", v))
    return "\n".join(out) + "\n"


class Plan:
    """What the sim runs (sim.toml): its instruments (``[[instruments]]`` entries of the one
    registry, appliance/config/instruments.py; their venues, in order of first appearance, are
    the sim's venues), strategies and risk."""

    SECTIONS = ("instruments", "strategies", "risk")

    def __init__(self, path: Path = SIM_TOML):
        from appliance import config
        self.doc = tomllib.loads(path.read_text())
        for k in self.doc:
            if k not in self.SECTIONS:
                raise config.ConfigError(f"{path}: {k}: unknown section (known: "
                                         f"{', '.join(self.SECTIONS)})")
        self.tables = self.doc.get("instruments", [])
        if not isinstance(self.tables, list) or not self.tables:
            raise config.ConfigError(f"{path}: instruments: expected [[instruments]] entries")
        self.venues = list(dict.fromkeys(t["venue"] for t in self.tables
                                         if isinstance(t, dict) and isinstance(t.get("venue"), str)))
        try:        # the registry's own checks (venue names, symbols, grids, assets)
            cfg = config.parse({"venues": [{"name": v} for v in self.venues],
                                "instruments": self.tables}, str(path))
        except config.ConfigError as e:
            raise config.ConfigError(f"{path}: {e}") from None
        self.instruments = cfg.instruments
        self.symbols = {v: [i.symbol for i in cfg.instruments_of(v)] for v in self.venues}


def config_header(run: Path, shm_dir: Path) -> str:
    """The ``[appliance]`` and ``[wait]`` sections of a run on a shared (not isolated) host:
    every directory under ``run``, shared memory in ``shm_dir``, and actors that back off when
    idle instead of spinning on the cores they share."""
    return f"""[appliance]
shm_dir = {json.dumps(str(shm_dir))}
journal_dir = {json.dumps(str(run / "journal"))}
state_dir = {json.dumps(str(run / "state"))}

[wait]
strategy = "backoff"
spin_iterations = 200
backoff_min_ns = 20000
backoff_max_ns = 200000
"""


def write_config(run: Path, shm_dir: Path, ws_ports: dict, fix_port: int,
                 plan: Plan | None = None) -> Path:
    """The run's config file (every actor reads it)."""
    plan = plan or Plan()
    parts = ["# written by `appliance sim` for this run\n" + config_header(run, shm_dir)]
    for v in plan.venues:
        port = ws_ports[v]
        parts.append(f"""[[venues]]
name = "{v}"
ws_url = "ws://127.0.0.1:{port}/{v}"
rest_url = "http://127.0.0.1:{port}/{v}"
maker_fee_bps = 1.0
taker_fee_bps = 2.0
""")
    for t in plan.tables:
        parts.append("[[instruments]]\n" + "".join(f"{k} = {_toml(x)}\n" for k, x in t.items()))
    for idx, v in enumerate(plan.venues):
        parts.append(f"""[fix.sessions.{v}]
host = "127.0.0.1"
port = {fix_port}
sender_comp_id = "APPLIANCE"
target_comp_id = "SIM-{v.upper()}"
begin_string = "FIX.4.4"
heartbeat_s = 5
session_index = {idx}
venue = "{v}"
exec_ring = "exec.{v}"
""")
    for s in plan.doc.get("strategies", []):
        s = dict(s)
        s.setdefault("session", plan.venues.index(s["venue"]))
        parts.append("[[strategies]]\n" + "".join(f"{k} = {_toml(x)}\n" for k, x in s.items()))
    parts.append(_table("risk", plan.doc.get("risk", {})))
    path = run / "appliance.toml"
    path.write_text("\n".join(parts))
    return path


class Proc:
    """One actor (or simulator) process, its output in ``<run>/<name>.log``."""

    def __init__(self, name: str, argv: list[str], run: Path, env: dict, nice: int = 0):
        self.name = name
        self.log_path = run / f"{name}.log"
        self.log = open(self.log_path, "wb")
        self.p = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                  start_new_session=True)
        if nice:
            try:
                os.setpriority(os.PRIO_PROCESS, self.p.pid, nice)
            except OSError:
                pass
        self.terminated = False

    def alive(self) -> bool:
        return self.p.poll() is None

    def terminate(self) -> None:
        """SIGTERM, once (a second one could land after the actor restored the default
        handler on its way out, and kill it mid-shutdown)."""
        if self.p.poll() is None and not self.terminated:
            self.terminated = True
            self.p.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 15.0) -> int:
        self.terminate()
        try:
            self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        self.log.close()
        return self.p.returncode

    def tail(self, n: int = 1500) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


# The venue simulators and the exchange simulator stand for the world outside the host, and the
# recorder is not on the trading path: on a shared box (no isolated cores) they run at a lower
# CPU priority, so a woken md gateway, engine or FIX gateway waits less behind them for the
# scheduler. Measured on a 2-vCPU VM, the engine's kill acknowledgement (bar: 1 ms) went over
# in 6 of 10 runs with everything at nice 0 (2.0-5.7 ms, its compiled 1 ms steps stretched to
# 6-9 ms waiting for a CPU) and in 1 of 6 with this; it still depends on the scheduler there.
# Production gives the actors isolated cores instead.
WORLD_NICE = 10

# Once live, the trading path runs SCHED_FIFO above every time-shared process, the engine above
# the gateways: production gives these actors isolated cores (and SCHED_FIFO, provision's
# appliance_sched_fifo); on a shared box this is the nearest thing. They idle in back-off
# sleeps, so they cannot starve the box (and the kernel's RT throttling caps them at 95 %).
# Measured on this 2-vCPU VM, 30 kills each through a running sim, flag -> engine ack: all at
# nice 0, p50 387 us, p90 1.18 ms, 5 of 40 over 1 ms; with this, p50 107 us, max 251 us. Set
# after they are live, never while they load kernels (a compile at FIFO would starve the box).
TRADING_FIFO = (("engine", 2), ("md.", 1), ("fix.", 1))


def _appliance(cfg: Path | None, *args: str) -> list[str]:
    head = [sys.executable, "-m", "appliance.cli"]
    return head + (["--config", str(cfg)] if cfg else []) + list(args)


class Sim:
    def __init__(self, seconds: float, run_dir: str | None, keep: bool, out):
        self.seconds = seconds
        self.keep = keep
        self.out = out                      # where the human lines go (stderr with --json)
        self.run = Path(run_dir) if run_dir else Path(tempfile.mkdtemp(prefix="appliance-sim-"))
        self.run.mkdir(parents=True, exist_ok=True)
        base = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self.shm = Path(tempfile.mkdtemp(prefix="appliance-sim-", dir=base))
        self.env = dict(os.environ, APPLIANCE_SHM_DIR=str(self.shm), PYTHONUNBUFFERED="1")
        self.plan = Plan()
        self.ws_ports = {v: _free_port() for v in self.plan.venues}
        self.fix_port = _free_port()
        self.cfg_path = write_config(self.run, self.shm, self.ws_ports, self.fix_port, self.plan)
        self.procs: list[Proc] = []
        self.stop_early = False
        self.sched = ""                     # what prioritise() did

    def say(self, line: str = "") -> None:
        print(line, file=self.out, flush=True)

    # -- start ----------------------------------------------------------------------------------
    def compile(self) -> None:
        t0 = time.monotonic()
        r = subprocess.run(_appliance(None, "compile"), env=self.env, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if r.returncode != 0:
            raise SimFailed(f"appliance compile failed (exit {r.returncode}):\n{r.stdout[-2000:]}")
        self.say(f"kernels compiled or loaded from the cache in {time.monotonic() - t0:.1f} s")

    def spawn(self, name: str, *args: str, nice: int = 0) -> Proc:
        p = Proc(name, _appliance(self.cfg_path, *args), self.run, self.env, nice)
        self.procs.append(p)
        return p

    def start(self) -> None:
        from appliance import data
        from appliance.sim import venue as venue_sim
        for v in self.plan.venues:
            rec = venue_sim.default_recordings(v, data.venues_dir())
            args = ["venue-sim", "--venue", v, "--port", str(self.ws_ports[v]), "--pace",
                    "realtime", "--loop"]
            for r in rec:
                args += ["--recording", str(r)]
            self.spawn(f"venue-sim.{v}", *args, nice=WORLD_NICE)
        self.spawn("exchange", "fix", "exchange", "--port", str(self.fix_port), nice=WORLD_NICE)
        for v in self.plan.venues:
            self.spawn(f"md.{v}", "md", "--venue", v)
        for v in self.plan.venues:
            self.spawn(f"fix.{v}", "fix", "gateway", "--session", v)
        self.spawn("engine", "engine")
        self.spawn("recorder", "recorder", nice=WORLD_NICE)

    def prioritise(self, fifo: bool = True) -> str:
        """The live trading actors to SCHED_FIFO (:data:`TRADING_FIFO`), every thread of each
        (threads started later inherit it); returns a line saying what was done or why not.
        ``fifo=False`` puts them back to the normal policy (``appliance bench kill``)."""
        done = []
        for p in self.procs:
            prio = next((pr for pre, pr in TRADING_FIFO if p.name.startswith(pre)), None)
            if prio is None:
                continue
            policy, param = ((os.SCHED_FIFO, os.sched_param(prio)) if fifo
                             else (os.SCHED_OTHER, os.sched_param(0)))
            try:
                for tid in os.listdir(f"/proc/{p.p.pid}/task"):
                    os.sched_setscheduler(int(tid), policy, param)
            except PermissionError:
                return ("trading actors left at normal priority (setting SCHED_FIFO needs "
                        "CAP_SYS_NICE): the kill acknowledgement and latencies then depend on "
                        "the scheduler of this shared box")
            except (FileNotFoundError, ProcessLookupError):
                continue             # it exited: check_alive says so
            done.append(f"{p.name} {prio}" if fifo else p.name)
        return ("SCHED_FIFO: " if fifo else "SCHED_OTHER: ") + ", ".join(done)

    def actor_names(self) -> list[str]:
        return ([f"md.{v}" for v in self.plan.venues] + [f"fix.{v}" for v in self.plan.venues]
                + ["engine", "recorder", "exchange"])

    def wait_live(self, timeout: float = 300.0) -> float:
        from appliance import actor
        t0 = time.monotonic()
        waiting = self.actor_names()
        while waiting:
            self.check_alive(f"actors to go live ({', '.join(waiting)})")
            waiting = [n for n in waiting
                       if not (actor.read_status(self.run / "state", n) or {}).get("live")]
            if time.monotonic() - t0 > timeout:
                raise SimFailed(f"timed out after {timeout:.0f} s waiting for "
                                f"{', '.join(waiting)} to go live")
            time.sleep(0.1)
        return time.monotonic() - t0

    def check_alive(self, what: str) -> None:
        dead = [p for p in self.procs if not p.alive()]
        if dead:
            names = ", ".join(f"{p.name} (exit {p.p.returncode})" for p in dead)
            raise SimFailed(f"{names} exited while waiting for {what}")

    # -- trade ----------------------------------------------------------------------------------
    def trade(self) -> None:
        from appliance import actor
        keys = [f"{v}:{s}" for v in self.plan.venues for s in self.plan.symbols[v]]
        short = [k.split(":", 1)[1] for k in keys]
        self.say(f"{'t':>5} {'orders':>7} {'fills':>6}  " + "".join(f"{s:>14}" for s in short)
                 + f"{'PnL':>12}")
        t0 = time.monotonic()
        t_end = t0 + self.seconds
        next_line = t0 + PROGRESS_EVERY_S
        while time.monotonic() < t_end and not self.stop_early:
            self.check_alive("the end of the trading time")
            time.sleep(0.1)
            if time.monotonic() >= next_line:
                next_line += PROGRESS_EVERY_S
                st = actor.read_status(self.run / "state", "engine") or {}
                s = st.get("stats", {})
                pos = {p["instrument"]: p["position"] for p in st.get("positions", [])}
                pnl = sum(x.get("pnl", 0.0) or 0.0 for x in st.get("strategies", []))
                orders = s.get("new", 0) + s.get("replace", 0) + s.get("cancel", 0)
                self.say(f"{time.monotonic() - t0:>4.0f}s {orders:>7} {s.get('fills', 0):>6}  "
                         + "".join(f"{pos.get(k, 0):>14}" for k in keys) + f"{pnl:>12.4f}")

    def kill(self) -> dict:
        """``appliance kill`` as an operator would run it (at the world's CPU priority: its
        start-up and polling are not what the engine's acknowledgement should wait behind)."""
        p = subprocess.Popen(_appliance(self.cfg_path, "kill", "--reason", "end of sim run",
                                        "--timeout", "15", "--json"),
                             env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        try:
            os.setpriority(os.PRIO_PROCESS, p.pid, WORLD_NICE)
        except OSError:
            pass
        try:
            out, err = p.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        try:
            k = json.loads(out)
        except ValueError:
            k = {"confirmed": False, "error": (err or out).strip()[-500:]}
        k["exit"] = p.returncode
        return k

    def stop(self) -> dict:
        """Stop the processes upstream first, one stage at a time (the processes of a stage
        together): the venue simulators, the md gateways, the engine, the FIX gateways, the
        exchange, and the recorder last, so it journals everything the others wrote."""
        stages = ["venue-sim.", "md.", "engine", "fix.", "exchange", "recorder"]

        def stage(p: Proc) -> int:
            return next((i for i, s in enumerate(stages) if p.name.startswith(s)), len(stages))

        codes = {}
        for i in range(len(stages) + 1):
            group = [p for p in self.procs if stage(p) == i]
            for p in group:
                p.terminate()
            for p in group:
                codes[p.name] = p.stop()
        return codes

    def cleanup(self) -> None:
        if not self.keep:
            shutil.rmtree(self.shm, ignore_errors=True)


def run(seconds: float = 20.0, keep: bool = False, run_dir: str | None = None,
        as_json: bool = False) -> int:
    out = sys.stderr if as_json else sys.stdout
    sim = Sim(seconds, run_dir, keep, out)
    what = ", ".join(f"{v} ({' '.join(sim.plan.symbols[v])})" for v in sim.plan.venues)
    sim.say(f"appliance sim: {what} on loopback; run directory {sim.run}, shared memory {sim.shm}")
    old = signal.signal(signal.SIGINT, lambda *_: setattr(sim, "stop_early", True))
    kill = {}
    try:
        sim.compile()
        sim.start()
        t_live = sim.wait_live()
        sim.sched = sim.prioritise()
        sim.say(f"all {len(sim.actor_names())} actors live after {t_live:.1f} s; {sim.sched}")
        sim.say(f"trading for {seconds:g} s (Ctrl-C stops early)")
        sim.trade()
        kill = sim.kill()
        status = _status(sim)
    except SimFailed as e:
        sim.say(f"sim failed: {e}")
        codes = sim.stop()
        for p in sim.procs:
            if codes.get(p.name):
                sim.say(f"--- {p.name}.log (tail)\n{p.tail()}")
        sim.cleanup()
        signal.signal(signal.SIGINT, old)
        return 1
    finally:
        signal.signal(signal.SIGINT, old)
    codes = sim.stop()
    rep = report(sim, kill, codes, status)
    (sim.run / "report.json").write_text(json.dumps(rep, indent=1, default=str))
    if as_json:
        print(json.dumps(rep, default=str))
    else:
        print_report(sim, rep)
    sim.cleanup()
    return 0 if rep["ok"] else 1


def _status(sim: Sim) -> dict:
    """Telemetry and status files while the actors still run (after the kill)."""
    from appliance import actor
    from appliance.transport import telemetry
    return {"telemetry": telemetry.read_all(str(sim.shm)),
            "status": {n: actor.read_status(sim.run / "state", n) for n in sim.actor_names()}}


def report(sim: Sim, kill: dict, codes: dict, status: dict) -> dict:
    """The run's report (see the module docstring for what makes it ok)."""
    from appliance import config
    from appliance.sim.report import trading_report
    from appliance.transport import hist
    cfg = config.load(sim.cfg_path)
    tr = trading_report(sim.run / "journal", cfg, kill_tsc=int(kill.get("kill_tsc") or 0))
    md = {}
    for v in sim.plan.venues:
        st = (status["status"].get(f"md.{v}") or {}).get("counters", {})
        md[v] = {k: st.get(k) for k in ("frames", "records", "gaps", "resyncs", "errors",
                                        "snapshots", "books_valid", "books", "never_synced")}
    tele = status["telemetry"]
    hops = {}
    for actor_name, snap in tele.items():
        for hop, row in snap.get("rows", {}).items():
            hops.setdefault(hop, []).append(row)
    latency = {hop: hist.summary(hist.merge(rows)) for hop, rows in sorted(hops.items())}
    t2t = latency.get("tick_to_trade", {})
    live_compiles = {a: snap.get("counters", {}).get("live_compiles", 0)
                     for a, snap in tele.items()}
    gaps = sum(m.get("gaps") or 0 for m in md.values())
    resyncs = sum(m.get("resyncs") or 0 for m in md.values())
    problems = []
    if tr["orders"] == 0:
        problems.append("no order was sent")
    if tr["fills"] == 0:
        problems.append("nothing filled")
    if tr["unanswered"]:
        problems.append(f"{tr['unanswered']} orders never answered")
    if tr["orders_after_kill"]:
        problems.append(f"{tr['orders_after_kill']} new orders after the kill")
    if not kill.get("confirmed"):
        problems.append("the kill was not confirmed")
    if any(codes.values()):
        problems.append("actors exited non-zero: " + ", ".join(f"{k} {v}" for k, v in codes.items() if v))
    if gaps or resyncs:
        problems.append(f"md gaps {gaps}, resyncs {resyncs}")
    if any(live_compiles.values()):
        problems.append("compiles after the warm-up: " + ", ".join(
            f"{a} {n}" for a, n in live_compiles.items() if n))
    return {"ok": not problems, "problems": problems, "seconds": sim.seconds,
            "orders": tr["orders"], "acks": tr["acks"], "fills": tr["fills"],
            "rejects": tr["rejects"], "unanswered": tr["unanswered"],
            "orders_after_kill": tr["orders_after_kill"],
            "md_resyncs": resyncs, "md_gaps": gaps,
            "live_compiles": sum(live_compiles.values()),
            "kill_ack_ns": kill.get("engine_ack_ns"),
            "scheduling": sim.sched,
            "tick_to_trade_p50_ns": t2t.get("p50"), "tick_to_trade_p99_ns": t2t.get("p99"),
            "exit_codes": codes, "instruments": tr["instruments"], "md": md,
            "latency_ns": latency, "kill": kill, "journal_gaps": tr["journal_gaps"],
            "run_dir": str(sim.run)}


def _ns(v) -> str:
    if v is None:
        return "-"
    return f"{v / 1000:.1f} µs" if v < 10_000_000 else f"{v / 1e6:.1f} ms"


def print_report(sim: Sim, rep: dict) -> None:
    say = sim.say
    k = rep["kill"]
    if k.get("confirmed"):
        gw = ", ".join(f"{n} {_ns(g.get('confirm_ns'))}" for n, g in k.get("gateways", {}).items())
        say(f"kill switch: engine acknowledged in {_ns(k.get('engine_ack_ns'))} (flag -> ack); "
            f"gateways confirmed nothing working: {gw}")
    else:
        say(f"kill switch NOT confirmed: {k.get('waiting_for') or k.get('error')}")
    say("\n=== sim report")
    say(f"{'instrument':<18}{'orders':>7}{'acks':>7}{'fills':>7}{'position':>18}{'PnL':>14}")
    for name, r in rep["instruments"].items():
        pnl = "-" if r.get("pnl") is None else f"{r['pnl']:+.4f} {r.get('quote', '')}"
        say(f"{name:<18}{r['orders']:>7}{r['acks']:>7}{r['fills']:>7}"
            f"{r.get('position', r['position_lots']):>18}{pnl:>14}")
    say(f"{'total':<18}{rep['orders']:>7}{rep['acks']:>7}{rep['fills']:>7}   rejects "
        f"{rep['rejects']}, unanswered {rep['unanswered']}, new after the kill "
        f"{rep['orders_after_kill']}")
    for v, m in rep["md"].items():
        say(f"md {v}: frames {m['frames']}, records {m['records']}, gaps {m['gaps']}, resyncs "
            f"{m['resyncs']}, errors {m['errors']}, books valid {m['books_valid']}/{m['books']}")
    if rep["latency_ns"]:
        say("latency (ns)        count       p50       p99     p99.9")
        for hop, s in rep["latency_ns"].items():
            say(f"  {hop:<16}{s['count']:>8}{_ns(s['p50']):>10}{_ns(s['p99']):>10}"
                f"{_ns(s['p999']):>10}")
    say("exit codes: " + ", ".join(f"{n} {c}" for n, c in rep["exit_codes"].items()))
    say(f"journal gaps: {rep['journal_gaps']}; report: {sim.run / 'report.json'}")
    say("OK: the appliance traded and stopped clean" if rep["ok"]
        else "NOT OK: " + "; ".join(rep["problems"]))
