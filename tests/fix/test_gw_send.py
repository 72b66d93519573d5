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
