"""gw_send: the FIX gateway's own step sends order batches in one compiled call (encode, the next
sender number into the store's mapped seqnums file, send(), telemetry) while Gateway.fast_fd
allows it."""
from __future__ import annotations

import errno

import numpy as np

from appliance.fix import gateway as fixgw
from appliance.fix.store import FileStore
from appliance.transport import hist, records as R, ring
from tests.fix.test_gw_rx import rig  # noqa: F401 - the fixture


def _new_order(clord: int) -> np.ndarray:
    o = np.zeros(1, R.NEW_ORDER)
    o[0]["rtype"], o[0]["clord_id"], o[0]["price"], o[0]["qty"] = R.RT_NEW_ORDER, clord, 100, 1
    o[0]["side"], o[0]["ord_type"], o[0]["tif"] = R.SIDE_BUY, R.ORD_LIMIT, R.TIF_GTC
    return o.view(np.uint8).reshape(-1)


def _fields(msg: bytes) -> dict:
    return dict(f.split(b"=", 1) for f in msg.split(b"\x01") if b"=" in f)


def test_orders_go_out_with_their_sender_numbers_on_disk(rig, tmp_path):  # noqa: F811
    fx, _frx, store, a, b = rig
    fx = fx._replace(seq=store.sender_view())
    fx.gst[fixgw.G_READY] = 1
    fx.gst[fixgw.G_NEXT_SEQ] = 5
    for clord in (11, 12):
        ring.publish(fx.ohdr, fx.odata, _new_order(clord))
    out = np.zeros(4, np.int64)
    assert fixgw.gw_send(fx, a.fileno(), 8, out) == 2
    assert out[fixgw.SO_N] == 2 and out[fixgw.SO_SENT] == out[fixgw.SO_LEN] > 0
    assert out[fixgw.SO_TSC] > 0
    got = b.recv(65536)
    assert len(got) == out[fixgw.SO_LEN]
    msgs = [m for m in got.split(b"\x0110=") if b"35=" in m]
    assert [(_fields(m)[b"35"], _fields(m)[b"34"], _fields(m)[b"11"]) for m in msgs] == [
        (b"D", b"5", b"11"), (b"D", b"6", b"12")]
    assert fx.gst[fixgw.G_NEXT_SEQ] == 7
    # the number after the batch was in the mapped file before it left: a restart reads it
    store.note_next_sender(7)
    again = FileStore(tmp_path / "store")
    assert again.next_sender == 7
    again.close()
    # telemetry: order_to_wire for both orders
    assert hist.summary(fx.hists[fx.hidx[fixgw.HOP_O2W]])["count"] == 2
    # an empty ring: nothing encoded, nothing sent
    assert fixgw.gw_send(fx, a.fileno(), 8, out) == 0 and out[fixgw.SO_LEN] == 0


def test_a_failed_send_is_reported_for_python(rig):  # noqa: F811
    fx, _frx, _store, a, b = rig
    fx.gst[fixgw.G_READY] = 1
    fx.gst[fixgw.G_NEXT_SEQ] = 1
    ring.publish(fx.ohdr, fx.odata, _new_order(21))
    fd = a.fileno()
    b.close()
    a.close()                                # the socket is gone: send() fails with EBADF
    out = np.zeros(4, np.int64)
    assert fixgw.gw_send(fx, fd, 8, out) == 1
    assert out[fixgw.SO_SENT] == -errno.EBADF


def test_orders_that_wake_the_idle_gateway_leave_before_python_runs(rig):  # noqa: F811
    """gw_idle_send: the gateway sleeps on the order ring's doorbell (a long back-off); the
    engine's order wakes it and goes out from the same compiled call."""
    import threading
    import time

    from appliance.transport import wait
    fx, _frx, _store, a, b = rig
    fx.gst[fixgw.G_READY] = 1
    fx.gst[fixgw.G_NEXT_SEQ] = 1
    hdr = fx.ohdr
    sleep_word = ring.SLEEP_OFF // 8

    def engine():
        end = time.monotonic() + 30
        while hdr.view(np.uint64)[sleep_word] == 0 and time.monotonic() < end:
            time.sleep(0.001)
        time.sleep(0.02)
        ring.publish(hdr, fx.odata, _new_order(31))
        ring.notify(hdr)                               # as the engine does after its pass

    t = threading.Thread(target=engine, daemon=True)
    t.start()
    st = wait.new_state()
    out = np.zeros(4, np.int64)
    params = wait.make("backoff", None, 0, 5_000_000_000, 5_000_000_000)
    assert fixgw.gw_idle_send(params, st, fx, ring.bell_rows([hdr]), a.fileno(), 8, out) == 1
    t.join(30)
    assert st[wait.S_RUNG] == 1                       # woken by the doorbell, not the timeout
    assert out[fixgw.SO_SENT] == out[fixgw.SO_LEN] > 0
    assert b"\x0111=31\x01" in b.recv(65536)
    # nothing arrived: -1, and no fd (not on the fast path): -1 with the record left for Python
    assert fixgw.gw_idle_send(wait.make("spin"), st, fx, ring.bell_rows([hdr]), a.fileno(), 8,
                              out) == -1
    ring.publish(hdr, fx.odata, _new_order(32))
    assert fixgw.gw_idle_send(wait.make("spin"), st, fx, ring.bell_rows([hdr]), -1, 8, out) == -1
    assert ring.behind(hdr, fx.ocur) == 1
