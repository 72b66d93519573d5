"""Feeder processes for the ops tests: real :class:`appliance.actor.Actor` subclasses that
publish what the appliance's actors publish (an md ring, telemetry histograms and counters, the
control-block line and heartbeat, a status file), driven line by line over stdin so a test can
act between steps. Each command is answered with ``ok <command>`` on stdout once it is done.

    python -m tests.ops.procs md CONFIG VENUE [CAPACITY]
        snapshot B BID ASK N   book B: F_SNAPSHOT levels (bids BID, BID-1, ...; asks ASK, ...,
                               N per side, qty 10 + k), BATCH_END, BOOK_STATUS VALID
        remove B SIDE PRICE    one L2 delete (SIDE buy|sell) + BATCH_END with the new best
        set B SIDE PRICE QTY   one L2 level change + BATCH_END
        invalid B REASON       BOOK_STATUS INVALID(REASON)
        batch B BID ASK        a BATCH_END saying the best prices are BID / ASK
        trade B SIDE PRICE QTY
        noise B N              N deltas far from the top (lap a small ring) + BATCH_END each
        hist NAME NS [N]       record NS into histogram NAME (N times)
        counter NAME V         set counter NAME
        gauge NAME V
        exit

    python -m tests.ops.procs fix CONFIG SESSION
        a FIX gateway's control-block lines (kind fix): working N (its kill line's working
        orders), killack E (its kill acknowledgement) and the hist / counter / exit commands

    python -m tests.ops.procs engine CONFIG
        the engine's role in the kill protocol (engine_pid, acknowledge every kill epoch with
        its TSC stamp, risk state HALTED), a status file made by a real EngineState
        (``EngineState.snapshot``) and the hist / counter / exit commands above
"""
from __future__ import annotations

import os
import select
import sys

import numpy as np

from appliance import actor, config
from appliance.transport import clock, control, hist, records, ring


class Feeder(actor.Actor):
    status_every_s = 0.1

    def __init__(self, cfg, name):
        super().__init__(cfg, name)
        self.buf = b""
        self.extra_status: dict = {}

    def start(self) -> None:
        print("live", flush=True)

    def poll(self) -> None:
        r, _, _ = select.select([sys.stdin], [], [], 0.02)
        if not r:
            return
        chunk = os.read(sys.stdin.fileno(), 65536)
        if not chunk:
            self.stopping = True
            return
        self.buf += chunk
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            words = line.decode().split()
            if words:
                self.command(words)
                self.tick(force=True)
                print("ok " + " ".join(words), flush=True)

    def command(self, w: list[str]) -> None:
        if w[0] == "hist":
            i = self.tm.hist(w[1])
            for _ in range(int(w[3]) if len(w) > 3 else 1):
                hist.record(self.tm.hists[i], int(w[2]))
        elif w[0] == "counter":
            self.tm.counters[self.tm.counter(w[1])] = int(w[2])
        elif w[0] == "gauge":
            from appliance.transport import telemetry
            self.tm.counters[self.tm.counter(w[1], telemetry.KIND_GAUGE)] = int(w[2])
        elif w[0] == "exit":
            self.stopping = True
        else:
            raise SystemExit(f"unknown command {w}")

    def status(self) -> dict:
        return dict(self.extra_status)


class MdFeeder(Feeder):
    """An md gateway's ring: records of the venue's configured instruments."""

    kind = control.ACTOR_MD

    def __init__(self, cfg, venue, capacity):
        super().__init__(cfg, f"md.{venue}")
        self.venue = venue
        self.vid = records.VENUE_IDS[venue]
        self.capacity = capacity
        self.books: dict[int, tuple[dict, dict]] = {}
        self.w = None

    def open(self) -> None:
        self.w = ring.RingWriter.create(f"md.{self.venue}", records.MD_RECORD_SIZE, self.capacity,
                                        self.shm_dir)

    def close(self) -> None:
        if self.w is not None:
            self.w.close()

    def _rec(self, dtype, b, **fields):
        r = np.zeros(1, dtype)
        r["rtype"] = {records.L2_UPDATE: records.RT_L2_UPDATE, records.BATCH_END: records.RT_BATCH_END,
                      records.BOOK_STATUS: records.RT_BOOK_STATUS,
                      records.TRADE: records.RT_TRADE}[dtype]
        r["venue"] = self.vid
        r["instrument"] = b
        r["origin_tsc"] = clock.now_tsc()
        for k, v in fields.items():
            r[k] = v
        self.w.publish(r)

    def _l2(self, b, side, price, qty, flags=0):
        bids, asks = self.books.setdefault(b, ({}, {}))
        lv = bids if side == records.SIDE_BUY else asks
        if qty:
            lv[price] = qty
        else:
            lv.pop(price, None)
        self._rec(records.L2_UPDATE, b, side=side, price=price, qty=qty, flags=flags)

    def _batch_end(self, b):
        bids, asks = self.books.get(b, ({}, {}))
        self._rec(records.BATCH_END, b, bid_price=max(bids) if bids else 0,
                  ask_price=min(asks) if asks else 0, n_updates=1)

    def command(self, w: list[str]) -> None:
        side = {"buy": records.SIDE_BUY, "sell": records.SIDE_SELL}
        if w[0] == "snapshot":
            b, bid, ask, n = (int(x) for x in w[1:5])
            self.books[b] = ({}, {})
            for k in range(n):
                self._l2(b, records.SIDE_BUY, bid - k, 10 + k, records.F_SNAPSHOT)
                self._l2(b, records.SIDE_SELL, ask + k, 10 + k, records.F_SNAPSHOT)
            self._batch_end(b)
            self._rec(records.BOOK_STATUS, b, status=records.BOOK_VALID, reason=records.BR_NONE)
        elif w[0] == "remove":
            self._l2(int(w[1]), side[w[2]], int(w[3]), 0)
            self._batch_end(int(w[1]))
        elif w[0] == "set":
            self._l2(int(w[1]), side[w[2]], int(w[3]), int(w[4]))
            self._batch_end(int(w[1]))
        elif w[0] == "invalid":
            b = int(w[1])
            self.books[b] = ({}, {})
            self._rec(records.BOOK_STATUS, b, status=records.BOOK_INVALID, reason=int(w[2]))
        elif w[0] == "batch":              # a BATCH_END with the given best prices, right or not
            self._rec(records.BATCH_END, int(w[1]), bid_price=int(w[2]), ask_price=int(w[3]))
        elif w[0] == "trade":
            self._rec(records.TRADE, int(w[1]), side=side[w[2]], price=int(w[3]), qty=int(w[4]))
        elif w[0] == "noise":
            b = int(w[1])
            bids, _ = self.books.setdefault(b, ({}, {}))
            low = (min(bids) if bids else 1000) - 100
            for k in range(int(w[2])):
                self._l2(b, records.SIDE_BUY, low - (k % 7), 1 + k % 5)
                self._batch_end(b)
        else:
            super().command(w)


class EngineFeeder(Feeder):
    """The engine's part of the kill protocol and a real EngineState's status snapshot."""

    kind = control.ACTOR_ENGINE

    def __init__(self, cfg):
        super().__init__(cfg, "engine")
        self.acked = 0
        self.cal = None
        self.es = None

    def warm(self) -> None:
        from appliance.engine.state import EngineState
        self.cal = clock.calibration()
        self.es = EngineState.from_config(self.cfg, cal=self.cal, clord_base=1)
        self.extra_status = self.es.snapshot()

    def start(self) -> None:
        self.cb.rec["engine_pid"] = os.getpid()
        super().start()

    def poll(self) -> None:
        words = self.cb.words
        if control.kill_requested(words):
            ep = int(control.kill_epoch(words))
            if ep > self.acked:
                control.set_risk_state(words, records.RISK_HALTED)
                control.ack_kill(words, ep, 0)
                self.acked = ep
        super().poll()

    def close(self) -> None:
        if self.cb is not None:
            self.cb.rec["engine_pid"] = 0


class FixFeeder(Feeder):
    """A FIX gateway's control-block lines: kind fix, its kill line (working orders) and its
    kill acknowledgement."""

    kind = control.ACTOR_FIX

    def __init__(self, cfg, session):
        super().__init__(cfg, f"fix.{session}")

    def command(self, w: list[str]) -> None:
        if w[0] == "working":
            self.cb.rec["gw_kill"][self._idx]["working"] = int(w[1])
        elif w[0] == "killack":
            control.actor_ack_kill(self.cb.words, self._idx, int(w[1]))
        else:
            super().command(w)


def main(argv: list[str]) -> int:
    cfg = config.load(argv[1])
    if argv[0] == "md":
        a = MdFeeder(cfg, argv[2], int(argv[3]) if len(argv) > 3 else 1024)
    elif argv[0] == "engine":
        a = EngineFeeder(cfg)
    elif argv[0] == "fix":
        a = FixFeeder(cfg, argv[2])
    else:
        raise SystemExit(f"unknown role {argv[0]}")
    return a.run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
