"""Batched admission: requests that wait together are prepared (parsed, tokenized) together.

On the event loop, each request hands its item to a Batcher and awaits its result; one batch
at a time runs on a worker thread, and whatever arrived meanwhile is the next batch. So 64
requests that come at once cost one or two tokenizer calls (the Rust tokenizer encodes a list
in one call, outside the GIL), not 64.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any


class Batcher:
    """`await batcher(item)`: FN(list of items) -> one result or Exception per item, in order."""

    def __init__(self, fn: Callable[[list], list], executor: Executor):
        self.fn, self.executor = fn, executor
        self.pending: list[tuple[Any, asyncio.Future]] = []
        self.draining = False

    async def __call__(self, item: Any) -> Any:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.pending.append((item, future))
        if not self.draining:
            self.draining = True
            loop.create_task(self._drain(loop))
        return await future

    async def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            while self.pending:
                batch, self.pending = self.pending, []
                try:
                    results = await loop.run_in_executor(self.executor, self.fn,
                                                         [item for item, _ in batch])
                except Exception as exc:  # the batch as a whole failed: each request says so
                    results = [exc] * len(batch)
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():  # its request was cancelled (client gone)
                        continue
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self.draining = False
