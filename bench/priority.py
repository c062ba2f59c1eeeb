"""Real-time scheduling for the measuring thread, so a busy host does not add to latencies.

On a loaded machine a normal process wakes up milliseconds after its data arrives, and that
delay would be measured as server latency. SCHED_FIFO (Linux, needs CAP_SYS_NICE) wakes it
within ~0.1 ms. Where it is not allowed the run goes on at normal priority.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

_PRIORITY = 10  # low among real-time priorities: above every normal process, below the kernel's


def set_realtime() -> bool:
    """Move the calling thread (and threads it starts later) to SCHED_FIFO; False if refused."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(_PRIORITY))
    except (AttributeError, OSError):
        return False
    return True


@contextlib.contextmanager
def realtime(enabled: bool = True) -> Iterator[bool]:
    """SCHED_FIFO inside the block when enabled and allowed; yields whether it was granted."""
    if not enabled:
        yield False
        return
    try:
        before = os.sched_getscheduler(0), os.sched_getparam(0)
    except (AttributeError, OSError):
        yield False
        return
    granted = set_realtime()
    try:
        yield granted
    finally:
        if granted:
            os.sched_setscheduler(0, before[0], before[1])
