"""The server's request handling: read and check bodies, tokenize, build sampling settings,
submit to the engine core; generation itself is engine/serving_generate.py."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import Request
from pydantic import BaseModel, ValidationError

from engine.admission import Batcher
from engine.api_errors import APIError, bounded
from engine.async_engine import AsyncEngine, EngineDead
from engine.llm_engine import QueueFullError, RequestError
from engine.metrics import EngineMetrics
from engine.openai_logprobs import Reply, TokenText
from engine.protocol import (
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    SamplingFields,
    TokenizeRequest,
)
from engine.sequence import SamplingParams
from engine.serving_generate import Generation

# Far above any prompt a context window holds (1M tokens of text is ~4 MB), far below what
# would hurt the server: a 52 MB body once held it for 54 s and 7.5 GB.
MAX_BODY_BYTES = 16 << 20


def _message_text(m: ChatMessage) -> str:
    if isinstance(m.content, list):  # OpenAI content parts: only text is served
        kinds = sorted({p.type for p in m.content if p.type != "text"})
        if kinds:
            raise APIError(400, f"content parts of type {', '.join(kinds)} are not supported "
                                "(text only)", param="messages")
        return "".join(p.text or "" for p in m.content)
    return m.content or ""


def _longest_token_chars(tokenizer) -> int:
    """The most characters one token can stand for: every n-char text has >= n / this tokens."""
    vocab = tokenizer.get_vocab()
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    return max([len(t) for t in vocab] + [len(str(t)) for t in added.values()] + [1])


class Server(Generation):
    """Over a core transport: engine.core.ThreadCore or engine.core_process.ProcessCore."""

    def __init__(self, core, served_model_name: str, api_key: str | None = None,
                 max_body_bytes: int = MAX_BODY_BYTES, aliases: tuple[str, ...] = ()):
        self.facts = core.facts
        self.metrics = EngineMetrics(served_model_name)
        self.async_engine = AsyncEngine(core, self.metrics)
        self.served = served_model_name
        self.accepted = {served_model_name, *aliases}  # names a request may send as `model`
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes
        self.tokenizer = core.tokenizer
        self.token_text = TokenText(self.tokenizer)
        # A prompt longer than this many characters cannot fit the context, whatever it says.
        self.max_prompt_chars = self.facts.max_model_len * _longest_token_chars(self.tokenizer)
        # Parsing and tokenizing run here, never on the event loop (which must keep answering).
        self.workers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="servecat-tokenize")
        self.admit = Batcher(self.prepare, self.workers)  # requests waiting together, together

    # --- helpers ------------------------------------------------------------------------
    async def read_body(self, request: Request) -> bytes:
        """The request body, refused with 413 as soon as it passes max_body_bytes."""
        limit = self.max_body_bytes
        declared = request.headers.get("content-length", "")
        too_large = APIError(413, f"request body is larger than {limit} bytes",
                             "RequestTooLargeError", code="request_too_large")
        if declared.isdigit() and int(declared) > limit:
            raise too_large
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
        return b"".join(chunks)

    def validate(self, raw: bytes, model: type[BaseModel]) -> Any:
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise APIError(400, f"request body is not valid JSON: {exc}") from exc
        try:
            req = model.model_validate(body)
        except ValidationError as exc:
            # In a union, the deepest error names the field that was wrong.
            err = max(exc.errors(), key=lambda e: len(e["loc"]))
            loc = ".".join(str(x) for x in err["loc"])
            raise APIError(400, f"{loc}: {err['msg']}", param=loc or None) from exc
        if getattr(req, "model", None) not in (None, *self.accepted):
            raise APIError(404, f"The model `{req.model}` does not exist; this server serves "
                                f"`{self.served}`.", "NotFoundError", "model", "model_not_found")
        return req

    async def off_loop(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.workers, fn, *args)

    def check_chars(self, n: int, param: str) -> None:
        """Refuse a text that cannot fit the context before paying to tokenize it."""
        if n > self.max_prompt_chars:
            raise APIError(400, f"This model's maximum context length is "
                                f"{self.facts.max_model_len} tokens; a text of {n} characters "
                                f"is longer than that", param=param,
                           code="context_length_exceeded")

    def reply(self, req: SamplingFields, chat: bool, prompt_ids: list[int]) -> Reply:
        """What the reply carries beside text: logprobs (at most MAX_LOGPROBS), the echo."""
        as_ids = req.return_tokens_as_token_ids
        if chat:
            if req.top_logprobs is not None and not req.logprobs:
                raise APIError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
            top = bounded(req.top_logprobs or 0, "top_logprobs") if req.logprobs else None
            return Reply(top, as_ids=as_ids)
        top = None if req.logprobs is None else bounded(req.logprobs, "logprobs")
        if not req.echo:
            return Reply(top, as_ids=as_ids)
        prompt = req.prompt[0] if isinstance(req.prompt, list) and len(req.prompt) == 1 \
            and isinstance(req.prompt[0], str | list) else req.prompt
        text = prompt if isinstance(prompt, str) else self.tokenizer.decode(prompt_ids)
        return Reply(top, True, text, req.max_tokens == 0, as_ids)

    def params(self, req: SamplingFields, prompt_len: int, default_max: int | None,
               reply: Reply) -> SamplingParams:
        max_tokens = getattr(req, "max_completion_tokens", None) or req.max_tokens
        if max_tokens == 0:
            if not reply.echo_only:
                raise APIError(400, "max_tokens must be at least 1 (0 only with echo: true)",
                               param="max_tokens")
            # As vLLM: the step that scores the prompt also makes a token; it is not returned.
            max_tokens = 1
        if max_tokens is None:
            max_tokens = default_max or max(1, self.facts.max_model_len - prompt_len)
        stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        if any(not s for s in stop):
            raise APIError(400, "stop strings must not be empty", param="stop")
        return SamplingParams(
            temperature=req.temperature, top_k=max(req.top_k, 0), top_p=req.top_p, seed=req.seed,
            max_tokens=max_tokens, stop=stop, stop_token_ids=list(req.stop_token_ids or []),
            ignore_eos=req.ignore_eos, logprobs=reply.top, prompt_logprobs=reply.prompt_logprobs)

    def prompt_source(self, prompt: Any) -> str | list[int]:
        """The prompt's text (to tokenize) or its token ids (checked)."""
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
            prompt = prompt[0]  # a batch of one
        if isinstance(prompt, str):
            self.check_chars(len(prompt), "prompt")
            return prompt
        if isinstance(prompt, list) and all(isinstance(t, int) for t in prompt):
            vocab = self.facts.vocab_size
            if any(not 0 <= t < vocab for t in prompt):
                raise APIError(400, f"prompt token ids must be in [0, {vocab})", param="prompt")
            return list(prompt)
        raise APIError(400, "prompt must be a string, a list of token ids, or a batch of one "
                            "(several prompts per request are not supported)", param="prompt")

    def encode_chat(self, messages: list[ChatMessage]) -> list[int]:
        return self.tokenizer(self.chat_text(messages), add_special_tokens=False).input_ids

    def chat_text(self, messages: list[ChatMessage]) -> str:
        """The messages through the model's chat template (tokenized without special tokens)."""
        if self.tokenizer.chat_template is None:
            raise APIError(400, "this model's tokenizer has no chat template; "
                                "use /v1/completions", param="messages")
        turns = [{"role": m.role, "content": _message_text(m)} for m in messages]
        self.check_chars(sum(len(t["content"]) for t in turns), "messages")
        try:
            text = self.tokenizer.apply_chat_template(turns, add_generation_prompt=True,
                                                      tokenize=False)
        except Exception as exc:  # the model's own template refused these messages (jinja)
            raise APIError(400, f"messages: the chat template refused them: {exc}",
                           param="messages") from exc
        return text

    def submit(self, prompt_ids: list[int], params: SamplingParams, arrival: float):
        try:
            return self.async_engine.submit(prompt_ids, params, arrival)
        except RequestError as exc:
            raise APIError(400, str(exc), param="prompt", code="context_length_exceeded"
                           if "context length" in str(exc) else None) from exc
        except QueueFullError as exc:
            raise APIError(429, str(exc), "RateLimitError", code="too_many_requests") from exc
        except EngineDead as exc:
            raise APIError(503, str(exc), "ServiceUnavailableError") from exc

    def prepare(self, items: list[tuple[bytes, bool]]) -> list[tuple | Exception]:
        """Bodies (raw, chat) to (request, prompt ids, sampling params, reply asks), or the
        error of each; on a worker thread. The texts are tokenized in one call per kind."""
        staged: list[Any] = []
        for raw, chat in items:
            try:
                req = self.validate(raw, ChatCompletionRequest if chat else CompletionRequest)
                source = self.chat_text(req.messages) if chat else self.prompt_source(req.prompt)
                staged.append([req, chat, source])
            except Exception as exc:  # this request's fault (or a bug): it alone fails
                staged.append(exc)
        for chat in (False, True):  # a prompt gets the tokenizer's special tokens, a chat not
            texts = [s for s in staged if isinstance(s, list) and s[1] == chat
                     and isinstance(s[2], str)]
            if texts:
                ids = self.tokenizer([s[2] for s in texts], add_special_tokens=not chat).input_ids
                for s, one in zip(texts, ids, strict=True):
                    s[2] = one
        out: list[tuple | Exception] = []
        for s in staged:
            if isinstance(s, Exception):
                out.append(s)
                continue
            req, chat, prompt_ids = s
            try:
                reply = self.reply(req, chat, prompt_ids)
                out.append((req, prompt_ids, self.params(req, len(prompt_ids),
                                                         None if chat else 16, reply), reply))
            except Exception as exc:
                out.append(exc)
        return out

    def tokenize(self, raw: bytes) -> dict:
        req = self.validate(raw, TokenizeRequest)
        if (req.prompt is None) == (req.messages is None):
            raise APIError(400, "give exactly one of prompt or messages", param="prompt")
        if req.messages is not None:
            ids = self.encode_chat(req.messages)
        else:
            self.check_chars(len(req.prompt), "prompt")
            ids = self.tokenizer(req.prompt, add_special_tokens=req.add_special_tokens).input_ids
        return {"tokens": ids, "count": len(ids), "max_model_len": self.facts.max_model_len}
