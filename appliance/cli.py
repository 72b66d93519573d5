"""``appliance``: the one command-line entry point.

Dispatch only. Each part of the appliance owns ``<part>/cli.py`` with ``register(subparsers)``
that adds its sub-commands (argparse only; heavy imports such as numba happen inside the
handlers, so ``appliance --help`` stays fast). A handler returns the process exit status.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

# the parts, in the order their commands are listed by --help
COMMAND_MODULES = (
    "appliance.sim.cli",         # sim, demo, venue-sim
    "appliance.venues.cli",      # md, md replay
    "appliance.engine.cli",      # engine, kill, status
    "appliance.fix.cli",         # fix gateway|exchange|acceptor
    "appliance.journal.cli",     # recorder, journal stats|cat
    "appliance.transport.cli",   # shm ls
    "appliance.ops.cli",         # top, exporter
    "tuning.cli",                # tuning plan|check
    "benches.cli",               # bench ...
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="appliance", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="TOML config file (default: $APPLIANCE_CONFIG, "
                        "/etc/appliance/appliance.toml, else the packaged sim default)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
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
