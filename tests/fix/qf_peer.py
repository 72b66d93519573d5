"""The QuickFIX side of the interop tests, in its own process (``python -m tests.fix.qf_peer``).

QuickFIX runs its sessions on its own threads and calls back into Python; keeping it out of the
pytest process means nothing it does at shutdown can take the test run with it. Protocol, one
JSON object per line:

- argv: ROLE (initiator | acceptor) SETTINGS_FILE SESSIONS_JSON ([[begin, sender, target], ...])
- stdin: ``{"cmd": "send", "sid": N, "mt": "D", "fields": [[tag, "value"], ...]}`` (session N of
  SESSIONS_JSON), ``{"cmd": "fill", "sid": N, "clord": "..."}`` (acceptor: fill that order),
  ``{"cmd": "stop"}``;
- stdout: ``{"ev": "logon" | "logout", "sid": "..."}``, ``{"ev": "in", "sid": "...", "mt": "8",
  "f": {tag: value}}`` for application messages, ``{"ev": "type", "dir": "in" | "out", "mt": "..."}``
  for every message, ``{"ev": "ready"}`` once started.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time

import quickfix as fix

_out_lock = threading.Lock()


def emit(**ev) -> None:
    with _out_lock:
        sys.stdout.write(json.dumps(ev) + "\n")
        sys.stdout.flush()


def _msg(bs: str, mt: str, fields) -> "fix.Message":
    m = fix.Message()
    m.getHeader().setField(fix.BeginString(bs))
    m.getHeader().setField(fix.MsgType(mt))
    for t, v in fields:
        m.setField(int(t), str(v))
    return m


class Recorder(fix.Application):
    """Reports every message type in and out and the application messages received."""

    TAGS = (11, 17, 20, 31, 32, 37, 38, 39, 41, 43, 44, 45, 54, 55, 58, 150, 151, 14, 373, 380)

    def onCreate(self, sid): pass

    def onLogon(self, sid):
        emit(ev="logon", sid=sid.toString())

    def onLogout(self, sid):
        emit(ev="logout", sid=sid.toString())

    def toAdmin(self, msg, sid):
        emit(ev="type", dir="out", mt=msg.getHeader().getField(35))

    def fromAdmin(self, msg, sid):
        emit(ev="type", dir="in", mt=msg.getHeader().getField(35))

    def toApp(self, msg, sid):
        emit(ev="type", dir="out", mt=msg.getHeader().getField(35))

    def fromApp(self, msg, sid):
        mt = msg.getHeader().getField(35)
        f = {t: msg.getField(t) for t in self.TAGS if msg.isSetField(t)}
        if msg.getHeader().isSetField(43):
            f[43] = msg.getHeader().getField(43)
        emit(ev="type", dir="in", mt=mt)
        emit(ev="in", sid=sid.toString(), mt=mt, f=f)
        self.on_app(msg, sid, mt)

    def on_app(self, msg, sid, mt):
        pass


class Venue(Recorder):
    """A QuickFIX acceptor application that answers orders like a venue, in the session's dialect."""

    def __init__(self):
        super().__init__()
        self.orders = {}
        self.n = 0

    def _er(self, sid, o, et, clord, orig=None, last=None, trans="0"):
        bs = sid.getBeginString().getValue()
        self.n += 1
        f = [(37, o["oid"]), (11, clord), (17, f"E{self.n}-{time.time_ns()}"), (39, o["status"]),
             (55, o["sym"]), (54, o["side"]), (38, o["qty"]), (40, "2"), (44, o["px"]),
             (151, "0" if o["status"] in ("2", "4", "5") else o["qty"]), (14, o["cum"]), (6, o["avg"])]
        if orig:
            f.append((41, orig))
        if bs == "FIX.4.2":
            f += [(20, trans), (150, et if et not in ("F", "I") else ("2" if et == "F" else o["status"]))]
        else:
            f.append((150, et))
        if last:
            f += [(31, last[0]), (32, last[1])]
        fix.Session.sendToTarget(_msg(bs, "8", f), sid)

    def fill(self, sid, clord):
        o = self.orders[clord]
        o.update(status="2", cum=o["qty"], avg=o["px"])
        self._er(sid, o, "F", clord, last=(o["px"], o["qty"]))

    def on_app(self, msg, sid, mt):
        g = msg.getField
        if mt == "D":
            o = {"oid": f"V{len(self.orders) + 1}", "sym": g(55), "side": g(54), "qty": g(38), "px": g(44),
                 "status": "0", "cum": "0", "avg": "0"}
            self.orders[g(11)] = o
            self._er(sid, o, "0", g(11))
            if float(o["px"]) >= 100:
                self.fill(sid, g(11))
        elif mt == "G":
            o = dict(self.orders[g(41)])
            self.orders[g(41)]["status"] = "5"
            o.update(px=g(44), qty=g(38))
            self.orders[g(11)] = o
            self._er(sid, o, "5", g(11), orig=g(41))
        elif mt == "F":
            o = self.orders[g(41)]
            o["status"] = "4"
            self._er(sid, o, "4", g(11), orig=g(41))
        elif mt == "H":
            self._er(sid, self.orders[g(11)], "I", g(11), trans="3")




def main() -> int:
    role, settings_path, sessions = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    settings = fix.SessionSettings(settings_path)
    app = Venue() if role == "acceptor" else Recorder()
    store_factory = fix.FileStoreFactory(settings)
    engine = (fix.SocketAcceptor if role == "acceptor" else fix.SocketInitiator)(app, store_factory, settings)
    engine.start()
    sids = [fix.SessionID(*s) for s in sessions]
    emit(ev="ready")
    for line in sys.stdin:
        c = json.loads(line)
        if c["cmd"] == "stop":
            break
        sid = sids[c["sid"]]
        if c["cmd"] == "send":
            fix.Session.sendToTarget(_msg(sid.getBeginString().getValue(), c["mt"], c["fields"]), sid)
        elif c["cmd"] == "fill":
            app.fill(sid, c["clord"])
    sys.stdout.flush()
    os._exit(0)          # no engine.stop(): the process exit closes the sockets


if __name__ == "__main__":
    sys.exit(main())
