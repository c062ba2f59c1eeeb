"""A lean HTTP/1.1 client on asyncio protocols, built for measuring.

Why not httpx: its Python between "send" and the request reaching the server, and between a
chunk's arrival and the caller seeing it, lands in every TTFT (`servecat perf loadgen` measures
both clients against a scripted server and prints the difference). Here a request is one
pre-built `write`, and each network read is stamped with `perf_counter()` in `data_received`,
before any parsing or coroutine switch. The HTTP is httptools' (llhttp, in C), fed the bytes
after they were stamped: framing, chunks, keep-alive. Not h11: pure Python, it took 427 µs of
CPU per streamed 8-token response against httptools' 16 (and the former hand parser's 44), on
the event loop that also dispatches requests. Keep-alive connections are pooled; TLS comes from
asyncio. One request per connection at a time, Content-Length request bodies.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools


class HTTPFailure(Exception):
    """A transport-level failure; `kind` is an error type of bench.errors."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Target:
    """Where requests go: scheme, host, port and the path prefix of a URL."""

    scheme: str
    host: str
    port: int
    path: str

    @classmethod
    def parse(cls, url: str) -> Target:
        u = urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"{url!r}: expected an http:// or https:// URL")
        port = u.port or (443 if u.scheme == "https" else 80)
        return cls(u.scheme, u.hostname, port, u.path or "/")

    def request_head(self, path: str, headers: dict[str, str], body_len: int) -> bytes:
        host = self.host if self.port in (80, 443) else f"{self.host}:{self.port}"
        lines = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {body_len}",
                 "Accept: text/event-stream", "User-Agent: servecat-bench"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class Response:
    """One response: status, headers, and the body as (arrival time, bytes) reads."""

    __slots__ = ("status", "headers", "reads", "done", "keep_alive")

    def __init__(self, reads: list[tuple[float, bytes]]):
        self.status = 0
        self.headers: dict[str, str] = {}
        self.reads = reads
        self.done: asyncio.Future[None] | None = None
        self.keep_alive = True


class _Connection(asyncio.Protocol):
    """One keep-alive connection: httptools (llhttp) parses the responses, this class stamps
    their arrival."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.resp: Response | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.last_read = 0.0
        self.head_done = False  # the current response's head has been parsed
        self.t = 0.0  # when the bytes being parsed arrived

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def start(self, resp: Response, data: bytes) -> None:
        self.resp, self.head_done = resp, False
        self.last_read = time.perf_counter()
        self.transport.write(data)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        t = time.perf_counter()  # before any parsing: the time these bytes arrived
        self.last_read = t
        if self.resp is None:  # bytes nobody asked for: the connection is out of step
            self._close()
            return
        self.t = t
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._close()
            self._finish(HTTPFailure("connection_error", f"invalid HTTP response: {exc}"))

    # httptools callbacks, called inside feed_data.
    def on_message_begin(self) -> None:
        if self.resp is not None:
            self.resp.headers = {}

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.resp is not None:
            self.resp.headers[name.decode("latin-1").lower()] = value.decode("latin-1").strip()

    def on_headers_complete(self) -> None:
        if self.resp is not None:
            self.resp.status = self.parser.get_status_code()
            self.head_done = True

    def on_body(self, body: bytes) -> None:
        if self.resp is not None:
            self.resp.reads.append((self.t, body))

    def on_message_complete(self) -> None:
        resp = self.resp
        if resp is None or 100 <= resp.status < 200:  # an interim 1xx: the real one follows
            self.head_done = False
            return
        resp.keep_alive = self.parser.should_keep_alive()
        self._finish(None)

    def _close(self) -> None:
        self.closed = True
        self.transport.close()  # type: ignore[union-attr]

    def _finish(self, error: BaseException | None) -> None:
        resp, self.resp = self.resp, None
        if resp is not None and resp.done is not None and not resp.done.done():
            if error is None:
                resp.done.set_result(None)
            else:
                resp.done.set_exception(error)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        resp = self.resp
        if resp is None:
            return
        h = resp.headers
        if self.head_done and "content-length" not in h and "transfer-encoding" not in h:
            resp.keep_alive = False  # a close-delimited body: EOF is its end
            self._finish(None)
        elif not self.head_done:
            self._finish(HTTPFailure("connection_error", "the server closed the connection "
                                     f"without a response ({exc or 'EOF'})"))
        else:
            self._finish(HTTPFailure("stream_cut", "the connection closed in the middle of the "
                                     f"response body ({exc or 'EOF'})"))


class Pool:
    """Keep-alive connections to one host; as many as requests in flight, reused when idle."""

    def __init__(self, url: str, connect_timeout_s: float, read_timeout_s: float):
        self.target = Target.parse(url)
        self.connect_timeout_s, self.read_timeout_s = connect_timeout_s, read_timeout_s
        self.idle: list[_Connection] = []
        self.ssl = ssl.create_default_context() if self.target.scheme == "https" else None

    async def _connect(self) -> _Connection:
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed:
                return conn
        loop = asyncio.get_running_loop()
        t = self.target
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(_Connection, t.host, t.port, ssl=self.ssl),
                self.connect_timeout_s)
        except TimeoutError:
            raise HTTPFailure("connect_timeout",
                              f"no connection to {t.host}:{t.port} in {self.connect_timeout_s:g} s") from None
        except ConnectionRefusedError as exc:
            raise HTTPFailure("connection_refused", f"{t.host}:{t.port}: {exc}") from None
        except OSError as exc:
            raise HTTPFailure("connection_error", f"{t.host}:{t.port}: {exc}") from None
        return conn

    async def request(self, data: bytes, resp: Response) -> None:
        """Send one pre-built request (head + body); returns when the response has ended."""
        conn = await self._connect()
        loop = asyncio.get_running_loop()
        resp.done = loop.create_future()
        conn.start(resp, data)
        watchdog = loop.call_at(loop.time() + self.read_timeout_s, self._check, conn, resp)
        try:
            await resp.done
        except BaseException:
            conn.resp = None
            if conn.transport is not None:
                conn.transport.abort()
            raise
        finally:
            watchdog.cancel()
        if resp.keep_alive and not conn.closed:
            self.idle.append(conn)
        elif conn.transport is not None:
            conn.transport.close()

    def _check(self, conn: _Connection, resp: Response) -> None:
        """Read timeout: fail the response when nothing arrived for read_timeout_s."""
        if resp.done is None or resp.done.done():
            return
        quiet = time.perf_counter() - conn.last_read
        loop = asyncio.get_running_loop()
        if quiet < self.read_timeout_s:
            loop.call_at(loop.time() + self.read_timeout_s - quiet, self._check, conn, resp)
            return
        kind = "timeout_read" if resp.reads else "timeout_first_byte"
        resp.done.set_exception(HTTPFailure(kind, f"nothing received for {self.read_timeout_s:g} s"))

    def close(self) -> None:
        for conn in self.idle:
            if conn.transport is not None:
                conn.transport.close()
        self.idle.clear()
