"""Compile (or load from the cache) the FIX gateway's kernels (``appliance compile``; a gateway
warms before it logs on). The kernels' types do not depend on the session's settings: a scratch
session config serves for all."""
from __future__ import annotations


def warm() -> int:
    from appliance.fix import gateway
    g = gateway.GatewayConfig.from_table("warm", {
        "host": "127.0.0.1", "port": 1, "sender_comp_id": "A", "target_comp_id": "B",
        "instruments": [{"symbol": "ABCUSDT", "tick_size": "0.01", "lot_size": "0.1"}]})
    gateway.warm(g)
    return 1
