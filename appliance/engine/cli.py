"""``appliance engine``, ``appliance kill [--reason TEXT] | --reset --confirm``, ``appliance status``.

- ``engine`` runs the engine actor in this process until SIGINT/SIGTERM (then cancels its
  working orders).
- ``kill`` sets the kill switch in the control block and persists it, then waits for the running
  engine's acknowledgement: exit 0 once acknowledged (it prints how long that took), 1 when the
  engine did not acknowledge in time. With no engine running the flag is set and persisted
  anyway, and it says so (exit 0: the halt is in force for the next start).
- ``kill --reset --confirm`` clears the persisted halt and the flag (manual reset).
- ``status [--json]``: kill switch, risk state, actor heartbeats, ring heads and consumer lag,
  and the engine's positions, PnL and open orders (from its status file).
"""
from __future__ import annotations

import json
import sys


def _cfg(args):
    from appliance import config
    return config.load(args.config)


def _engine(args) -> int:
    from appliance import config
    from appliance.engine import kernels, run

    try:
        cfg = _cfg(args)
        return run.run(cfg, wait_rings_s=args.wait_rings)
    except (config.ConfigError, kernels.EngineError) as e:
        print(f"appliance engine: {e}", file=sys.stderr)
        return 2


def _kill(args) -> int:
    from appliance.engine import killswitch
    from appliance.transport import control

    cfg = _cfg(args)
    cb = control.ControlBlock.open(cfg.appliance.shm_dir or None)
    try:
        if args.reset:
            if not args.confirm:
                print("kill --reset clears the halt and lets the engine trade again: "
                      "add --confirm", file=sys.stderr)
                return 2
            killswitch.reset(cb, cfg.appliance.state_dir)
            print(f"kill switch reset (persisted state {killswitch.state_path(cfg.appliance.state_dir)} "
                  f"cleared); trading may resume")
            return 0
        try:
            r = killswitch.kill(cb, cfg.appliance.state_dir, args.reason, timeout_s=args.timeout)
        except killswitch.KillSwitchError as e:
            print(f"kill switch SET in the control block, but: {e}", file=sys.stderr)
            return 1
        path = killswitch.state_path(cfg.appliance.state_dir)
        if r["acked"] is None:
            print(f"kill switch set (epoch {r['epoch']}) and persisted to {path}; no engine is "
                  f"running, so nothing acknowledged it: the next engine start comes up HALTED")
            return 0
        if r["acked"]:
            print(f"HALTED: engine pid {r['engine_pid']} acknowledged epoch {r['epoch']} in "
                  f"{r['ack_ns'] / 1e6:.3f} ms (persisted to {path})")
            return 0
        print(f"kill switch set (epoch {r['epoch']}, persisted to {path}) but engine pid "
              f"{r['engine_pid']} did NOT acknowledge within {args.timeout} s", file=sys.stderr)
        return 1
    finally:
        cb.close()


def collect_status(cfg) -> dict:
    """Everything ``status`` shows, as one dict."""
    from appliance.engine import killswitch
    from appliance.transport import control, records, ring, shm
    from appliance import actor

    shm_dir = cfg.appliance.shm_dir or None
    cb = control.ControlBlock.open(shm_dir)
    try:
        rec = cb.rec
        out = {
            "kill": {"set": cb.killed, "epoch": cb.epoch, "ack_epoch": cb.ack_epoch,
                     "reason": rec["kill_reason"].decode(errors="replace"),
                     "source": killswitch.SOURCES.get(int(rec["kill_source"]), "none"),
                     "persisted": killswitch.read_state(cfg.appliance.state_dir)},
            "risk_state": records.RISK_STATE_NAMES.get(int(rec["risk_state"]), "?"),
            "engine_pid": killswitch.engine_alive(cb),
            "actors": cb.actors(),
        }
        if out["kill"]["set"] and out["risk_state"] != "HALTED":
            # the engine owns risk_state; with the flag set and no acknowledgement yet, say so
            out["risk_state"] = "HALT REQUESTED" if out["engine_pid"] else "HALTED (no engine)"
    finally:
        cb.close()
    rings = []
    from appliance.engine.run import exec_rings
    names = [f"md.{v.name}" for v in cfg.venues if v.enabled] + ["orders", *exec_rings(cfg)]
    for name in names:
        try:
            r = ring.RingReader.attach(name, consumer="status", start=ring.START_LATEST,
                                       shm_dir=shm_dir)
        except (shm.ShmError, FileNotFoundError, OSError):
            rings.append({"name": name, "present": False})
            continue
        try:
            head = int(ring.head(r.hdr))
            cons = []
            for c in ring.consumers(r.hdr):
                if c.get("name") == "status":
                    continue
                cons.append(c)
            rings.append({"name": name, "present": True, "head": head, "consumers": cons})
        finally:
            r.close()
    out["rings"] = rings
    out["engine"] = actor.read_status(cfg.appliance.state_dir, "engine")
    return out


def _status(args) -> int:
    cfg = _cfg(args)
    st = collect_status(cfg)
    if args.json:
        print(json.dumps(st, default=str))
        return 0
    k = st["kill"]
    print(f"kill switch: {'SET' if k['set'] else 'clear'} (epoch {k['epoch']}, acked "
          f"{k['ack_epoch']}, source {k['source']}, reason {k['reason']!r}); persisted halted="
          f"{k['persisted'].get('halted')}")
    print(f"risk state: {st['risk_state']}   engine pid: {st['engine_pid'] or 'not running'}")
    print("actors:")
    for a in st["actors"]:
        print(f"  {a['name']:<20} pid {a['pid']:<8} {'alive' if a['alive'] else 'DEAD':<5} "
              f"core {a['core']:<3} loops {a['loops']:<12} heartbeat {a['heartbeat_age_ms']:.1f} ms ago")
    print("rings:")
    for r in st["rings"]:
        if not r["present"]:
            print(f"  {r['name']:<16} absent")
            continue
        lags = ", ".join(f"{c.get('name', '?')} lag {c.get('lag', '?')}" for c in r["consumers"])
        print(f"  {r['name']:<16} head {r['head']:<10} {lags}")
    eng = st["engine"]
    if eng:
        print(f"engine (status written {eng.get('time_ns')}): order latency p50 "
              f"{eng['order_latency_ns']['p50']} ns p99 {eng['order_latency_ns']['p99']} ns")
        for s in eng["strategies"]:
            legs = "; ".join(f"{leg['venue']}:{leg['symbol']} pos {leg['position']}"
                             for leg in s["legs"])
            print(f"  {s['name']:<24} pnl {s['pnl_tl']} tick-lots  {legs}  open orders "
                  f"{len(s['open_orders'])}")
        stuck = eng.get("stats", {}).get("stuck_requests", 0)
        if stuck:
            print(f"  {stuck} request(s) unanswered past ack_timeout_ms: the gate is paused")
        for b in eng.get("balances", []):
            free = (b["balance_e8"] - b["reserved_e8"]) / 1e8
            print(f"  balance {b['venue']}:{b['asset']:<8} {b['balance_e8'] / 1e8:,.8f} "
                  f"(reserved {b['reserved_e8'] / 1e8:,.8f}, free {free:,.8f})")
    return 0


def register(sub) -> None:
    p = sub.add_parser("engine", help="run the engine actor (books, strategies, risk, orders)")
    p.add_argument("--wait-rings", type=float, default=30.0,
                   help="seconds to wait for the md and exec rings to appear (default 30)")
    p.set_defaults(handler=_engine)
    p = sub.add_parser("kill", help="kill switch: halt trading (waits for the engine's ack)")
    p.add_argument("--reason", default="manual kill from CLI", help="why (stored and shown)")
    p.add_argument("--timeout", type=float, default=5.0,
                   help="seconds to wait for the engine's acknowledgement (default 5)")
    p.add_argument("--reset", action="store_true", help="clear the halt (needs --confirm)")
    p.add_argument("--confirm", action="store_true", help="confirm --reset")
    p.set_defaults(handler=_kill)
    p = sub.add_parser("status", help="actors, rings, risk state, positions, PnL, open orders")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(handler=_status)
