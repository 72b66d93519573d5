"""The acceptance acceptor: ``appliance fix acceptor --port PORT``.

Configured like the reference engine's acceptance setup: SenderCompID ``ISLD``; counterparties
``TW44`` (FIX.4.4) and ``TW42`` (FIX.4.2); sequence numbers reset on every Logon; any HeartBtInt
the counterparty proposes is accepted; SendingTime must be within 120 s; application messages
are validated against the data dictionaries (the packaged FIX4x.xml, appliance/data/fix).

The application echoes every NewOrderSingle (35=D) and SecurityDefinition (35=d) back to the
sender, except a NewOrderSingle that is a possible resend (97=Y) of a ClOrdID already seen on
that session since its last logon (a logout forgets them, as the sequence numbers reset at every
logon); every other application message gets a BusinessMessageReject (380=3).
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path

from appliance.fix import dictionary as dictionary_mod
from appliance.fix.session import Application, Session, SessionConfig, UnsupportedMessageType
from appliance.fix.store import FileStore, MemoryStore, MessageLog
from appliance.fix.transport import EventLoop

log = logging.getLogger(__name__)

ACCEPTANCE_SESSIONS = (("FIX.4.4", "ISLD", "TW44"), ("FIX.4.2", "ISLD", "TW42"))
ECHO_TYPES = (b"D", b"d")


class EchoApplication(Application):
    """Echo NewOrderSingle / SecurityDefinition; BusinessMessageReject everything else."""

    def __init__(self):
        self.seen_clordids: set = set()
        self.echoed = 0

    def on_logout(self, session):
        self.seen_clordids = {k for k in self.seen_clordids if k[0] != session.name}

    def on_app_message(self, session, msg):
        mt = msg.msg_type
        if mt not in ECHO_TYPES:
            raise UnsupportedMessageType()
        if mt == b"D":
            key = (session.name, msg.get(11))
            if msg.get(97) == b"Y" and key in self.seen_clordids:
                log.info("%s: possible resend of ClOrdID %r already seen; not echoed", session.name, msg.get(11))
                return
            self.seen_clordids.add(key)
        header = [(t, v) for t, v in msg.fields
                  if session.dd is not None and session.dd.is_header_tag(t)
                  and t not in (8, 9, 35, 34, 49, 52, 56, 43, 122)]
        body = [(t, v) for t, v in msg.fields
                if (session.dd is None or not session.dd.is_header_tag(t)) and t not in (8, 9, 35, 10)]
        if session.dd is not None:
            body = session.dd.order_body(mt, body)
        session.send_app(mt, body, header)
        self.echoed += 1


def build(loop: EventLoop, store_dir=None, dict_dir=None, app=None, heartbeat_check=True) -> list:
    """Create the acceptance sessions on ``loop``; returns them."""
    app = app or EchoApplication()
    sessions = []
    for bs, sender, target in ACCEPTANCE_SESSIONS:
        cfg = SessionConfig(begin_string=bs, sender_comp_id=sender, target_comp_id=target,
                            initiator=False, reset_on_logon=True, max_latency=120.0)
        if store_dir:
            d = Path(store_dir) / f"{bs}-{sender}-{target}"
            store = FileStore(d)
            mlog = MessageLog(d / "messages.log")
        else:
            store, mlog = MemoryStore(), None
        dd = dictionary_mod.for_version(bs, dict_dir)
        s = Session(cfg, store, app, dd, mlog, now=loop.clock())
        loop.add_acceptor_session(s)
        sessions.append(s)
    return sessions


def run_from_args(args) -> int:
    """``appliance fix acceptor``: serve until SIGTERM / SIGINT (exit status 0)."""
    from appliance.actor import stop_signals
    store = args.store
    if store is None:
        from appliance import config
        store = str(Path(config.load(getattr(args, "config", None)).appliance.state_dir) / "fix-acceptor")
    loop = EventLoop()
    build(loop, store, getattr(args, "dict_dir", None))
    log.info("session stores and message logs under %s", store)
    stop = threading.Event()
    try:
        with stop_signals(stop.set):              # before anyone can know the port
            port = loop.listen(args.host, args.port)
            log.info("FIX acceptance acceptor listening on %s:%d (ISLD <- TW44 FIX.4.4, TW42 FIX.4.2)",
                     args.host, port)
            print(f"listening {args.host}:{port}", flush=True)
            loop.run(stop.is_set)
    finally:
        loop.close()
    return 0
