"""``appliance bench kill``: the kill switch's acknowledgement (flag set -> engine ack) through a
running sim, with the way it ran before as the baseline, alternating in one run.

Starts the actors of ``appliance sim`` (venue simulators, md gateways, engine, FIX gateways,
exchange simulator, recorder; real sockets and shared memory), lets them trade, then pulls the
kill switch ``--kills`` times (``killswitch.kill``, what ``appliance kill`` runs) and resets it
after each, alternating two set-ups on the same running actors:

- ``appliance``: as ``appliance sim`` runs them: the trading actors SCHED_FIFO once live
  (the engine above the gateways) and the kill wakes the engine and the FIX gateways out of
  their back-off sleep (``control.wake``);
- ``baseline``: every actor at the normal policy and no wake (the kill is seen when the
  engine's back-off sleep ends and the scheduler runs it), as before both were added.

The figure is the control block's two TSC stamps (``kill_tsc`` when the flag is set,
``kill_ack_tsc`` when the engine acknowledged: its cancels are on the order ring), so neither
this process's start-up nor the halt's persistence is in it. Needs root (or CAP_SYS_NICE) for
SCHED_FIFO. ``--json`` prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

SETUPS = ("appliance", "baseline")


def _pcts(v: list[int]) -> dict:
    v = sorted(v)
    if not v:
        return {"n": 0}
    pick = lambda q: v[min(len(v) - 1, int(q * len(v)))]  # noqa: E731
    return {"n": len(v), "p50_ns": pick(0.5), "p90_ns": pick(0.9), "max_ns": v[-1],
            "over_1ms": sum(x > 1_000_000 for x in v)}


def run(kills: int, settle_s: float, out=sys.stderr) -> dict:
    from appliance.engine import killswitch
    from appliance.sim import run as simrun
    from appliance.transport import control

    sim = simrun.Sim(20.0, None, False, out)
    acks = {s: [] for s in SETUPS}
    unconfirmed = {s: 0 for s in SETUPS}
    sched = ""
    try:
        sim.compile()
        sim.start()
        sim.wait_live()
        sched = sim.prioritise(True)
        print(f"actors live; {sched}; trading {settle_s:g} s before the first kill", file=out)
        time.sleep(settle_s)
        cb = control.ControlBlock.open(str(sim.shm))
        state = sim.run / "state"
        for i in range(kills):
            setup = SETUPS[i % 2]
            sim.prioritise(setup == "appliance")
            time.sleep(0.3)                    # quoting again after the last reset
            sim.check_alive("the kills")
            r = killswitch.kill(cb, state, f"bench kill {i}", timeout_s=10,
                                wake=setup == "appliance")
            if r["engine_acked"]:
                acks[setup].append(int(r["engine_ack_ns"]))
            else:
                unconfirmed[setup] += 1
            killswitch.reset(cb, state)
        cb.close()
    finally:
        codes = sim.stop()
        sim.cleanup()
    res = {"bench": "kill", "kills": kills, "scheduling": sched, "exit_codes": codes}
    for s in SETUPS:
        res[s] = dict(_pcts(acks[s]), unacknowledged=unconfirmed[s])
    a, b = res["appliance"], res["baseline"]
    if a.get("p50_ns") and b.get("p50_ns"):
        res["baseline_over_appliance_p50"] = round(b["p50_ns"] / a["p50_ns"], 2)
        res["baseline_over_appliance_max"] = round(b["max_ns"] / a["max_ns"], 2)
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="appliance bench kill", description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=40, help="kills in all, alternating set-ups")
    ap.add_argument("--settle", type=float, default=3.0, help="seconds of trading before")
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = ap.parse_args(argv)
    if args.kills < 2:
        print("bench kill: --kills must be >= 2 (one of each set-up)", file=sys.stderr)
        return 2
    res = run(args.kills, args.settle)
    bad = any(c != 0 for c in res["exit_codes"].values())
    if args.json:
        print(json.dumps(res))
        return 1 if bad else 0
    print(f"kill switch: flag set -> engine acknowledgement, {args.kills} kills alternating "
          f"through a running sim ({res['scheduling']})")
    print(f"{'set-up':<10} {'n':>4} {'p50 us':>9} {'p90 us':>9} {'max us':>9} {'> 1 ms':>7}")
    for s in SETUPS:
        r = res[s]
        if not r["n"]:
            print(f"{s:<10} {0:>4}  (no acknowledgement)")
            continue
        print(f"{s:<10} {r['n']:>4} {r['p50_ns'] / 1e3:>9.1f} {r['p90_ns'] / 1e3:>9.1f} "
              f"{r['max_ns'] / 1e3:>9.1f} {r['over_1ms']:>7}")
    if "baseline_over_appliance_p50" in res:
        print(f"baseline / appliance: p50 {res['baseline_over_appliance_p50']}x, "
              f"max {res['baseline_over_appliance_max']}x")
    if bad:
        print(f"actor exit codes: {res['exit_codes']}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
