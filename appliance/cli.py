"""``appliance``: the one command-line entry point.

Each part of the appliance owns a small module with ``register(subparsers)`` that adds its
sub-commands (argparse only; heavy imports such as numba happen inside the handlers, so
``appliance --help`` stays fast). A handler returns the process exit status.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

# module that registers sub-commands -> what it provides
COMMAND_MODULES = (
    "appliance.sim_cli",         # sim (the main job: every actor on loopback, then a report)
    "appliance.demo_cli",        # demo (the main job until the full appliance runs)
    "appliance.shm_cli",         # shm ls
    "appliance.journal_cli",     # journal stats|cat, recorder
    "appliance.ws.cli",          # md, md replay, venue-sim
    "appliance.engine_cli",      # engine, kill, status
    "appliance.fix.cli",         # fix gateway|acceptor|exchange
    "appliance.tuning_cli",      # tuning plan|check
    "benches.cli",               # bench ring|clock|md|engine|fix
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="appliance", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="TOML config file (default: $APPLIANCE_CONFIG, "
                        "/etc/appliance/appliance.toml, else the packaged sim default)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            continue  # part not installed in this build; tests/test_cli.py asserts all are present
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
