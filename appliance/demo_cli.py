"""``appliance demo``: registration only (the demo itself is appliance/demo.py)."""
from __future__ import annotations


def _main(args) -> int:
    from appliance import demo
    return demo.run(args.records, args.rate)


def register(sub) -> None:
    p = sub.add_parser("demo", help="live two-process transport demo with latency figures")
    p.add_argument("--records", type=int, default=200_000)
    p.add_argument("--rate", type=float, default=100_000, help="records per second")
    p.set_defaults(handler=_main)
