"""An OpenAI-compatible SSE server with scripted timing, to check the load generator against.

Each request's script (TTFT, inter-chunk gaps, tokens per chunk, failure mode) is a pure
function of the scenario and the request's `X-Request-Id`, so a test recomputes exactly what
the server was told to do. One epoll loop with precise sleeps keeps emission times within ~0.1 ms.
Run it in its own process:
`python -m bench.scripted_server --scenario '{"ttft_ms": [20, 40]}'` prints `PORT <n>`.
Zero delays make it the fast local server that `servecat perf loadgen` measures the client with.

Queueing mode (`slots: C`): a server whose capacity is known. Each request holds one of C slots
for its service time (its TTFT + gaps) and requests beyond C wait for a slot first come, first
served; the whole script, TTFT included, runs from when the slot is taken, so the wait shows
in the TTFT. Closed loop at concurrency N: nobody waits up to N = C, and past it requests wait
about a service time. Poisson arrivals with fixed timings: an M/D/C queue (bench.queueing
computes its waits on its own).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import heapq
import json
import random
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.priority import set_realtime

_SO_TIMESTAMPNS = 35  # Linux; the socket module does not export it
FAULTS = ("http_400", "http_429", "http_500", "hang", "stall", "cut", "malformed", "empty",
          "error_event", "close")


@dataclass
class Scenario:
    """What the server does: ranges are [low, high] and drawn uniformly per request."""

    ttft_ms: tuple[float, float] = (0.0, 0.0)
    gap_ms: tuple[float, float] = (0.0, 0.0)
    tokens_per_chunk: int = 1
    usage: bool = True  # send usage when the request asks for it
    seed: int = 0
    fault: str | None = None  # for every request
    faults: dict[str, str] = field(default_factory=dict)  # request id -> fault
    token_text: str = " a"  # the text of one token
    slots: int | None = None  # queueing mode: C requests served at once, the rest wait (FIFO)


@dataclass
class Script:
    """One request's scripted behaviour; chunk i goes out at ttft + sum(gaps[:i]) after arrival."""

    ttft_ms: float
    gaps_ms: list[float]
    tokens: list[int]  # tokens in each chunk
    fault: str | None

    @property
    def output_tokens(self) -> int:
        return sum(self.tokens)

    @property
    def e2e_ms(self) -> float:
        return self.ttft_ms + sum(self.gaps_ms)

    @property
    def tpot_ms(self) -> float | None:
        n = self.output_tokens
        return sum(self.gaps_ms) / (n - 1) if n > 1 else None


def script_for(scenario: Scenario, request_id: str, max_tokens: int) -> Script:
    """The script of the request with this id: deterministic in (scenario, id, max_tokens)."""
    rng = random.Random(f"{scenario.seed}:{request_id}")
    k = max(scenario.tokens_per_chunk, 1)
    tokens = [k] * (max_tokens // k) + ([max_tokens % k] if max_tokens % k else [])
    ttft = rng.uniform(*scenario.ttft_ms)
    gaps = [rng.uniform(*scenario.gap_ms) for _ in tokens[1:]]
    return Script(ttft, gaps, tokens, scenario.faults.get(request_id, scenario.fault))


class ScriptedServer:
    """A single-threaded HTTP/1.1 server speaking just enough of the OpenAI API.

    One epoll loop reads requests and sends every scheduled chunk (epoll rounds its timeout up to
    whole milliseconds, so the loop wakes early and sleeps out the rest); one thread means no
    waiting for the GIL when a burst of requests lands. A request's script runs from the
    moment `select` reported its bytes, so parsing a burst does not delay the scripted times.
    """

    def __init__(self, scenario: Scenario, host: str = "127.0.0.1", port: int = 0):
        self.scenario = scenario
        self.sock = socket.create_server((host, port), backlog=4096)
        self.port = self.sock.getsockname()[1]
        self.bufs: dict[socket.socket, bytes] = {}
        # A heap of (due, seq, socket, bytes, then, (request id, chunk index) | None).
        self.due: list[tuple] = []
        self.seq = 0
        # (request id, chunk index, due, sent): what the server really did, on the same clock.
        self.sent_log: list[tuple[str, int, float, float]] = []
        # Queueing mode: when each of the C slots is next free (a heap; 0 is long past).
        self.free: list[float] = [0.0] * (scenario.slots or 0)

    def serve_forever(self) -> None:
        ep = select.epoll()
        ep.register(self.sock.fileno(), select.EPOLLIN)
        by_fd: dict[int, socket.socket] = {}
        while True:
            for fd, _ in ep.poll(self._timeout()):
                arrived = time.perf_counter()
                if fd == self.sock.fileno():
                    conn, _ = self.sock.accept()
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    with contextlib.suppress(OSError):
                        conn.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
                    self.bufs[conn] = b""
                    by_fd[conn.fileno()] = conn
                    ep.register(conn.fileno(), select.EPOLLIN)
                elif fd in by_fd and not self._read(by_fd[fd], arrived):
                    ep.unregister(fd)
                    self._drop(by_fd.pop(fd))
                self._emit_due()  # between requests too: a burst must not hold chunks back
            self._emit_due()

    def _timeout(self) -> float:
        """How long to wait for requests: epoll rounds up to whole milliseconds, so wake a
        millisecond early and sleep out the rest precisely."""
        if not self.due:
            return -1
        wait = self.due[0][0] - time.perf_counter()
        if wait > 0.0015:
            return wait - 0.0015
        if wait > 0:
            time.sleep(wait)
        return 0

    def _emit_due(self) -> None:
        while self.due and self.due[0][0] <= time.perf_counter():
            at, _, sock, data, then, tag = heapq.heappop(self.due)
            self._emit(sock, data, then)
            if tag is not None:
                self.sent_log.append((tag[0], tag[1], at, time.perf_counter()))

    def _emit(self, sock: socket.socket, data: bytes, then: str | None) -> None:
        if sock not in self.bufs:
            return  # the client has gone
        try:
            if data:
                sock.sendall(data)
            if then == "cut":
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _later(self, at: float, sock: socket.socket, data: bytes, then: str | None = None,
               tag: tuple[str, int] | None = None) -> None:
        self.seq += 1
        heapq.heappush(self.due, (at, self.seq, sock, data, then, tag))

    def _drop(self, sock: socket.socket) -> None:
        self.bufs.pop(sock, None)
        with contextlib.suppress(OSError):
            sock.close()

    def _read(self, sock: socket.socket, arrived: float) -> bool:
        """Read what arrived and answer every complete request; False when the peer closed."""
        try:
            data, anc, _, _ = sock.recvmsg(262144, 64)
        except OSError:
            return False
        if not data:
            return False
        for level, kind, raw in anc:
            if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(raw) >= 16:
                # The kernel's receive time (CLOCK_REALTIME) moved onto perf_counter's clock.
                sec, nsec = struct.unpack("qq", raw[:16])
                arrived = sec + nsec * 1e-9 - (time.time() - time.perf_counter())
        buf = self.bufs[sock] + data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            lines = buf[:end].decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in
                       (ln.partition(":") for ln in lines[1:])}
            n = int(headers.get("content-length", 0))
            if len(buf) < end + 4 + n:
                break
            body, buf = buf[end + 4:end + 4 + n], buf[end + 4 + n:]
            method, path = lines[0].split(" ")[:2]
            if not self._respond(sock, method, path, headers, body, arrived):
                return False
        self.bufs[sock] = buf
        return True

    def _respond(self, sock: socket.socket, method: str, path: str, headers: dict[str, str],
                 body: bytes, t0: float) -> bool:
        path = path.split("?")[0].rstrip("/")
        if method == "GET":
            if path.endswith("/models"):
                return _send_json(sock, 200, {"object": "list", "data": [
                    {"id": "scripted", "object": "model", "owned_by": "servecat"}]})
            return _send_json(sock, 200 if path.endswith("/health") else 404, {})
        chat = path.endswith("/chat/completions")
        if not (chat or path.endswith("/completions")):
            return _send_json(sock, 404, {"error": {"message": f"no route {path}"}})
        req = json.loads(body or b"{}")
        self.seq += 1
        rid = headers.get("x-request-id") or f"anon-{self.seq}"
        max_tokens = int(req.get("max_tokens") or req.get("max_completion_tokens") or 16)
        script = script_for(self.scenario, rid, max(max_tokens, 1))
        if script.fault in ("http_400", "http_429", "http_500"):
            return _send_json(sock, int(script.fault[5:]), {"error": {"message": script.fault}})
        if script.fault == "close":
            return False
        t0 = self._admit(t0, script)
        reply = _Reply(req, chat, self.scenario)
        if not req.get("stream"):
            whole = json.dumps(reply.whole(script)).encode()
            self._later(t0 + script.e2e_ms / 1000, sock, _json_response(200, whole))
            return True
        self._stream(sock, script, reply, t0, rid)
        return True

    def _admit(self, arrived: float, script: Script) -> float:
        """When the request's script starts: at once, or in queueing mode when a slot frees.

        Service times are scripted, so a slot's release time is known on admission and the
        FIFO queue is a heap of release times: requests take slots in the order the server
        reads them (arrival order, to within one epoll batch).
        """
        if not self.free:
            return arrived
        start = max(arrived, heapq.heappop(self.free))
        heapq.heappush(self.free, start + script.e2e_ms / 1000)
        return start

    def _stream(self, sock: socket.socket, script: Script, reply: _Reply, t0: float,
                rid: str) -> None:
        head = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
                + (_chunk(reply.role()) if reply.chat else b""))
        fault = script.fault
        if fault in ("hang", "empty", "malformed", "error_event"):
            payload = {"hang": b"", "empty": b"data: [DONE]\n\n", "malformed": b"data: {not json\n\n",
                       "error_event": b'data: {"error": {"message": "scripted"}}\n\n'}[fault]
            self._emit(sock, head + (_chunk(payload) + b"0\r\n\r\n" if payload else b""), None)
            return
        self._emit(sock, head, None)
        due = t0 + script.ttft_ms / 1000
        last = len(script.tokens) - 1
        for i, k in enumerate(script.tokens):
            if i:
                due += script.gaps_ms[i - 1] / 1000
            data = reply.content(k)
            if i == last:
                data += reply.tail(script)
            cut = fault == "cut" and i == min(1, last)
            self._later(due, sock, _chunk(data) + (b"0\r\n\r\n" if i == last and not cut else b""),
                        "cut" if cut else None, (rid, i))
            if cut or (fault == "stall" and i == 0):
                return


class _Reply:
    """The SSE events of one completion or chat completion."""

    def __init__(self, req: dict, chat: bool, scenario: Scenario):
        self.chat, self.scenario = chat, scenario
        self.model = req.get("model", "scripted")
        opts = req.get("stream_options") or {}
        self.usage = scenario.usage and bool(opts.get("include_usage"))
        prompt = req.get("prompt") if not chat else " ".join(
            str(m.get("content", "")) for m in req.get("messages", []))
        self.prompt_tokens = len(str(prompt or "").split())

    def _event(self, choices: list, **extra) -> bytes:
        obj = {"id": "cmpl-scripted", "object": "chat.completion.chunk" if self.chat else
               "text_completion", "created": 0, "model": self.model, "choices": choices, **extra}
        return b"data: " + json.dumps(obj).encode() + b"\n\n"

    def _choice(self, text: str, finish: str | None) -> dict:
        if self.chat:
            return {"index": 0, "delta": {"content": text} if text else {}, "finish_reason": finish}
        return {"index": 0, "text": text, "finish_reason": finish}

    def role(self) -> bytes:
        return self._event([{"index": 0, "delta": {"role": "assistant", "content": ""},
                             "finish_reason": None}])

    def content(self, tokens: int) -> bytes:
        return self._event([self._choice(self.scenario.token_text * tokens, None)])

    def tail(self, script: Script) -> bytes:
        out = self._event([self._choice("", "length")])
        if self.usage:
            out += self._event([], usage=self._usage(script))
        return out + b"data: [DONE]\n\n"

    def _usage(self, script: Script) -> dict:
        n = script.output_tokens
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": n,
                "total_tokens": self.prompt_tokens + n}

    def whole(self, script: Script) -> dict:
        text = self.scenario.token_text * script.output_tokens
        choice = ({"index": 0, "message": {"role": "assistant", "content": text},
                   "finish_reason": "length"} if self.chat else
                  {"index": 0, "text": text, "finish_reason": "length"})
        return {"id": "cmpl-scripted", "object": "chat.completion" if self.chat else
                "text_completion", "created": 0, "model": self.model, "choices": [choice],
                "usage": self._usage(script)}


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _json_response(status: int, body: bytes) -> bytes:
    return (b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (status, len(body), body))


def _send_json(sock: socket.socket, status: int, obj: object) -> bool:
    with contextlib.suppress(OSError):
        sock.sendall(_json_response(status, json.dumps(obj).encode()))
    return True


@contextlib.contextmanager
def scripted_server(scenario: Scenario | None = None, realtime: bool = False,
                    log: str | Path | None = None, timeout_s: float = 30.0) -> Iterator[str]:
    """Run the server in a child process on a free port; yields its base URL (`.../v1`).

    With `log`, the server writes its chunks' due and actual send times there on exit.
    """
    spec = json.dumps(asdict(scenario or Scenario()))
    cmd = [sys.executable, "-m", "bench.scripted_server", "--scenario", spec]
    cmd += (["--realtime"] if realtime else []) + (["--log", str(log)] if log else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.startswith("PORT "):
            raise RuntimeError(f"scripted server did not start (said {line!r})")
        yield f"http://127.0.0.1:{int(line.split()[1])}/v1"
    finally:
        if log:
            proc.terminate()
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
        proc.kill()
        proc.wait(timeout=timeout_s)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--scenario", default="{}", help="Scenario fields as JSON")
    parser.add_argument("--slots", type=int,
                        help="Queueing mode with this many slots (overrides the scenario's)")
    parser.add_argument("--log", help="On SIGTERM, write each chunk's due and actual send time here")
    parser.add_argument("--realtime", action="store_true",
                        help="SCHED_FIFO for every thread, where allowed (timing on a busy host)")
    args = parser.parse_args(argv)
    raw = json.loads(args.scenario)
    scenario = Scenario(**{k: tuple(v) if k in ("ttft_ms", "gap_ms") else v for k, v in raw.items()})
    if args.slots is not None:
        scenario.slots = args.slots
    if args.realtime:
        set_realtime()
    # A cyclic-GC pass would hold every scheduled chunk back; requests make no cycles.
    gc.freeze()
    gc.disable()
    server = ScriptedServer(scenario, args.host, args.port)
    if args.log:
        signal.signal(signal.SIGTERM, lambda *_: (_write_log(server, args.log), sys.exit(0)))
    print(f"PORT {server.port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


def _write_log(server: ScriptedServer, path: str) -> None:
    with open(path, "w") as f:
        json.dump(server.sent_log, f)


def read_sent_log(path: str | Path) -> dict[tuple[str, int], tuple[float, float]]:
    """The server's log: (request id, chunk index) -> (due, sent), perf_counter seconds."""
    return {(rid, i): (due, sent) for rid, i, due, sent in json.loads(Path(path).read_text())}


if __name__ == "__main__":
    main()
