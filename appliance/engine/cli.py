"""``appliance engine``, ``appliance kill [--reason TEXT] | --reset --confirm``, ``appliance status``.

- ``engine`` runs the engine actor in this process until SIGINT/SIGTERM (then cancels its
  working orders).
- ``kill`` sets the kill switch in the control block and persists it, then waits until every
  live confirmer did its part (the engine: halted, every cancel sent; each FIX gateway: nothing
  of its own working at the venue). Exit 0 only when at least one confirmer exists and all of
  them confirmed; it prints flag -> acknowledgement times (the engine's on the TSC). Exit 1
  when nobody confirmed in time (or nothing runs that could): the halt stays set and persisted,
  so the next start comes up HALTED.
- ``kill --reset --confirm`` clears the persisted halt and the flag (manual reset).
- ``status [--json]``: kill switch, risk state, actor heartbeats, ring heads and consumer lag,
  and the engine's positions, PnL, open orders and restart recovery (state, sessions it waits
  for, why it refuses to trade) from its status file.
"""
from __future__ import annotations

import json
import sys

from appliance.cli import positive_float


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
        r = killswitch.kill(cb, cfg.appliance.state_dir, args.reason, timeout_s=args.timeout)
        if args.json:
            print(json.dumps(r))
        else:
            print(killswitch.describe(r, args.timeout),
                  file=sys.stdout if r["confirmed"] else sys.stderr)
        return 0 if r["confirmed"] else 1
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
        rec = eng.get("recovery") or {}
        if rec:
            waiting = rec.get("waiting_for_sessions") or []
            line = f"  recovery: {rec.get('state')}"
            if waiting:
                line += f" (waiting for FIX session(s) {', '.join(map(str, waiting))} to confirm " \
                        f"nothing is working: no order goes there before)"
            snap = rec.get("snapshot")
            if snap:
                line += f"; restored snapshot {snap.get('seq')} ({snap.get('age_s')} s old), " \
                        f"{rec.get('replayed_fills', 0)} fills replayed"
            print(line)
            for p in rec.get("problems") or []:
                print(f"  recovery REFUSED TO TRADE: {p}")
        orphans = eng.get("stats", {}).get("orphan_fills", 0)
        if orphans:
            print(f"  {orphans} fill(s) of orders the engine did not know booked to the ledger "
                  f"(not to a strategy)")
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
    p.add_argument("--wait-rings", type=positive_float, default=30.0,
                   help="seconds to wait for the md and exec rings to appear (default 30)")
    p.set_defaults(handler=_engine)
    p = sub.add_parser("kill", help="kill switch: halt trading (waits for the engine's ack)")
    p.add_argument("--reason", default="manual kill from CLI", help="why (stored and shown)")
    p.add_argument("--timeout", type=positive_float, default=5.0,
                   help="seconds to wait for the engine's acknowledgement (default 5)")
    p.add_argument("--reset", action="store_true", help="clear the halt (needs --confirm)")
    p.add_argument("--confirm", action="store_true", help="confirm --reset")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(handler=_kill)
    p = sub.add_parser("status", help="actors, rings, risk state, positions, PnL, open orders")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(handler=_status)
