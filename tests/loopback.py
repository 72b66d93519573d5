"""A connected loopback TCP pair for tests."""
from __future__ import annotations

import socket

from appliance.transport import netwarm


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """(client, server side), both blocking, TCP_NODELAY."""
    return netwarm.loopback_pair(blocking=True)
