"""CLI of the market-data side: ``appliance md``, ``appliance md replay``.

    appliance md --venue NAME [--config PATH] [--ring NAME] [--symbols S ...] [--seconds N]
                 [--stats PATH] [--ws-url URL] [--rest-url URL]
        the md gateway process for one [[venues]] entry of the config
    appliance md replay PATH --venue NAME [--json] [--strict]
        offline replay of a recorded session (appliance.venues.replay)
"""
from __future__ import annotations

import argparse
import logging
import sys

log = logging.getLogger("appliance.venues.cli")

from appliance.venues.registry import VENUES


def _config(args):
    from appliance import config
    return config.load(getattr(args, "config", None))


def _md(args: argparse.Namespace) -> int:
    if args.md_command == "replay":
        from appliance.venues import replay
        argv = [args.path, "--venue", args.replay_venue, "--depth", str(args.depth)]
        if args.json:
            argv.append("--json")
        if args.strict:
            argv.append("--strict")
        return int(replay.main(argv) or 0)
    if not args.venue:
        print("appliance md: --venue is required (or `appliance md replay PATH --venue NAME`)",
              file=sys.stderr)
        return 2
    from appliance import config
    from appliance.venues import gateway
    try:
        cfg = _config(args)
        cfg.venue(args.venue)
    except config.ConfigError as e:
        print(f"appliance md: {e}", file=sys.stderr)
        return 2
    try:
        return gateway.run_process(cfg, args.venue, ring_name=args.ring, symbols=args.symbols,
                                   seconds=args.seconds, stats_path=args.stats,
                                   ws_url=args.ws_url, rest_url=args.rest_url,
                                   stats_every_s=args.stats_every)
    except gateway.GatewayError as e:
        print(f"appliance md: {e}", file=sys.stderr)
        return 2


def register(sub) -> None:
    p = sub.add_parser("md", help="market-data gateway for one venue (or `md replay`)",
                       description="Run the md gateway of one [[venues]] entry: WebSocket -> "
                       "compiled parse -> md ring. `appliance md replay PATH --venue NAME` replays "
                       "a recorded session offline.")
    p.add_argument("--config", default=argparse.SUPPRESS, help="TOML config file")
    p.add_argument("--venue", choices=VENUES, help="venue name (a [[venues]] entry)")
    p.add_argument("--ring", help="md ring name (default md.<venue>)")
    p.add_argument("--symbols", nargs="+", help="venue symbols (default: the config's)")
    p.add_argument("--seconds", type=float, help="stop after this long (default: until SIGTERM)")
    p.add_argument("--stats", help="write the counters as JSON to this file (periodically and at exit)")
    p.add_argument("--stats-every", type=float, default=10.0, help="seconds between stats lines")
    p.add_argument("--ws-url", help="override the config's ws_url")
    p.add_argument("--rest-url", help="override the config's rest_url")
    p.set_defaults(handler=_md, md_command=None)
    msub = p.add_subparsers(dest="md_command", metavar="replay")
    r = msub.add_parser("replay", help="replay a recorded session offline",
                        description="Replay a recorded venue session through the parsers and book "
                        "sync (appliance.venues.replay); print counters and top-10 books.")
    r.add_argument("path", help="recorded WebSocket session: X.ws.N.0 or X.jsonl.zst")
    r.add_argument("--venue", dest="replay_venue", required=True, choices=VENUES)
    r.add_argument("--json", action="store_true", help="print one JSON object")
    r.add_argument("--depth", type=int, default=10, help="book levels to print (default 10)")
    r.add_argument("--strict", action="store_true",
                   help="exit 1 if any book never synced or any gap, resync or error occurred")
