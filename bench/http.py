"""A lean HTTP/1.1 client on asyncio protocols, built for measuring.

Why not httpx: on this 2-core host httpx spends ~1.2 ms (median) of Python between "send"
and the request reaching the server, and again per response; that lands in every TTFT. Here a
request is one pre-built `write`, and each network read is stamped with `perf_counter()` in
`data_received`, before any parsing or coroutine switch. Keep-alive connections are pooled;
TLS comes from asyncio. Only what an OpenAI-compatible streaming API needs: one request per
connection at a time, Content-Length request bodies, chunked / Content-Length /
close-delimited responses.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit


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
    """One keep-alive connection with an incremental HTTP/1.1 response parser."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.resp: Response | None = None
        self.buf = b""
        self.state = "idle"  # head | chunk_size | chunk_data | chunk_end | trailer | length | close
        self.remaining = 0
        self.last_read = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def start(self, resp: Response, data: bytes) -> None:
        self.resp, self.buf, self.state = resp, b"", "head"
        self.last_read = time.perf_counter()
        self.transport.write(data)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        t = time.perf_counter()
        self.last_read = t
        if self.resp is None:
            return
        try:
            self._feed(t, self.buf + data if self.buf else data)
        except (ValueError, IndexError) as exc:
            self._finish(HTTPFailure("connection_error", f"invalid HTTP response: {exc}"))
            self.transport.close()  # type: ignore[union-attr]

    def _feed(self, t: float, data: bytes) -> None:
        resp = self.resp
        self.buf = b""
        while data and self.resp is not None:
            st = self.state
            if st == "head":
                end = data.find(b"\r\n\r\n")
                if end < 0:
                    self.buf = data
                    return
                self._head(data[:end].decode("latin-1"))
                data = data[end + 4:]
            elif st == "chunk_size":
                end = data.find(b"\r\n")
                if end < 0:
                    self.buf = data
                    return
                self.remaining = int(data[:end].split(b";")[0], 16)
                data = data[end + 2:]
                self.state = "chunk_data" if self.remaining else "trailer"
            elif st in ("chunk_data", "length"):
                piece, data = data[:self.remaining], data[self.remaining:]
                resp.reads.append((t, piece))
                self.remaining -= len(piece)
                if not self.remaining:
                    if st == "length":
                        self._finish(None)
                    else:
                        self.state = "chunk_end"
            elif st == "chunk_end":
                if len(data) < 2:
                    self.buf = data
                    return
                data = data[2:]
                self.state = "chunk_size"
            elif st == "trailer":
                end = data.find(b"\r\n")
                if end < 0:
                    self.buf = data
                    return
                data = data[end + 2:]
                if end == 0:
                    self._finish(None)
            else:  # close-delimited body
                resp.reads.append((t, data))
                return

    def _head(self, head: str) -> None:
        lines = head.split("\r\n")
        version, status = lines[0].split(" ", 2)[:2]
        resp = self.resp
        resp.status = int(status)
        resp.headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        conn = resp.headers.get("connection", "").lower()
        resp.keep_alive = conn != "close" and (version == "HTTP/1.1" or conn == "keep-alive")
        if 100 <= resp.status < 200:  # an interim response: the real one follows
            self.state = "head"
        elif "chunked" in resp.headers.get("transfer-encoding", "").lower():
            self.state = "chunk_size"
        elif "content-length" in resp.headers:
            self.remaining = int(resp.headers["content-length"])
            self.state = "length"
            if not self.remaining:
                self._finish(None)
        else:
            self.state, resp.keep_alive = "close", False

    def _finish(self, error: BaseException | None) -> None:
        resp, self.resp, self.state = self.resp, None, "idle"
        if resp is not None and resp.done is not None and not resp.done.done():
            if error is None:
                resp.done.set_result(None)
            else:
                resp.done.set_exception(error)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.resp is None:
            return
        if self.state == "close":
            self._finish(None)
        elif self.state == "head" and not self.resp.status:
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
