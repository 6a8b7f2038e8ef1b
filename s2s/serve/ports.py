"""A free TCP port, for servers that tests and scripts start (the app, the conversation route)."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (the OS picks it): for servers started by tests and scripts."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]
