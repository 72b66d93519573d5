"""``appliance``: the one command-line entry point.

Dispatch only. Each part of the appliance owns ``<part>/cli.py`` with ``register(subparsers)``
that adds its sub-commands (argparse only; heavy imports such as numba happen inside the
handlers, so ``appliance --help`` stays fast). A handler returns the process exit status.

Failures: bad input or a bad environment (a config error, a file that cannot be read or written,
a busy port, a missing region...) is reported as ONE line on stderr with exit status 2. That is
every OSError and every exception class the appliance defines itself (they carry messages meant
for the operator); anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import threading

from appliance import jit

# What importing the package does (appliance/__init__.py), done here again: with a directory named
# ``appliance`` in the working directory (``python -m appliance.cli`` puts it first on sys.path)
# the package can load as a namespace package without its __init__, and every kernel would then
# compile outside the keyed cache and without the kernel policy. Both calls are idempotent.
jit.setup_cache()
jit.install_kernel_policy()

# the parts, in the order their commands are listed by --help
COMMAND_MODULES = (
    "appliance.sim.cli",         # sim, demo, venue-sim
    "appliance.jit.cli",         # compile (every kernel into the numba cache, in parallel)
    "appliance.venues.cli",      # md, md replay
    "appliance.engine.cli",      # engine, kill, status
    "appliance.fix.cli",         # fix gateway|exchange|acceptor
    "appliance.group.cli",       # group (md gateway + engine + FIX gateway in one process)
    "appliance.journal.cli",     # recorder, journal stats|cat
    "appliance.transport.cli",   # shm ls
    "appliance.ops.cli",         # top, exporter
    "tuning.cli",                # tuning plan|check
    "benches.cli",               # bench ...
)


def port_arg(text: str) -> int:
    """argparse type of a TCP port (0 = any free port)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"{v} is not a TCP port (0..65535)")
    return v


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{v}: must be >= 1")
    return v


def positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"{text}: must be a finite number > 0")
    return v


def is_operator_error(e: BaseException) -> bool:
    """An exception that reports bad input or environment (see the module docstring)."""
    mod = type(e).__module__ or ""
    return isinstance(e, OSError) or mod.startswith(("appliance.", "tuning.", "benches."))


def one_line(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    if isinstance(e, OSError) and e.strerror and not str(e).startswith("["):
        text = str(e)
    elif isinstance(e, OSError) and e.strerror:
        text = f"{e.strerror}: {e.filename}" if e.filename else e.strerror
    return " ".join(text.split())


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
    except Exception as e:  # noqa: BLE001 - operator errors become one line; bugs re-raise
        if not is_operator_error(e):
            raise
        print(f"appliance {args.command}: {one_line(e)}", file=sys.stderr)
        return 2


def run() -> None:
    """The ``appliance`` command (and ``python -m appliance[.cli]``): :func:`main`, then leave
    without the interpreter's teardown when nothing is left to do. Once numba is loaded that
    teardown (garbage collection and finalisers of its objects) took about 0.5 s of every
    process: each actor's stop and each ``appliance kill`` waited for it. Logs and every open
    buffered file are flushed first; with a non-daemon thread still running the normal exit
    joins it.
    Tests call :func:`main`."""
    rc = main()
    main_thread = threading.main_thread()
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not main_thread):
        sys.exit(rc)
    logging.shutdown()
    _flush_open_files()
    os._exit(rc)


def _flush_open_files() -> None:
    """Flush every open buffered file of the process (what the teardown would have done for a
    file some code left open; about 0.15 s with numba loaded, a third of the teardown)."""
    import gc
    import io
    kinds = (io.BufferedWriter, io.BufferedRandom, io.TextIOWrapper)
    for f in [*gc.get_objects(), sys.stdout, sys.stderr]:
        if issubclass(type(f), kinds):        # type(): never through a dead weak proxy
            try:
                if not f.closed:
                    f.flush()
            except (OSError, ValueError):
                pass


if __name__ == "__main__":
    run()
