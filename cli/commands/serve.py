"""`servecat serve`: the builtin engine behind an OpenAI-compatible HTTP server."""

from __future__ import annotations

import os

import click


@click.command()
@click.option("--model", required=True, help="Local Hugging Face model directory.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--served-model-name", default=None, help="Name clients send as `model` "
              "(default: the --model value).")
@click.option("--max-num-seqs", default=64, show_default=True, type=int,
              help="Most sequences in one step.")
@click.option("--max-num-batched-tokens", default=2048, show_default=True, type=int,
              help="Token budget of one step (prefill chunks plus decodes).")
@click.option("--max-model-len", default=None, type=int, help="Context limit in tokens "
              "(default: the model's, capped by the KV pool).")
@click.option("--dtype", default="auto", show_default=True,
              type=click.Choice(["auto", "fp32", "bf16", "fp16", "float32", "bfloat16",
                                 "float16"]))
@click.option("--quantization", default=None, type=click.Choice(["none", "int8", "int4"]),
              help="Weight-only quantization.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--kv-cache-memory", default=None, type=float,
              help="GiB for the KV block pool (default: a fraction of free memory).")
@click.option("--kv-cache-fraction", default=0.3, show_default=True, type=float,
              help="Fraction of free memory for the KV pool when --kv-cache-memory is unset.")
@click.option("--block-size", default=16, show_default=True, type=int)
@click.option("--no-prefix-caching", is_flag=True, help="Disable prefix caching.")
@click.option("--max-waiting", default=512, show_default=True, type=int,
              help="Requests queued beyond this get HTTP 429.")
@click.option("--num-threads", default=None, type=int, help="CPU threads for torch.")
@click.option("--api-key", default=None, envvar="SERVECAT_API_KEY",
              help="Require 'Authorization: Bearer KEY' (env SERVECAT_API_KEY).")
@click.option("--engine-core", default="process", show_default=True,
              type=click.Choice(["process", "thread"]),
              help="Where the step loop runs: a child process of its own (as vLLM's engine "
                   "core), or a thread of the server process.")
@click.option("--log-level", default="warning", show_default=True)
def serve(model: str, host: str, port: int, served_model_name: str | None, max_num_seqs: int,
          max_num_batched_tokens: int, max_model_len: int | None, dtype: str,
          quantization: str | None, device: str, kv_cache_memory: float | None,
          kv_cache_fraction: float, block_size: int, no_prefix_caching: bool,
          max_waiting: int, num_threads: int | None, api_key: str | None,
          engine_core: str, log_level: str) -> None:
    """Serve MODEL with the builtin engine: /v1/completions, /v1/chat/completions, /v1/models,
    /tokenize, /health, /metrics."""
    import socket

    # The engine's OpenMP threads sleep at their barriers instead of spinning first (a caller's
    # own OMP_WAIT_POLICY wins). Set before torch loads libgomp, which reads it once; the
    # engine core's spawned process inherits it. Why: on a 2-vCPU host, libgomp's default spin
    # let one `nice 19` busy loop beside the server stretch tiny's c=1 p50 TPOT to 14-67 ms
    # and fail its capacity search; passive kept 3.9-6.8 ms. Its price alone on the host is
    # within run-to-run noise: small's single stream ~10-15%, tiny's 0-35% (the runs:
    # tests/fixtures/validation/README.md).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from pathlib import Path

    import uvicorn

    from engine.config import EngineConfig
    from engine.core_process import CoreLoadError, ProcessCore
    from engine.server import build_app

    config = EngineConfig(
        model=model, dtype=dtype, quantization=quantization, device=device,
        max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
        max_model_len=max_model_len, block_size=block_size,
        kv_cache_memory=int(kv_cache_memory * 2**30) if kv_cache_memory else None,
        kv_cache_fraction=kv_cache_fraction, enable_prefix_caching=not no_prefix_caching,
        max_waiting=max_waiting, num_threads=num_threads)
    if not (Path(model) / "config.json").is_file():
        raise click.BadParameter(f"{model!r} is not a model folder (no config.json there); "
                                 "build one with `servecat models build small`",
                                 param_hint="--model")
    # A busy port is found out before the model loads, not after.
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise click.BadParameter(f"cannot listen on {host}:{port}: {exc.strerror}",
                                     param_hint="--port") from exc
    if engine_core == "thread":
        from engine.core import ThreadCore
        from engine.llm_engine import LLMEngine

        try:  # built on the thread that will step it (engine/core.py says why)
            thread_core = ThreadCore(make=lambda: LLMEngine(config))
        except (ValueError, FileNotFoundError, OSError) as exc:
            raise click.ClickException(str(exc)) from exc
        engine = thread_core.engine
        click.echo(f"servecat engine: {model} on {engine.device} ({engine.dtype_name}"
                   f"{', ' + engine.quantization if engine.quantization else ''}), "
                   f"{engine.runner.num_blocks} KV blocks of {block_size} tokens, "
                   f"max_model_len {engine.max_model_len}; engine core on a thread; "
                   f"http://{host}:{port}/v1", err=True)
        uvicorn.run(build_app(thread_core, served_model_name, api_key), host=host, port=port,
                    log_level=log_level, timeout_graceful_shutdown=10)
        return
    try:  # the engine core loads the model and steps in a child process of its own
        core = ProcessCore(config)
    except CoreLoadError as exc:
        raise click.ClickException(str(exc)) from exc
    f = core.facts
    click.echo(f"servecat engine: {model} on {f.device} ({f.dtype}"
               f"{', ' + f.quantization if f.quantization else ''}), "
               f"{f.num_blocks} KV blocks of {block_size} tokens, "
               f"max_model_len {f.max_model_len}; engine core pid {core.pid}; "
               f"http://{host}:{port}/v1", err=True)
    try:
        # A bounded graceful shutdown: open streams get 10 s, then SIGTERM ends the server.
        uvicorn.run(build_app(core, served_model_name, api_key), host=host, port=port,
                    log_level=log_level, timeout_graceful_shutdown=10)
    finally:
        core.stop()  # idempotent; the child never outlives the server
