"""The net warm-up of a spinning loop (transport.netwarm): a 64-byte send and read-back on a
private loopback connection when due, never when off, bounded, and off by itself after errors."""
from __future__ import annotations

import socket
import time

import numpy as np
import pytest

from appliance import config
from appliance.transport import clock, netwarm, wait

DUE = 1 << 62          # a TSC far past any W_NEXT


@pytest.fixture
def nw():
    w = netwarm.NetWarm(50.0, clock.calibration(), "test")
    yield w
    w.close()


def _pending(sock: socket.socket) -> int:
    try:
        return len(sock.recv(1 << 16))
    except BlockingIOError:
        return 0


def test_a_due_warm_up_sends_64_bytes_and_reads_them_back(nw):
    assert nw.on
    assert netwarm.tick(nw.words, nw.buf, DUE) == 1
    assert nw.counts() == {"net_warms": 1, "net_warm_errors": 0}
    assert _pending(nw.socks[1]) == 0                       # read back, nothing left over
    # the next one is due net_warm_us later, not at once
    assert netwarm.tick(nw.words, nw.buf, int(nw.words[netwarm.W_NEXT]) - 1) == 0
    assert netwarm.tick(nw.words, nw.buf, int(nw.words[netwarm.W_NEXT])) == 1
    assert nw.counts()["net_warms"] == 2


def test_the_connection_holds_no_more_than_a_read_drains(nw):
    for _ in range(2000):
        netwarm.tick(nw.words, nw.buf, DUE)
    assert nw.counts() == {"net_warms": 2000, "net_warm_errors": 0}
    assert _pending(nw.socks[1]) < netwarm.BUF


@pytest.mark.parametrize("every", [0.0, -1.0])
def test_off_never_warms(every):
    w = netwarm.NetWarm(every, clock.calibration())
    assert not w.on and w.socks == ()
    assert netwarm.tick(w.words, w.buf, DUE) == 0
    assert netwarm.tick(netwarm.off(), w.buf, DUE) == 0
    assert w.counts()["net_warms"] == 0


def test_errors_turn_it_off_without_stopping_the_loop(nw):
    nw.words[netwarm.W_TX] = nw.words[netwarm.W_RX] = -1    # sends fail (EBADF)
    for _ in range(netwarm.MAX_ERRORS):
        assert netwarm.tick(nw.words, nw.buf, DUE) == 1
    assert nw.counts()["net_warm_errors"] == netwarm.MAX_ERRORS
    assert not nw.on
    assert netwarm.tick(nw.words, nw.buf, DUE) == 0


def test_only_a_spinning_loop_warms(tmp_path):
    p = tmp_path / "a.toml"
    p.write_text("[wait]\nnet_warm_us = 25\n")
    cfg = config.load(p).wait
    assert netwarm.every_us(cfg, wait.make("spin")) == 25.0
    for kind in ("spin_yield", "backoff"):
        assert netwarm.every_us(cfg, wait.make(kind)) == 0.0
    assert config.WaitSection().net_warm_us == 50.0          # on by default where a loop spins


@pytest.mark.parametrize("value", ["-1", "1e9", '"x"'])
def test_a_bad_net_warm_us_is_a_config_error(tmp_path, value):
    p = tmp_path / "a.toml"
    p.write_text(f"[wait]\nnet_warm_us = {value}\n")
    with pytest.raises(config.ConfigError, match="net_warm_us"):
        config.load(p)


def test_the_one_process_loop_warms_while_idle_and_not_while_off():
    from appliance.group import run as group
    md, cal, en, fx, frx, g, (wp, ws, _w, _b, dry, dry_rec) = group.scratch_args("binance")
    w = netwarm.NetWarm(5.0, cal)
    try:
        g[group.G_BUDGET] = int(2e-3 * float(cal[clock.C_HZ]))   # 2 ms of an idle loop ...
        deadline = time.monotonic() + 5.0
        while True:     # ... again while a loaded CI host descheduled most of it (5 s at most)
            group.STEPS["binance"](md, cal, en, fx, frx, g, (wp, ws, w.words, w.buf, dry, dry_rec))
            if w.counts()["net_warms"] > 10 or time.monotonic() > deadline:
                break
        assert w.counts()["net_warms"] > 10
        assert w.counts()["net_warm_errors"] == 0
        quiet = netwarm.off()
        group.STEPS["binance"](md, cal, en, fx, frx, g, (wp, ws, quiet, w.buf, dry, dry_rec))
        assert quiet[netwarm.W_WARMS] == 0
    finally:
        w.close()
