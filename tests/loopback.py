"""A connected loopback TCP pair for tests (the benches have their own, non-blocking)."""
from __future__ import annotations

import socket


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """(client, server side), both blocking, TCP_NODELAY."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    cli = socket.create_connection(srv.getsockname())
    peer, _ = srv.accept()
    srv.close()
    for s in (cli, peer):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return cli, peer
