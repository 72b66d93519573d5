"""Shared helpers for the FIX tests: wiring two sessions without sockets, pumping loops."""
from __future__ import annotations

import socket
import threading
import time

from appliance.fix.transport import EventLoop
from appliance.sim.acceptor import EchoApplication, build


class Wire:
    """Two sessions connected back to back in memory, with an injected clock."""

    def __init__(self, initiator, acceptor, now=1_700_000_000.0):
        self.i, self.a, self.now = initiator, acceptor, now
        self.dropped_to_i = False

    def connect(self):
        out_a = self.a.connected(self.now)
        out_i = self.i.connected(self.now)
        self.pump(out_i, out_a)

    def pump(self, to_a=b"", to_i=b"", rounds=50):
        for _ in range(rounds):
            if not to_a and not to_i:
                return
            na = self.a.on_bytes(to_a, self.now) if to_a else b""
            ni = self.i.on_bytes(to_i, self.now) if to_i else b""
            to_a, to_i = ni, na
        raise AssertionError("sessions did not go quiet")

    def tick(self, seconds):
        self.now += seconds
        self.pump(self.i.on_timer(self.now), self.a.on_timer(self.now))


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def pump_until(loops, cond, timeout=20.0, step=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for lp in loops:
            lp.poll(step)
        if cond():
            return True
    return False


# The one instrument the FIX process tests trade, as the config's registry has it (the sessions
# name the venue: [fix.sessions.X] venue = "binance").
VENUE_TOML = """
[[venues]]
name = "binance"
[[instruments]]
venue = "binance"
symbol = "BTCUSDT"
tick = "0.01"
lot = "0.001"
"""


class AcceptorThread:
    """The acceptance acceptor on a background thread ; ``port`` is the bound port."""

    def __init__(self, host="127.0.0.1", port=0, store_dir=None, dict_dir=None):
        self.loop = EventLoop(tick=0.02)
        self.app = EchoApplication()
        self.sessions = build(self.loop, store_dir, dict_dir, self.app)
        self.port = self.loop.listen(host, port)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.loop.run, args=(self._stop.is_set,),
                                        name="fix-acceptor", daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(5)
        self.loop.close()
