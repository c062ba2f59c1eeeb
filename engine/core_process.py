"""The engine core in a child process of its own, as vLLM's EngineCore: the child loads the
model and runs the step loop (engine/core.py); the server's process keeps HTTP, tokenizing,
detokenizing and streaming, so neither waits on the other's GIL.

Two one-way pipes: commands go down, one StepBatch per step comes up (pickled tuples, one
message per step however many requests it served). The child never outlives the server:
when the server's process ends its pipe ends close, and the child, which polls its command
pipe every step and every second when idle, sees EOF and exits; SIGINT (a terminal's Ctrl-C
reaches the whole process group) is left to the server, which stops the child itself.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import signal
import threading
from collections.abc import Callable

from engine.config import EngineConfig
from engine.core import Command, EngineCore, EngineFacts, StepBatch, facts_of

log = logging.getLogger("servecat.engine")


def _load(config: EngineConfig):
    from engine.llm_engine import LLMEngine

    return LLMEngine(config)


def _child(config: EngineConfig, commands, batches, make: Callable) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        engine = make(config)
    except Exception as exc:  # a clean one-line error for the server to raise
        batches.send(("error", f"{exc}" if isinstance(exc, ValueError | OSError)
                      else f"{type(exc).__name__}: {exc}"))
        return
    batches.send(("ready", facts_of(engine)))

    def receive(timeout: float) -> list[Command]:
        out: list[Command] = []
        if commands.poll(timeout):
            out.append(commands.recv())  # EOFError when the server is gone: the loop ends
            while commands.poll(0):
                out.append(commands.recv())
        return out

    with contextlib.suppress(BrokenPipeError, EOFError, OSError):
        EngineCore(engine, batches.send).run(receive)


class CoreLoadError(RuntimeError):
    """The child could not load the engine; the message says why."""


class ProcessCore:
    """The parent's handle on the core child: started (model loaded) by the constructor."""

    def __init__(self, config: EngineConfig, make: Callable = _load):
        from transformers import AutoTokenizer

        ctx = mp.get_context("spawn")  # no forked copy of the server's threads or torch state
        cmd_r, self.cmd_w = ctx.Pipe(duplex=False)
        self.out_r, out_w = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=_child, args=(config, cmd_r, out_w, make),
                                name="servecat-engine-core", daemon=True)
        self.proc.start()
        cmd_r.close()  # only the child holds these ends: EOF reaches each side when the
        out_w.close()  # other process ends
        self.send_lock = threading.Lock()
        self.stopping = False
        self.reader: threading.Thread | None = None
        try:
            kind, what = self.out_r.recv()
        except EOFError:
            self.proc.join(5)
            raise CoreLoadError(f"the engine core exited while loading (exit code "
                                f"{self.proc.exitcode})") from None
        if kind == "error":
            self.proc.join(5)
            raise CoreLoadError(what)
        self.facts: EngineFacts = what
        self.tokenizer = AutoTokenizer.from_pretrained(config.model)

    @property
    def pid(self) -> int | None:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.is_alive()

    def start(self, on_batch: Callable[[StepBatch], None]) -> None:
        def read() -> None:
            while True:
                try:
                    batch = self.out_r.recv()
                except (EOFError, OSError):
                    break
                on_batch(batch)
                if batch.dead:
                    return
            if not self.stopping:
                self.proc.join(1)
                on_batch(StepBatch([], dead=f"the engine core process exited (exit code "
                                            f"{self.proc.exitcode})"))

        self.reader = threading.Thread(target=read, name="servecat-core-reader", daemon=True)
        self.reader.start()

    def send(self, command: Command) -> None:
        """Queue COMMAND for the child; a child that is gone raises BrokenPipeError."""
        with self.send_lock:
            self.cmd_w.send(command)

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the child to stop; after TIMEOUT seconds terminate it, then kill it."""
        self.stopping = True
        with contextlib.suppress(OSError):
            self.send(("stop",))
        self.proc.join(timeout)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(2)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(2)
        with contextlib.suppress(OSError):
            self.cmd_w.close()
        if self.reader is not None:
            self.reader.join(2)
        with contextlib.suppress(OSError):
            self.out_r.close()
