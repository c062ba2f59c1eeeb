"""Errors the load generator raises, and the error types a failed request is labelled with."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.loadgen import WorkloadResult

# error_type values of a failed request (REQUEST_SCHEMA.error_type).
CONNECTION_REFUSED = "connection_refused"
CONNECTION_ERROR = "connection_error"
CONNECT_TIMEOUT = "connect_timeout"
TIMEOUT_FIRST_BYTE = "timeout_first_byte"  # no content chunk within the read timeout
TIMEOUT_READ = "timeout_read"  # the stream stalled after content had started
TIMEOUT_TOTAL = "timeout_total"  # the whole request ran past the total timeout
HTTP_4XX = "http_4xx"
HTTP_5XX = "http_5xx"
RATE_LIMITED = "rate_limited"  # HTTP 429
STREAM_CUT = "stream_cut"  # the stream ended before `data: [DONE]`
MALFORMED_SSE = "malformed_sse"  # an SSE `data:` payload that is not valid JSON
EMPTY_STREAM = "empty_stream"  # HTTP 200 but not one content chunk
SERVER_ERROR_EVENT = "server_error_event"  # an `{"error": ...}` event inside the stream
CLIENT_ERROR = "client_error"  # anything else raised on our side

ERROR_TYPES: tuple[str, ...] = (
    CONNECTION_REFUSED, CONNECTION_ERROR, CONNECT_TIMEOUT, TIMEOUT_FIRST_BYTE, TIMEOUT_READ,
    TIMEOUT_TOTAL, HTTP_4XX, HTTP_5XX, RATE_LIMITED, STREAM_CUT, MALFORMED_SSE, EMPTY_STREAM,
    SERVER_ERROR_EVENT, CLIENT_ERROR,
)


class BenchError(Exception):
    """Base class of bench errors."""


class WorkloadError(BenchError, ValueError):
    """A workload, endpoint or dataset definition that cannot run (says which field and why)."""


class EndpointBroken(BenchError):
    """The early-stop error threshold tripped; `.result` holds what was measured until then."""

    def __init__(self, message: str, result: WorkloadResult | Any = None):
        super().__init__(message)
        self.result = result
