"""``appliance bench NAME [--json] ...``: runs benches/bench_NAME.py's ``main(argv)``."""
from __future__ import annotations

import argparse
import importlib

BENCHES = ("ring", "clock", "md", "engine", "fix", "backtest", "snapshot", "kill", "tick-to-trade",
           "tick_to_trade", "wake")


def _run(args: argparse.Namespace) -> int:
    mod = importlib.import_module(f"benches.bench_{args.bench.replace('-', '_')}")
    return int(mod.main(args.rest) or 0)


def register(sub) -> None:
    p = sub.add_parser("bench", help="on-host latency benchmarks (human table, or --json)",
                       description="Run one benchmark; options after NAME go to the benchmark "
                       "(e.g. `appliance bench ring --json --cores 0 1`).")
    p.add_argument("bench", choices=BENCHES)
    p.add_argument("rest", nargs=argparse.REMAINDER, help="options for the benchmark")
    p.set_defaults(handler=_run)
