"""Engine test helpers: engines on the tiny model, HF references, a live HTTP server."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from servecat.net import free_port

PROMPT_TEXTS = [f"def function_{i}(x):\n    return " + "import os\n" * (i % 5) + "x" * (i % 3)
                for i in range(16)]
NEW_TOKENS = 20


def make_engine(model: Path, **kw):
    from engine.config import EngineConfig
    from engine.llm_engine import LLMEngine

    kw.setdefault("kv_cache_memory", 32 << 20)
    kw.setdefault("num_threads", 1)  # shared 2-core CI: one thread never waits on a busy core
    return LLMEngine(EngineConfig(str(model), **kw))


def hf_greedy(model_dir: Path, prompts: list[list[int]], n: int) -> list[list[int]]:
    """Hugging Face `generate` greedy, one prompt at a time, fp32, exactly N new tokens."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    out = []
    for p in prompts:
        ids = model.generate(torch.tensor([p]), max_new_tokens=n, min_new_tokens=n,
                             do_sample=False)
        out.append(ids[0, len(p):].tolist())
    return out


class LiveServer:
    """uvicorn on 127.0.0.1 in a thread, so a test can look inside the engine it serves."""

    def __init__(self, engine, api_key: str | None = None, served: str = "tiny", **app_kw):
        import uvicorn

        from engine.server import build_app

        self.engine = engine
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(build_app(engine, served, api_key, **app_kw), host="127.0.0.1",
                                port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)

    def wait_idle(self, timeout: float = 20.0) -> None:
        """Until the engine has no request left (aborts apply at the next loop turn)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ae = self.engine
            if not ae.has_work() and not ae.requests:
                time.sleep(0.2)
                if not ae.has_work():
                    return
            time.sleep(0.05)
        raise AssertionError("engine still busy")


def corrupt_int4(model_dir: Path, out: Path, scale_error: float = 4.0) -> Path:
    """A copy of MODEL_DIR whose layer weights went through a broken int4 round trip: symmetric
    group-wise (64) int4 quantization, dequantized with scales SCALE_ERROR times too large (a
    scale stored in the wrong units). Test-only: a model quantization must visibly damage."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(model_dir, out, dirs_exist_ok=True)
    weights = load_file(out / "model.safetensors")
    for name, w in weights.items():
        if ".layers." in name and name.endswith("proj.weight"):
            g = w.float().reshape(-1, 64)
            scale = g.abs().amax(-1, keepdim=True).clamp(min=1e-8) / 7
            q = (g / scale).round().clamp(-8, 7)
            weights[name] = (q * scale * scale_error).reshape(w.shape).to(w.dtype)
    save_file(weights, out / "model.safetensors", metadata={"format": "pt"})
    return out


def engine_config(model: Path, **kw):
    from engine.config import EngineConfig

    kw.setdefault("kv_cache_memory", 32 << 20)
    kw.setdefault("num_threads", 1)
    return EngineConfig(str(model), **kw)


def process_core(model: Path, make=None, **kw):
    """The engine core in a child process (as `servecat serve` runs it), model loaded."""
    from engine.core_process import ProcessCore

    config = engine_config(model, **kw)
    return ProcessCore(config) if make is None else ProcessCore(config, make)


def engine_failing_first_step(config):
    """An engine whose first forward raises (loaded in the core's child process: picklable)."""
    from engine.llm_engine import LLMEngine

    engine = LLMEngine(config)
    real, calls = engine.runner.run, []

    def run(batch):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("kernel fault")
        return real(batch)

    engine.runner.run = run
    return engine
