"""A FIX peer in its own process, for crash tests (killed with SIGKILL by the tests).

    python -m tests.fix.peer_proc acceptor --port P --store DIR
        FIX.4.4 EXCH <- CLIENT, persistent store, no resets; answers every NewOrderSingle with
        an ExecutionReport carrying its ClOrdID. Prints "listening PORT".
    python -m tests.fix.peer_proc initiator --port P --store DIR --first K --count N
        FIX.4.4 CLIENT -> EXCH, persistent store; once logged on sends orders K..K+N-1, one per
        loop turn, printing "sent SEQ CLORDID" after each is handed to the socket.
"""
from __future__ import annotations

import argparse
import sys
import time

from appliance.fix.session import Application, Session, SessionConfig
from appliance.fix.store import FileStore, MessageLog
from appliance.fix.transport import EventLoop
from appliance.fix import dictionary


def acceptor_config(**kw):
    return SessionConfig(begin_string="FIX.4.4", sender_comp_id="EXCH", target_comp_id="CLIENT", **kw)


def initiator_config(**kw):
    return SessionConfig(begin_string="FIX.4.4", sender_comp_id="CLIENT", target_comp_id="EXCH",
                         initiator=True, heartbeat_interval=5, **kw)


def order_body(clordid: str, now: float) -> list:
    from appliance.fix.wire import utc_timestamp
    return [(11, clordid.encode()), (21, b"1"), (38, b"1"), (40, b"1"), (54, b"1"), (55, b"BTCUSDT"),
            (60, utc_timestamp(now, False))]


class ExecApp(Application):
    def __init__(self):
        self.n = 0

    def on_app_message(self, session, msg):
        if msg.msg_type != b"D":
            return super().on_app_message(session, msg)
        self.n += 1
        session.send_app(b"8", [(6, b"0"), (11, msg.get(11)), (14, b"0"), (17, b"E%d" % self.n),
                                (37, b"O%d" % self.n), (39, b"0"), (54, b"1"), (55, b"BTCUSDT"),
                                (150, b"0"), (151, b"1")])


class ReportSink(Application):
    """Initiator side: takes execution reports."""

    def on_app_message(self, session, msg):
        if msg.msg_type != b"8":
            return super().on_app_message(session, msg)


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=("acceptor", "initiator"))
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--store", required=True)
    p.add_argument("--first", type=int, default=1)
    p.add_argument("--count", type=int, default=0)
    a = p.parse_args(argv)
    loop = EventLoop(tick=0.02)
    dd = dictionary.for_version("FIX.4.4")
    store = FileStore(a.store)
    mlog = MessageLog(f"{a.store}/messages.log")
    if a.role == "acceptor":
        s = Session(acceptor_config(), store, ExecApp(), dd, mlog, now=time.time())
        loop.add_acceptor_session(s)
        port = loop.listen("127.0.0.1", a.port)
        print(f"listening {port}", flush=True)
        loop.run(lambda: False)
        return 0
    s = Session(initiator_config(), store, ReportSink(), dd, mlog, now=time.time())
    loop.add_initiator(s, "127.0.0.1", a.port, reconnect_interval=0.2)
    nxt, last = a.first, a.first + a.count
    while True:
        loop.poll(0.005)
        if nxt < last and s.logged_on and not s.closing:
            seq = s.send_app(b"D", order_body(f"C{nxt}", time.time()))
            loop.flush_session(s)
            print(f"sent {seq} C{nxt}", flush=True)
            nxt += 1


if __name__ == "__main__":
    sys.exit(main())
