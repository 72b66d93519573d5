"""CLI: ``appliance fix acceptor|gateway|exchange`` (heavy imports inside the handlers)."""
from __future__ import annotations

from appliance.cli import port_arg


def _acceptor(args) -> int:
    from appliance.sim.acceptor import run_from_args
    return run_from_args(args)


def _gateway(args) -> int:
    from appliance.fix.gateway import run_from_args
    return run_from_args(args)


def _exchange(args) -> int:
    from appliance.sim.exchange import run_from_args
    return run_from_args(args)


def register(sub) -> None:
    fix = sub.add_parser("fix", help="FIX sessions: order gateway, acceptance acceptor, mock exchange")
    fsub = fix.add_subparsers(dest="fix_command", metavar="FIX_COMMAND")

    acc = fsub.add_parser("acceptor", help="acceptance-suite acceptor (ISLD; TW44 FIX.4.4, TW42 FIX.4.2)")
    acc.add_argument("--port", type=port_arg, required=True, help="TCP port to listen on (0 = any)")
    acc.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    acc.add_argument("--store", default=None,
                     help="directory for the persistent session stores and message logs "
                          "(default: <appliance.state_dir>/fix-acceptor from the config)")
    acc.add_argument("--dict-dir", default=None,
                     help="directory holding FIX42.xml / FIX44.xml (default: the packaged ones)")
    acc.set_defaults(handler=_acceptor)

    gw = fsub.add_parser("gateway", help="FIX order gateway for one venue session")
    gw.add_argument("--session", required=True, help="session name from the config's [fix] section")
    gw.set_defaults(handler=_gateway)

    ex = fsub.add_parser("exchange", help="mock exchange: FIX acceptor with a matching engine")
    ex.add_argument("--port", type=port_arg, required=True, help="TCP port to listen on")
    ex.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    ex.add_argument("--ref", action="append", metavar="SYMBOL=PRICE",
                    help="reference price: orders crossing it fill (repeatable)")
    ex.add_argument("--store", default=None, help="session store directory (default: in memory)")
    ex.add_argument("--sender", default=None, help="our CompID when the config has no [fix.sessions]")
    ex.add_argument("--target", default=None, help="the client's CompID when the config has none")
    ex.set_defaults(handler=_exchange)

    fix.set_defaults(handler=lambda args: (fix.print_help(), 2)[1])
