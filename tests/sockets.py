"""Raw sockets for tests of slow clients: is a connection closed, and when."""

from __future__ import annotations

import selectors
import socket
import time


def is_closed(sock: socket.socket) -> bool:
    """Return True when the peer has closed SOCK (EOF or reset); read and drop any answer."""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def wait_closed(
    socks: list[socket.socket], seconds: float, trickle: bytes = b"", every: float = 0.25
) -> dict[socket.socket, float]:
    """Wait up to SECONDS for SOCKS to be closed by the server, sending TRICKLE on each open one EVERY seconds.

    Return the moment each closed socket was seen closed.
    """
    closed: dict[socket.socket, float] = {}
    selector = selectors.DefaultSelector()
    for sock in socks:
        selector.register(sock, selectors.EVENT_READ)
    deadline = time.monotonic() + seconds
    next_trickle = time.monotonic() + every
    while len(closed) < len(socks) and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.05):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if is_closed(sock):
                closed[sock] = time.monotonic()
                selector.unregister(sock)
        if trickle and time.monotonic() >= next_trickle:
            next_trickle += every
            for sock in socks:
                if sock not in closed:
                    try:
                        sock.send(trickle)
                    except OSError:
                        closed[sock] = time.monotonic()
                        selector.unregister(sock)
    selector.close()
    return closed
