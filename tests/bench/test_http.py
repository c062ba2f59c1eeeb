"""bench.http against raw sockets that send exactly the bytes each test scripts: framing (chunked,
Content-Length, close-delimited), keep-alive, cut and malformed responses, and read times."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from bench.http import HTTPFailure, Pool, Response, Target

# A step of a scripted answer: bytes to send, a pause in seconds, or CLOSE.
CLOSE = "close"


class RawServer:
    """Accepts connections on a free 127.0.0.1 port; answers the n-th request (over all
    connections) with scripts[n], and logs when each piece was sent (perf_counter)."""

    def __init__(self, scripts: list[list[bytes | float | str]]):
        self.scripts = scripts
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1/completions"
        self.connections = 0
        self.requests = 0
        self.sent: list[float] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        with conn:
            while self.requests < len(self.scripts):
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = int(next(ln.split(b":")[1] for ln in head.split(b"\r\n")
                                  if ln.lower().startswith(b"content-length")))
                while len(buf) < length:
                    buf += conn.recv(65536)
                buf = buf[length:]
                script = self.scripts[self.requests]
                self.requests += 1
                for step in script:
                    if step == CLOSE:
                        conn.shutdown(socket.SHUT_RDWR)
                        return
                    if isinstance(step, float):
                        time.sleep(step)
                    else:
                        self.sent.append(time.perf_counter())
                        conn.sendall(step)

    def close(self) -> None:
        self.sock.close()


@contextlib.contextmanager
def raw_server(*scripts: list) -> Iterator[RawServer]:
    server = RawServer(list(scripts))
    try:
        yield server
    finally:
        server.close()


def _request(url: str, body: bytes = b'{"prompt": "x"}') -> bytes:
    t = Target.parse(url)
    return t.request_head(t.path, {"Content-Type": "application/json"}, len(body)) + body


async def _send(pool: Pool, url: str) -> Response:
    resp = Response([])
    # The guard against a hang: every scripted answer ends well within it.
    await asyncio.wait_for(pool.request(_request(url), resp), 10)
    return resp


def _run(server: RawServer, n: int = 1, read_timeout_s: float = 30.0) -> list[Response]:
    async def main() -> list[Response]:
        pool = Pool(server.url, 5.0, read_timeout_s)
        try:
            return [await _send(pool, server.url) for _ in range(n)]
        finally:
            pool.close()

    return asyncio.run(main())


def _failure(server: RawServer) -> HTTPFailure:
    with pytest.raises(HTTPFailure) as info:
        _run(server)
    return info.value


def _body(resp: Response) -> bytes:
    return b"".join(d for _, d in resp.reads)


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def test_chunked_body_pieces_carry_their_arrival_times():
    with raw_server([CHUNKED_HEAD + _chunk(b"data: 1\n\n"), 0.05, _chunk(b"data: 2\n\n"),
                     0.05, _chunk(b"data: 3\n\n") + b"0\r\n\r\n"]) as server:
        (resp,) = _run(server)
    assert resp.status == 200 and resp.headers["content-type"] == "text/event-stream"
    assert _body(resp) == b"data: 1\n\ndata: 2\n\ndata: 3\n\n"
    times = [t for t, _ in resp.reads]
    # Each piece is stamped when its bytes arrived, after the server sent them, not at the end.
    assert len(times) == 3 and all(t >= s for t, s in zip(times, server.sent, strict=True))
    assert times[1] < server.sent[2] and times[0] < server.sent[1]


def test_chunk_split_across_reads_and_chunk_extensions():
    body = b"data: " + b"x" * 100 + b"\n\n"
    wire = CHUNKED_HEAD + b"%x;ext=1\r\n" % len(body) + body + b"\r\n0\r\nTrailer: y\r\n\r\n"
    with raw_server([wire[:70], 0.02, wire[70:130], 0.02, wire[130:]]) as server:
        (resp,) = _run(server)
    assert _body(resp) == body


def test_content_length_body():
    with raw_server([b"HTTP/1.1 400 Bad Request\r\nContent-Length: 11\r\n\r\nbad", 0.02,
                     b" request"]) as server:
        (resp,) = _run(server)
    assert resp.status == 400 and _body(resp) == b"bad request" and resp.keep_alive


def test_keep_alive_reuses_one_connection():
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    with raw_server([ok], [CHUNKED_HEAD + _chunk(b"hi") + b"0\r\n\r\n"], [ok]) as server:
        responses = _run(server, 3)
    assert [_body(r) for r in responses] == [b"ok", b"hi", b"ok"]
    assert server.connections == 1


def test_connection_close_is_not_reused():
    close = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    with raw_server([close], [close]) as server:
        responses = _run(server, 2)
    assert [r.keep_alive for r in responses] == [False, False] and server.connections == 2


def test_close_delimited_body_ends_at_eof():
    with raw_server([b"HTTP/1.1 200 OK\r\n\r\npart one", 0.02, b", part two", CLOSE]) as server:
        (resp,) = _run(server)
    assert _body(resp) == b"part one, part two" and not resp.keep_alive


def test_interim_response_is_skipped():
    with raw_server([b"HTTP/1.1 100 Continue\r\n\r\n", 0.01,
                     b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"]) as server:
        (resp,) = _run(server)
    assert resp.status == 200 and _body(resp) == b"ok"


@pytest.mark.parametrize("script", [
    [CHUNKED_HEAD + _chunk(b"data: 1\n\n"), 0.02, CLOSE],
    [CHUNKED_HEAD + b"40\r\nonly part of the chunk", CLOSE],
    [b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", CLOSE],
], ids=["between-chunks", "inside-a-chunk", "content-length"])
def test_close_mid_body_is_a_stream_cut(script):
    with raw_server(script) as server:
        exc = _failure(server)
    assert exc.kind == "stream_cut" and "middle of the response body" in str(exc)


@pytest.mark.parametrize("script", [[CLOSE], [b"HTTP/1.1 200 O", CLOSE]],
                         ids=["nothing", "half-a-status-line"])
def test_close_before_the_head_is_a_connection_error(script):
    with raw_server(script) as server:
        exc = _failure(server)
    assert exc.kind == "connection_error" and "without a response" in str(exc)


@pytest.mark.parametrize("wire", [
    b"HTTP/1.1 abc OK\r\n\r\n",
    b"SMTP ready\r\n\r\n",
    CHUNKED_HEAD + b"zz\r\nhello\r\n",
    CHUNKED_HEAD + b"5\r\nhelloXX0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nbad header line\r\n\r\n",
], ids=["status", "not-http", "chunk-size", "chunk-end", "content-length", "header"])
def test_malformed_response_is_one_clear_failure(wire):
    # The server keeps the connection open: the failure must come from parsing, not a timeout.
    with raw_server([wire, 30.0]) as server:
        exc = _failure(server)
    assert exc.kind == "connection_error" and str(exc).startswith("invalid HTTP response")


def test_silence_is_a_read_timeout():
    with raw_server([CHUNKED_HEAD, 5.0]) as server, pytest.raises(HTTPFailure) as info:
        _run(server, read_timeout_s=0.2)
    assert info.value.kind == "timeout_first_byte"


def test_refused_connection():
    port = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{port.getsockname()[1]}/v1"
    port.close()

    async def main() -> None:
        await Pool(url, 5.0, 5.0).request(_request(url), Response([]))

    with pytest.raises(HTTPFailure) as info:
        asyncio.run(main())
    assert info.value.kind == "connection_refused"
