"""The server's errors in OpenAI's shape: {"error": {message, type, param, code}}."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from engine.logprobs import MAX_LOGPROBS


class APIError(Exception):
    def __init__(self, status: int, message: str, type_: str = "BadRequestError",
                 param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = (
            status, message, type_, param, code)


def error_response(status: int, message: str, type_: str, param: str | None = None,
                   code: str | int | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": type_, "param": param,
                      "code": code if code is not None else status}}
    return JSONResponse(body, status_code=status)


def error_type(status: int) -> str:
    return {400: "BadRequestError", 429: "RateLimitError",
            503: "ServiceUnavailableError"}.get(status, "InternalServerError")


def bounded(n: int, name: str) -> int:
    if not 0 <= n <= MAX_LOGPROBS:
        raise APIError(400, f"{name} must be an integer in [0, {MAX_LOGPROBS}], got {n}",
                       param=name)
    return n
