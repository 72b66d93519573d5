"""Compile (or load from the cache) every kernel of the FIX part, with the production types.

``warm()`` runs the gateway's kernels (``gateway.warm``: order step, receive/track, sent stamps,
status requests, open-order table) for a FIX 4.4 and a FIX 4.2 session on private rings, and the
codec entry points Python calls directly (``Encoder``: encode_order and encode_status_request,
``ExecStream``: parse_messages, ``decode_app_message``). The gateway actor calls
``gateway.warm`` before it goes live; ``appliance compile`` calls this through
:data:`appliance.jit.WARMERS`. Nothing is sent anywhere.
"""
from __future__ import annotations

import numpy as np

from appliance.fix import codec as C
from appliance.fix import gateway as G
from appliance.transport import records as R

_INSTRUMENTS = [{"symbol": "AAAUSDT", "tick_size": "0.01", "lot_size": "0.001"}]


def warm() -> int:
    """Compile or load every FIX kernel; returns how many entry points were called."""
    n = 0
    for bs in ("FIX.4.4", "FIX.4.2"):
        g = G.GatewayConfig.from_table("warm", {"host": "127.0.0.1", "port": 1, "sender_comp_id": "A",
                                                "target_comp_id": "B", "begin_string": bs,
                                                "instruments": _INSTRUMENTS})
        G.warm(g)
        n += 10
    enc = C.Encoder("FIX.4.4", "A", "B", [("AAAUSDT", "0.01", "0.001")])
    rec = np.zeros(1, R.NEW_ORDER)
    rec[0]["rtype"], rec[0]["clord_id"], rec[0]["price"], rec[0]["qty"] = R.RT_NEW_ORDER, 1, 100, 1
    rec[0]["side"], rec[0]["ord_type"], rec[0]["tif"] = R.SIDE_BUY, R.ORD_LIMIT, R.TIF_GTC
    enc.encode(rec, 1, 0)
    enc.status_request(1, 0, R.SIDE_BUY, 2, 0)
    body = (b"35=8\x0134=1\x0149=B\x0152=20240101-00:00:00.000\x0156=A\x0111=1\x0117=E\x01150=0\x01"
            b"39=0\x0155=AAAUSDT\x0154=1\x01151=0.001\x0114=0\x01")
    head = b"8=FIX.4.4\x019=%d\x01" % len(body) + body
    msg = head + b"10=%03d\x01" % (sum(head) % 256)
    stream = C.ExecStream(enc.instr, enc.syms)
    stream.feed(msg)
    buf = np.frombuffer(msg, np.uint8).copy()
    C.decode_app_message(buf, 0, len(buf), stream.st, enc.instr, enc.syms, stream.out[0], 0)
    return n + 4
