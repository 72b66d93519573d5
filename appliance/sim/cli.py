"""CLI of the simulators: ``appliance sim`` (the whole appliance on loopback, then a report),
``appliance demo`` (two-process transport demo), ``appliance venue-sim`` (a recorded venue session
over WebSocket + REST). ``appliance fix exchange|acceptor`` are registered with the FIX commands.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import urllib.parse

from appliance.cli import port_arg, positive_float, positive_int
from appliance.venues.registry import VENUES

log = logging.getLogger("appliance.sim.cli")


def _config(args):
    from appliance import config
    return config.load(getattr(args, "config", None))


def _sim(args) -> int:
    from appliance.sim import run
    return run.run(args.seconds, args.keep, args.dir, args.json)


def _demo(args) -> int:
    from appliance.sim import demo
    return demo.run(args.records, args.rate)


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
    import threading

    from appliance.actor import stop_signals
    from appliance.sim import venue
    try:
        faults = venue.Faults(drop_every=args.drop_every, duplicate_every=args.duplicate_every,
                            garbage_every=args.garbage_every, disconnect_after=args.disconnect_after,
                            disconnects=args.disconnects, stall_after=args.stall_after,
                            stall_ms=args.stall_ms)
        port = args.port if args.port is not None else _default_port(args)
        vs = venue.VenueSim(args.venue, args.recording or None, host=args.host, port=port,
                          pace=args.pace, speed=args.speed, faults=faults, loop=args.loop)
        vs.start()
    except (venue.SimError, OSError) as e:
        print(f"appliance venue-sim: {e}", file=sys.stderr)
        return 2
    stop = threading.Event()
    timer = None
    try:
        with stop_signals(stop.set):      # before the address is announced
            print(f"venue-sim {args.venue}: ws {vs.ws_url}  rest {vs.rest_url}", flush=True)
            if args.seconds:
                timer = threading.Timer(args.seconds, stop.set)
                timer.daemon = True       # a stop by signal does not wait for it
                timer.start()
            st = venue.serve_forever(vs, stop)
    finally:
        if timer is not None:
            timer.cancel()
    if args.json:
        print(json.dumps(st))
    else:
        log.info("venue-sim %s stopped: %s", args.venue, st)
    return 0


def _backtest(args) -> int:
    from appliance.sim import backtest
    return backtest.main(args)


def register(sub) -> None:
    p = sub.add_parser("backtest", help="the production engine against the exchange simulator "
                       "over a recording or a journal, then a report",
                       description="Backtest: a venue recording (X.ws.N.0 or X.jsonl.zst) or a "
                       "recorder journal through the production engine kernels and the compiled "
                       "exchange simulator, in event time; deterministic (sha256 of the order and "
                       "exec stream in the report). See appliance/sim/backtest.py.")
    p.add_argument("path", help="recording file or journal (file or directory)")
    p.add_argument("--venue", required=True, help=f"venue of the input ({', '.join(VENUES)})")
    p.add_argument("--config", default=argparse.SUPPRESS,
                   help="TOML config with [[strategies]], [risk], [engine], [sim.exchange] "
                   "(default: the packaged appliance/sim/backtest.toml)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--equity-csv", metavar="F", help="write time, realized and unrealized PnL "
                   "and position per fill")
    p.add_argument("--plot", metavar="F", help="F.png (matplotlib) or F.html (plotly): prices, "
                   "our quotes and fills, position, equity")
    p.add_argument("--tsc-hz", type=int, help="journals: TSC rate of the recording host "
                   "(default: this host's, rounded to 1 MHz)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--progress-min", type=int, default=2_000_000, help=argparse.SUPPRESS)
    p.set_defaults(handler=_backtest)

    p = sub.add_parser("sim", help="the whole appliance in sim mode on loopback, then a report")
    p.add_argument("--seconds", type=positive_float, default=20.0,
                   help="how long to trade (default 20)")
    p.add_argument("--dir", help="run directory for config, logs, journal (default: a new temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the shared-memory regions afterwards")
    p.add_argument("--json", action="store_true",
                   help="print the report as one JSON object (progress goes to stderr)")
    p.set_defaults(handler=_sim)

    p = sub.add_parser("demo", help="live two-process transport demo with latency figures")
    p.add_argument("--records", type=positive_int, default=200_000)
    p.add_argument("--rate", type=positive_float, default=100_000, help="records per second")
    p.set_defaults(handler=_demo)

    s = sub.add_parser("venue-sim", help="serve a recorded venue session on loopback (WS + REST)",
                       description="Venue simulator: replays a recorded session over a real "
                       "WebSocket server plus its REST snapshots, with fault injection.")
    s.add_argument("--config", default=argparse.SUPPRESS, help="TOML config file (for the default port)")
    s.add_argument("--venue", required=True, choices=VENUES)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=port_arg, help="TCP port for WS and REST (default: the port of the "
                   "venue's ws_url in the config, else 9001; 0 = any free port)")
    s.add_argument("--recording", action="append", help="recording file (repeatable; default: "
                   "every <VENUE>.ws.*.0 or <VENUE>.jsonl.zst in the data directory)")
    s.add_argument("--pace", choices=("realtime", "fast"), default="realtime")
    s.add_argument("--speed", type=positive_float, default=1.0, help="realtime speed-up factor")
    s.add_argument("--loop", action="store_true",
                   help="replay the recording over and over: each loop is a fresh connection "
                   "(the simulator closes the last one) with ids and times shifted so the "
                   "stream and its REST snapshots stay consistent")
    s.add_argument("--drop-every", type=int, default=0, metavar="N", help="drop every Nth frame (gap)")
    s.add_argument("--duplicate-every", type=int, default=0, metavar="N", help="send every Nth frame twice")
    s.add_argument("--garbage-every", type=int, default=0, metavar="N", help="garbage frame before every Nth")
    s.add_argument("--disconnect-after", type=int, default=0, metavar="N",
                   help="drop the TCP connection after N frames")
    s.add_argument("--disconnects", type=int, default=1, metavar="K",
                   help="connections that get --disconnect-after (0 = every one; default 1)")
    s.add_argument("--stall-after", type=int, default=0, metavar="N", help="pause after N frames")
    s.add_argument("--stall-ms", type=int, default=0, metavar="MS", help="length of the pause")
    s.add_argument("--seconds", type=positive_float, help="stop after this long")
    s.add_argument("--json", action="store_true", help="print the stats as JSON at exit")
    s.set_defaults(handler=_venue_sim)
