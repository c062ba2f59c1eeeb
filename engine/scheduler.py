"""Every step: running sequences first (decodes and prefill chunks), then waiting prefills,
under a token budget and a sequence cap. Out of blocks: preempt the newest, recompute later."""

from __future__ import annotations

import time
from collections import deque

from engine.block_manager import BlockManager
from engine.sequence import Sequence, SequenceStatus


class Scheduler:
    def __init__(self, block_manager: BlockManager, max_num_seqs: int,
                 max_num_batched_tokens: int):
        self.block_manager = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> list[tuple[Sequence, int]]:
        """Pick (sequence, number of new tokens to compute) pairs for one forward pass."""
        budget = self.max_num_batched_tokens
        batch: list[tuple[Sequence, int]] = []
        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            n = min(len(seq) - seq.num_cached_tokens, budget)
            if not self._make_room(seq, seq.num_cached_tokens + n):
                break  # seq itself was preempted (it was the newest)
            batch.append((seq, n))
            budget -= n
            i += 1
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            if not self.block_manager.can_allocate(seq):
                break
            self.block_manager.allocate(seq)
            n = min(len(seq) - seq.num_cached_tokens, budget)
            self.waiting.popleft()
            seq.status = SequenceStatus.RUNNING
            if seq.scheduled_time is None:
                seq.scheduled_time = time.monotonic()
            self.running.append(seq)
            batch.append((seq, n))
            budget -= n
        return batch

    def _make_room(self, seq: Sequence, num_tokens: int) -> bool:
        """Ensure SEQ has blocks for NUM_TOKENS, preempting newer sequences; False if SEQ went."""
        bm = self.block_manager
        while not bm.can_append(seq, num_tokens):
            victim = self.running[-1]
            self.preempt(victim)
            if victim is seq:
                return False
        bm.append(seq, num_tokens)
        return True

    def preempt(self, seq: Sequence) -> None:
        """Drop SEQ's KV (recompute later) and put it first in line."""
        self.running.remove(seq)
        self.block_manager.free_seq(seq)
        seq.status = SequenceStatus.WAITING
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(seq)

    def finish(self, seq: Sequence, reason: str) -> None:
        """Remove SEQ at once and free its blocks."""
        if seq.status is SequenceStatus.RUNNING:
            self.running.remove(seq)
            self.block_manager.free_seq(seq)
        elif seq.status is SequenceStatus.WAITING:
            self.waiting.remove(seq)
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason
