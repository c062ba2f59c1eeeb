"""What a reply carries beside the generated text (logprobs, the echoed prompt), and the engine's
logprobs in OpenAI's shapes: chat `choices[].logprobs.content[]`, completions
`choices[].logprobs` {tokens, token_logprobs, top_logprobs, text_offset}."""

from __future__ import annotations

from dataclasses import dataclass

from engine.logprobs import TokenLogprob


@dataclass(slots=True)
class Reply:
    """A request's asks beyond text, checked by the server before it is queued."""

    top: int | None = None  # top alternatives per generated token; None: no logprobs
    echo: bool = False  # completions: the prompt text (and its logprobs) comes first
    echo_text: str = ""
    echo_only: bool = False  # echo with max_tokens 0: one token is computed, none returned
    as_ids: bool = False  # tokens shown as "token_id:<id>" (vLLM's return_tokens_as_token_ids)

    @property
    def prompt_logprobs(self) -> int | None:
        """The top-N to score the prompt with: only an echo with logprobs scores it."""
        return self.top if self.echo else None


class TokenText:
    """Token id to the text a logprob entry shows (cached: the vocabulary never changes).

    One token decoded alone, as vLLM shows it: a token holding part of a UTF-8 character
    shows (and gives `bytes` of) U+FFFD.
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.cache: dict[int, str] = {}

    def __call__(self, token_id: int, as_id: bool = False) -> str:
        if as_id:
            return f"token_id:{token_id}"
        text = self.cache.get(token_id)
        if text is None:
            text = self.cache[token_id] = self.tokenizer.decode([token_id])
        return text


def chat_content(entries: list[TokenLogprob], text: TokenText, as_ids: bool) -> list[dict]:
    """OpenAI chat `logprobs.content`: one entry per token, its top_logprobs best first."""

    def one(token_id: int, logprob: float) -> dict:
        token = text(token_id, as_ids)
        shown = text(token_id)
        return {"token": token, "logprob": logprob, "bytes": list(shown.encode())}

    return [{**one(e.token_id, e.logprob), "top_logprobs": [one(i, v) for i, v in e.top]}
            for e in entries]


class CompletionLogprobs:
    """Completions `logprobs` blocks for one choice; `text_offset` runs on across stream chunks.

    As in vLLM, each `top_logprobs` dict holds the top N and the chosen token (so up to N + 1
    entries), and an echoed prompt's first token has null logprob and top_logprobs.
    """

    def __init__(self, text: TokenText, as_ids: bool):
        self.text, self.as_ids, self.offset = text, as_ids, 0

    def block(self, items: list[tuple[int, TokenLogprob | None]]) -> dict:
        """The block for (token id, its logprob or None) ITEMS, continuing the offsets."""
        tokens, logprobs, tops, offsets = [], [], [], []
        for token_id, entry in items:
            token = self.text(token_id, self.as_ids)
            tokens.append(token)
            offsets.append(self.offset)
            self.offset += len(self.text(token_id))
            if entry is None:
                logprobs.append(None)
                tops.append(None)
                continue
            top = {self.text(i, self.as_ids): v for i, v in entry.top}
            top.setdefault(token, entry.logprob)
            logprobs.append(entry.logprob)
            tops.append(top)
        return {"tokens": tokens, "token_logprobs": logprobs, "top_logprobs": tops,
                "text_offset": offsets}
