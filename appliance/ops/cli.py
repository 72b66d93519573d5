"""``appliance top`` (live terminal view) and ``appliance exporter`` (Prometheus metrics).

Both read the shared-memory directory of the config (``[appliance] shm_dir``, else
``$APPLIANCE_SHM_DIR``, else the automatic choice) unless ``--shm-dir`` names one, and the status
files under ``[appliance] state_dir``. Watching an ``appliance sim --keep`` run from a second
terminal: ``appliance --config RUN/appliance.toml top --shm-dir SHM`` with the two paths the sim
prints.

Failures before anything runs (an invalid config, an unusable ``--refresh-hz``, a port that is
taken, a host that does not resolve, no terminal for ``top``) are one line on stderr and exit
status 2. A missing or idle appliance is not a failure: the view and the metrics say so.
"""
from __future__ import annotations

import logging
import sys


def _fail(cmd: str, msg: str) -> int:
    print(f"appliance {cmd}: {msg}", file=sys.stderr)
    return 2


def _load(cmd: str, args):
    from appliance import config
    try:
        return config.load(args.config), None
    except config.ConfigError as e:
        return None, _fail(cmd, str(e))


def _top(args) -> int:
    cfg, rc = _load("top", args)
    if cfg is None:
        return rc
    hz = args.refresh_hz if args.refresh_hz is not None else cfg.telemetry.refresh_hz
    if not 0.5 <= hz <= 50:
        return _fail("top", f"--refresh-hz {hz:g}: expected 0.5..50")
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        return _fail("top", "needs a terminal (stdin and stdout); use `appliance status --json` "
                            "or `appliance exporter` from scripts")
    from appliance.ops import books, source, top
    observer = source.Observer(cfg, args.shm_dir)        # logs the shm fallback before the UI
    watcher = None
    if not args.no_books:
        print("appliance top: loading the book kernels ...", file=sys.stderr, flush=True)
        watcher = books.BookWatcher(cfg, str(observer.dir))
        watcher.warm()
    keeper = top.LogKeeper()
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers = [keeper]
    try:
        app = top.TopApp(observer, watcher, hz, keeper)
        app.run()
    finally:
        root.handlers = saved
        if watcher is not None:
            watcher.close()
    if app.kill_line:
        print(app.kill_line)
    return 0


def _exporter(args) -> int:
    cfg, rc = _load("exporter", args)
    if cfg is None:
        return rc
    host = args.host if args.host is not None else cfg.telemetry.exporter_host
    port = args.port if args.port is not None else cfg.telemetry.exporter_port
    if not 0 <= port < 65536:                  # only [telemetry] can get here (validated)
        return _fail("exporter", f"port {port}: not a TCP port (0..65535)")
    from appliance.ops import exporter, source
    observer = source.Observer(cfg, args.shm_dir)

    def ready(addr) -> None:
        h, p = addr[0], addr[1]
        shown = f"[{h}]" if ":" in h else h
        print(f"appliance exporter: serving http://{shown}:{p}/metrics (shared memory "
              f"{observer.dir})", flush=True)

    try:
        return exporter.serve(observer, host, port, ready=ready)
    except OSError as e:
        why = e.strerror or str(e)
        return _fail("exporter", f"cannot listen on {host}:{port}: {why}")


def register(sub) -> None:
    from appliance.cli import port_arg
    p = sub.add_parser("top", help="live terminal view: actors, rings, latency, books, "
                                   "positions, risk, kill switch (q quits, k kills)")
    p.add_argument("--shm-dir", help="shared-memory directory of the appliance to watch "
                                     "(default: as the config / $APPLIANCE_SHM_DIR resolve it)")
    p.add_argument("--refresh-hz", type=float, default=None,
                   help="refreshes per second (default: [telemetry] refresh_hz, 5)")
    p.add_argument("--no-books", action="store_true",
                   help="do not attach to the md rings (no book panel)")
    p.set_defaults(handler=_top)
    p = sub.add_parser("exporter", help="Prometheus metrics of the running appliance over HTTP")
    p.add_argument("--host", default=None,
                   help="address to bind (default: [telemetry] exporter_host, 127.0.0.1)")
    p.add_argument("--port", type=port_arg, default=None,
                   help="TCP port (default: [telemetry] exporter_port, 9464)")
    p.add_argument("--shm-dir", help="shared-memory directory of the appliance to export "
                                     "(default: as the config / $APPLIANCE_SHM_DIR resolve it)")
    p.set_defaults(handler=_exporter)
