"""Loopback helpers every layer uses: a free port, and waiting for a server to answer."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on HOST that nothing listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_healthy(url: str, timeout_s: float, alive: Callable[[], None] | None = None,
                 interval_s: float = 0.25) -> bool:
    """Poll URL until it answers 200 (True) or TIMEOUT_S passes (False).

    ALIVE is called before each poll and raises if what serves URL has died, so a crashed
    server fails at once instead of after the whole timeout.
    """
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if alive is not None:
            alive()
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2.0).status_code == 200:
                return True
        time.sleep(interval_s)
    return False
