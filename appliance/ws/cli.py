"""CLI of the market-data side: ``appliance md``, ``appliance md replay``, ``appliance venue-sim``.

    appliance md --venue NAME [--config PATH] [--ring NAME] [--symbols S ...] [--seconds N]
                 [--stats PATH] [--ws-url URL] [--rest-url URL]
        the md gateway process for one [[venues]] entry of the config
    appliance md replay PATH --venue NAME [--json]
        offline replay of a recorded session (appliance.ws.replay)
    appliance venue-sim --venue NAME [--port P] [--recording PATH ...] [--pace realtime|fast]
                 [--drop-every N] [--duplicate-every N] [--garbage-every N]
                 [--disconnect-after N] [--stall-after N --stall-ms MS] [--seconds N]
        serve a recorded session over WebSocket + REST on loopback
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import urllib.parse

log = logging.getLogger("appliance.ws.cli")

VENUES = ("binance", "coinbase", "coinbase_advanced", "kraken", "bitstamp", "bitfinex")


def _config(args):
    from appliance import config
    return config.load(getattr(args, "config", None))


def _md(args: argparse.Namespace) -> int:
    if args.md_command == "replay":
        from appliance.ws import replay
        argv = [args.path, "--venue", args.replay_venue, "--depth", str(args.depth)]
        if args.json:
            argv.append("--json")
        return int(replay.main(argv) or 0)
    if not args.venue:
        print("appliance md: --venue is required (or `appliance md replay PATH --venue NAME`)",
              file=sys.stderr)
        return 2
    from appliance import config
    from appliance.ws import gateway
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


def _default_port(args) -> int:
    """The port of the venue's ws_url in the config, else 9001."""
    try:
        cfg = _config(args)
        url = cfg.venue(args.venue).ws_url
        port = urllib.parse.urlsplit(url).port
        if port:
            return port
    except Exception:  # noqa: BLE001 - no config or no such venue: fall back to the default
        pass
    return 9001


def _venue_sim(args: argparse.Namespace) -> int:
    import signal
    import threading

    from appliance.ws import sim
    try:
        faults = sim.Faults(drop_every=args.drop_every, duplicate_every=args.duplicate_every,
                            garbage_every=args.garbage_every, disconnect_after=args.disconnect_after,
                            disconnects=args.disconnects, stall_after=args.stall_after,
                            stall_ms=args.stall_ms)
        port = args.port if args.port is not None else _default_port(args)
        vs = sim.VenueSim(args.venue, args.recording or None, host=args.host, port=port,
                          pace=args.pace, speed=args.speed, faults=faults)
        vs.start()
    except (sim.SimError, OSError) as e:
        print(f"appliance venue-sim: {e}", file=sys.stderr)
        return 2
    print(f"venue-sim {args.venue}: ws {vs.ws_url}  rest {vs.rest_url}", flush=True)
    stop = threading.Event()
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, lambda *_: stop.set())
    if args.seconds:
        threading.Timer(args.seconds, stop.set).start()
    st = sim.serve_forever(vs, stop)
    if args.json:
        print(json.dumps(st))
    else:
        log.info("venue-sim %s stopped: %s", args.venue, st)
    return 0


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
                        "sync (appliance.ws.replay); print counters and top-10 books.")
    r.add_argument("path", help="recorded WebSocket session: X.ws.N.0 or X.jsonl.zst")
    r.add_argument("--venue", dest="replay_venue", required=True, choices=VENUES)
    r.add_argument("--json", action="store_true", help="print one JSON object")
    r.add_argument("--depth", type=int, default=10, help="book levels to print (default 10)")

    s = sub.add_parser("venue-sim", help="serve a recorded venue session on loopback (WS + REST)",
                       description="Venue simulator: replays a recorded session over a real "
                       "WebSocket server plus its REST snapshots, with fault injection.")
    s.add_argument("--config", default=argparse.SUPPRESS, help="TOML config file (for the default port)")
    s.add_argument("--venue", required=True, choices=VENUES)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, help="TCP port for WS and REST (default: the port of the "
                   "venue's ws_url in the config, else 9001; 0 = any free port)")
    s.add_argument("--recording", action="append", help="recording file (repeatable; default: "
                   "every <VENUE>.ws.*.0 or <VENUE>.jsonl.zst in the data directory)")
    s.add_argument("--pace", choices=("realtime", "fast"), default="realtime")
    s.add_argument("--speed", type=float, default=1.0, help="realtime speed-up factor")
    s.add_argument("--drop-every", type=int, default=0, metavar="N", help="drop every Nth frame (gap)")
    s.add_argument("--duplicate-every", type=int, default=0, metavar="N", help="send every Nth frame twice")
    s.add_argument("--garbage-every", type=int, default=0, metavar="N", help="garbage frame before every Nth")
    s.add_argument("--disconnect-after", type=int, default=0, metavar="N",
                   help="drop the TCP connection after N frames")
    s.add_argument("--disconnects", type=int, default=1, metavar="K",
                   help="connections that get --disconnect-after (0 = every one; default 1)")
    s.add_argument("--stall-after", type=int, default=0, metavar="N", help="pause after N frames")
    s.add_argument("--stall-ms", type=int, default=0, metavar="MS", help="length of the pause")
    s.add_argument("--seconds", type=float, help="stop after this long")
    s.add_argument("--json", action="store_true", help="print the stats as JSON at exit")
    s.set_defaults(handler=_venue_sim)
