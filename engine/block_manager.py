"""Paged KV blocks: a free list in LRU order, ref counts, and chained-hash prefix reuse."""

from __future__ import annotations

import hashlib
import struct
from collections import OrderedDict
from dataclasses import dataclass, field

from engine.sequence import Sequence


@dataclass(slots=True)
class Block:
    block_id: int
    ref_count: int = 0
    hash: bytes | None = None
    token_ids: list[int] = field(default_factory=list)


def block_hash(token_ids: list[int], prefix: bytes | None) -> bytes:
    """Hash of a full block chained to the hash of the block before it."""
    h = hashlib.blake2b(prefix or b"", digest_size=16)
    h.update(struct.pack(f"<{len(token_ids)}q", *token_ids))
    return h.digest()


class BlockManager:
    """Owns the block pool. Freed blocks keep their hash until reused, so they can still hit."""

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True):
        self.block_size = block_size
        self.blocks = [Block(i) for i in range(num_blocks)]
        # ref_count == 0 blocks, least recently freed first: allocation evicts from the front.
        self.free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
        self.hash_to_block: dict[bytes, int] = {}
        self.enable_prefix_caching = enable_prefix_caching
        self.prefix_queries = 0  # tokens looked up in the prefix cache
        self.prefix_hits = 0  # of which found

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_free(self) -> int:
        return len(self.free)

    def usage(self) -> float:
        """Fraction of blocks held by live sequences (0..1)."""
        return 1.0 - self.num_free / self.num_blocks

    def blocks_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def _take_free(self) -> int:
        block_id, _ = self.free.popitem(last=False)
        block = self.blocks[block_id]
        if block.hash is not None and self.hash_to_block.get(block.hash) == block_id:
            del self.hash_to_block[block.hash]  # evicted: its contents are about to change
        block.hash, block.token_ids, block.ref_count = None, [], 1
        return block_id

    def _cached_prefix(self, seq: Sequence) -> list[int]:
        """Block ids that already hold this sequence's leading full blocks (never its last token)."""
        # A prompt to be scored needs the logits of every position, so none may be skipped.
        if not self.enable_prefix_caching or seq.params.prompt_logprobs is not None:
            return []
        hits: list[int] = []
        prefix: bytes | None = None
        for i in range((len(seq) - 1) // self.block_size):
            tokens = seq.block(i, self.block_size)
            prefix = block_hash(tokens, prefix)
            block_id = self.hash_to_block.get(prefix)
            if block_id is None or self.blocks[block_id].token_ids != tokens:
                break
            hits.append(block_id)
        return hits

    def can_allocate(self, seq: Sequence) -> bool:
        hits = self._cached_prefix(seq)
        fresh = self.blocks_needed(len(seq)) - len(hits)
        revived = sum(1 for b in hits if self.blocks[b].ref_count == 0)
        return fresh + revived <= self.num_free

    def allocate(self, seq: Sequence) -> None:
        """Give SEQ blocks for all its tokens, reusing cached leading blocks."""
        assert not seq.block_table
        hits = self._cached_prefix(seq)
        for block_id in hits:
            block = self.blocks[block_id]
            if block.ref_count == 0:
                del self.free[block_id]
            block.ref_count += 1
        seq.block_table = hits + [self._take_free()
                                  for _ in range(self.blocks_needed(len(seq)) - len(hits))]
        seq.num_cached_tokens = seq.num_hashed_blocks = len(hits)
        seq.num_cached_tokens *= self.block_size
        seq.num_prefix_hit_tokens = seq.num_cached_tokens
        if self.enable_prefix_caching:
            self.prefix_queries += len(seq)
            self.prefix_hits += seq.num_cached_tokens

    def free_seq(self, seq: Sequence) -> None:
        """Release SEQ's blocks; the last holder puts a block back at the free list's end."""
        for block_id in reversed(seq.block_table):
            block = self.blocks[block_id]
            block.ref_count -= 1
            if block.ref_count == 0:
                self.free[block_id] = None
        seq.block_table = []
        seq.num_cached_tokens = seq.num_hashed_blocks = 0

    def can_append(self, seq: Sequence, num_tokens: int) -> bool:
        """Whether SEQ can grow to NUM_TOKENS tokens."""
        return self.blocks_needed(num_tokens) - len(seq.block_table) <= self.num_free

    def append(self, seq: Sequence, num_tokens: int) -> None:
        while len(seq.block_table) < self.blocks_needed(num_tokens):
            seq.block_table.append(self._take_free())

    def register_full_blocks(self, seq: Sequence) -> None:
        """Publish SEQ's full, computed blocks for reuse by later requests."""
        if not self.enable_prefix_caching:
            return
        n_full = seq.num_cached_tokens // self.block_size
        prefix = (self.blocks[seq.block_table[seq.num_hashed_blocks - 1]].hash
                  if seq.num_hashed_blocks else None)
        for i in range(seq.num_hashed_blocks, n_full):
            block = self.blocks[seq.block_table[i]]
            tokens = seq.block(i, self.block_size)
            prefix = block_hash(tokens, prefix)
            block.hash, block.token_ids = prefix, tokens
            self.hash_to_block.setdefault(prefix, block.block_id)
        seq.num_hashed_blocks = max(seq.num_hashed_blocks, n_full)

    def is_whole(self) -> bool:
        """No leaks: every block is free and unreferenced."""
        return self.num_free == self.num_blocks and all(b.ref_count == 0 for b in self.blocks)
