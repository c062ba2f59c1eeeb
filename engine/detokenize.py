"""Incremental detokenization with stop strings, shared by the engine (offline `generate`) and
the server's front (which detokenizes what the engine core sends).

The state is anything with `text`, `prefix_offset` and `read_offset` (a Sequence, or the
front's per-request state): two decodes of a short window per token, never the whole output.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

Decode = Callable[..., str]


class DetokState(Protocol):
    text: str
    prefix_offset: int
    read_offset: int


def fast_decode(tokenizer) -> Decode:
    """The Rust tokenizer's decode when there is one (no Python per id), else the tokenizer's."""
    backend = getattr(tokenizer, "_tokenizer", None)
    if backend is not None:
        return backend.decode
    return lambda ids, skip_special_tokens: tokenizer.decode(
        ids, skip_special_tokens=skip_special_tokens)


def detokenize(decode: Decode, state: DetokState, out_ids: list[int], stops: list[str],
               final: bool = False) -> bool:
    """Extend state.text with OUT_IDS' newest token; True if a stop string ended the output.

    Text ending in an incomplete UTF-8 sequence (U+FFFD) waits for the next token, unless
    FINAL: the last token of a request flushes everything, so the text is the whole decode.
    """
    prefix = decode(out_ids[state.prefix_offset:state.read_offset], skip_special_tokens=True)
    full = decode(out_ids[state.prefix_offset:], skip_special_tokens=True)
    if len(full) <= len(prefix) or (full.endswith("\ufffd") and not final):
        return False  # nothing new, or an incomplete UTF-8 sequence: wait for more tokens
    delta = full[len(prefix):]
    state.prefix_offset, state.read_offset = state.read_offset, len(out_ids)
    start = max(0, len(state.text) - max((len(s) for s in stops), default=0))
    state.text += delta
    for stop in stops:
        i = state.text.find(stop, start)
        if i != -1:
            state.text = state.text[:i]
            return True
    return False


def visible(text: str, stops: list[str], finished: bool) -> str:
    """Output text safe to show: while running, hold back what could begin a stop string."""
    if finished or not stops:
        return text
    hold = max(len(s) for s in stops) - 1
    return text[:len(text) - hold] if hold else text
