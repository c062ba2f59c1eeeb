"""An OpenAI-compatible endpoint to benchmark."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass
class Endpoint:
    """Where to send requests: `base_url` like `http://127.0.0.1:8000/v1` and a model name.

    The `Authorization` header comes from the environment variable `api_key_env` when it is
    set; it is added only when the request is sent and never appears in repr or logs.
    `extra_body` is merged into every request body (e.g. vLLM's `{"ignore_eos": true}`).
    Timeouts: `connect_timeout_s` to open a connection, `read_timeout_s` for the first byte and
    between bytes, `total_timeout_s` for the whole request.
    """

    base_url: str
    model: str
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0
    total_timeout_s: float = 600.0
    api_key_env: str | None = "OPENAI_API_KEY"
    extra_body: dict[str, object] = field(default_factory=dict)

    def url(self, api: str) -> str:
        """The full URL of the `completions` or `chat` API."""
        path = "chat/completions" if api == "chat" else "completions"
        return f"{self.base_url.rstrip('/')}/{path}"

    def request_headers(self) -> dict[str, str]:
        """Headers for every request, with the API key from the environment when set."""
        headers = {"Content-Type": "application/json", **self.headers}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key and "authorization" not in {k.lower() for k in headers}:
            headers["Authorization"] = f"Bearer {key}"
        return headers
