"""Peak resident memory of some processes (Linux /proc), sampled while a workload runs."""

from __future__ import annotations

import os
import threading


def process_group(pid: int) -> list[int]:
    """The processes of PID's process group: a server and the workers it spawned."""
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return []
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid:
                    out.append(int(entry))
            except ProcessLookupError:
                pass
    return out


class PeakRSS:
    """Context manager: the largest summed RSS of PIDS seen every 50 ms inside it."""

    def __init__(self, pids: list[int] | None = None):
        self.pids = pids or [os.getpid()]
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> int:
        total = 0
        for pid in self.pids:
            try:
                with open(f"/proc/{pid}/statm") as f:
                    total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            except OSError:
                pass  # a worker that ended since the list was made
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            self._stop.wait(0.05)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def gib(self) -> float:
        return round(self.peak / 2**30, 2)
