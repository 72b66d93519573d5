"""The md socket's ACKs leave from the pump, not from the frame's recv(): after the pump found
the socket empty it has sent the ACK of what it read (wsframe.ack_now) and left the socket in
pingpong mode, where the next small frame's recv() sends none."""
from __future__ import annotations

import socket
import time

from appliance.venues import binance, common, wsframe
from tests.loopback import tcp_pair


def _tcp_pair():
    cli, peer = tcp_pair()
    cli.setblocking(False)
    return cli, peer


def _pingpong(sock) -> bool:
    # Linux: getsockopt(TCP_QUICKACK) is 1 unless the socket is in pingpong (delayed-ACK) mode
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK) == 0


def _pump_until_idle(feed, fd, rx, ws):
    for _ in range(1000):
        r = binance.pump(fd, rx, ws, feed.st, feed.hdr, feed.data, 256, feed.lat, feed.cal)
        if r == wsframe.P_IDLE:
            return r
    raise AssertionError("the pump never found the socket empty")


def _feed():
    return common.quiet(binance.Feed([common.Instrument.make("BTCUSDT", "BTCUSDT", "0.01",
                                                             "0.00001")],
                                     common.RecordWriter.local(1024)))


FRAME = wsframe.frame_bytes(b'{"stream":"x","data":{"e":"unknown"}}')


def test_the_pump_acks_what_it_read_once_the_socket_stayed_quiet_and_stays_in_pingpong_mode():
    feed = _feed()
    rx, ws = wsframe.new_state(1 << 16)
    assert ws[wsframe.W_ACK_QUIET] == wsframe.ACK_QUIET_NS == 20_000
    quiet = 30_000
    ws[wsframe.W_ACK_QUIET] = quiet
    cli, venue = _tcp_pair()
    try:
        fd = cli.fileno()
        assert not _pingpong(cli)                      # a fresh socket ACKs from recv()
        _pump_until_idle(feed, fd, rx, ws)
        assert ws[wsframe.W_ACKS] == 0                  # nothing read: nothing to ACK
        for k in range(1, 4):
            # while the bytes are read, a quiet time no preemption of this test can outlast
            # (a loaded CI host may deschedule it for more than 30 us between two pumps)
            ws[wsframe.W_ACK_QUIET] = 10_000_000_000
            venue.sendall(FRAME * 2)
            time.sleep(0.01)
            _pump_until_idle(feed, fd, rx, ws)
            assert feed.st.cnt[common.N_FRAMES] == 2 * k
            # the bytes just came: not yet quiet for W_ACK_QUIET
            assert ws[wsframe.W_ACK] == 1 and ws[wsframe.W_ACKS] == k - 1
            ws[wsframe.W_ACK_QUIET] = quiet
            time.sleep(2 * quiet / 1e9)
            _pump_until_idle(feed, fd, rx, ws)
            assert ws[wsframe.W_ACKS] == k              # one ACK per burst, after it
            assert ws[wsframe.W_ACK] == 0
            assert _pingpong(cli)
        # an idle pump sends nothing more
        _pump_until_idle(feed, fd, rx, ws)
        assert ws[wsframe.W_ACKS] == 3
        # a new connection keeps the setting
        wsframe.reset(ws)
        assert ws[wsframe.W_ACK_QUIET] == quiet and ws[wsframe.W_ACKS] == 0
    finally:
        cli.close()
        venue.close()


def test_a_negative_quiet_time_leaves_the_acks_to_the_kernel():
    feed = _feed()
    rx, ws = wsframe.new_state(1 << 16)
    ws[wsframe.W_ACK_QUIET] = -1
    cli, venue = _tcp_pair()
    try:
        venue.sendall(FRAME)
        time.sleep(0.01)
        _pump_until_idle(feed, cli.fileno(), rx, ws)
        time.sleep(0.001)
        _pump_until_idle(feed, cli.fileno(), rx, ws)
        assert feed.st.cnt[common.N_FRAMES] == 1
        assert ws[wsframe.W_ACKS] == 0 and not _pingpong(cli)
    finally:
        cli.close()
        venue.close()


def test_ack_now_on_a_socket_that_is_not_tcp_is_harmless():
    a, b = socket.socketpair()
    try:
        rx, ws = wsframe.new_state(1 << 10)
        ws[wsframe.W_ACK_QUIET] = 0
        feed = _feed()
        a.setblocking(False)
        b.sendall(FRAME)
        time.sleep(0.01)
        r = _pump_until_idle(feed, a.fileno(), rx, ws)
        assert r == wsframe.P_IDLE and feed.st.cnt[common.N_FRAMES] == 1
        assert ws[wsframe.W_ACKS] == 1
    finally:
        a.close()
        b.close()


def test_the_venue_setting_reaches_the_pump():
    from appliance.venues.gateway import Gateway
    ins = [common.Instrument.make("BTCUSDT", "BTCUSDT", "0.01", "0.00001")]
    for us, word in ((0.0, 0), (25.0, 25_000), (-1.0, -1)):
        gw = Gateway("binance", ins, common.RecordWriter.local(64), "ws://127.0.0.1:1/x",
                     ack_after_us=us, warm=False)
        assert gw.wsw[wsframe.W_ACK_QUIET] == word
