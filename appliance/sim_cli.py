"""``appliance sim``: registration only (the orchestration is appliance/sim.py)."""
from __future__ import annotations


def _main(args) -> int:
    from appliance import sim
    return sim.run(args.seconds, args.keep, args.dir)


def register(sub) -> None:
    p = sub.add_parser("sim", help="the whole appliance in sim mode on loopback, then a report")
    p.add_argument("--seconds", type=float, default=20.0, help="how long to trade (default 20)")
    p.add_argument("--dir", help="run directory for config, logs, journal (default: a new temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the shared-memory regions afterwards")
    p.set_defaults(handler=_main)
