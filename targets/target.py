"""Targets: the server a deployment is benchmarked against.

A `Target` starts (or connects to) an OpenAI-compatible server, waits until it is healthy,
says where it is (an `Endpoint`), and is always stopped, also when the run fails. Managed
servers run as a child process group that dies with the run (Linux parent-death signal), so
a killed run leaves no server behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path

from bench.endpoint import Endpoint
from servecat.deployment import Deployment
from servecat.engines import TORCH_DTYPES, WEIGHT_QUANTIZATIONS
from servecat.net import free_port, wait_healthy

# The provenance facts kept as `target_*` summary columns (bench/run_files.TARGET_FIELDS).
HOST_FACTS = ("gpu_name", "gpu_count", "gpu_memory_mib", "driver_version", "cuda_version")



class TargetError(RuntimeError):
    """The target could not be started, did not become healthy, or died."""


def _die_with_parent() -> None:  # runs in the child between fork and exec
    os.setsid()
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Target(ABC):
    """One deployment's server, used as a context manager: started, healthy, then stopped."""

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def endpoint(self) -> Endpoint: ...

    def wait_healthy(self, timeout_s: float) -> None:
        """Poll `/health` until it answers 200, the process dies, or TIMEOUT_S passes."""
        url = self.health_url()
        if wait_healthy(url, timeout_s, self.check_alive):
            return
        raise TargetError(f"{self.describe()} not healthy after {timeout_s:.0f} s at {url}"
                          f"{self.log_tail()}")

    def health_url(self) -> str:
        return self.endpoint().base_url.rstrip("/").removesuffix("/v1") + "/health"

    def metrics_url(self) -> str | None:
        """Prometheus metrics of the server, when it exports them."""
        return self.endpoint().base_url.rstrip("/").removesuffix("/v1") + "/metrics"

    def check_alive(self) -> None:
        """Raise TargetError if a managed server has exited."""
        return None

    def stop(self) -> None:
        """Stop what this target started (nothing for an existing server)."""
        return None

    def log_tail(self, lines: int = 20) -> str:
        return ""

    # What the host measured on (servecat.host_check.provenance), for servers started here.
    host_facts: Mapping[str, object] = {}

    def info(self) -> dict[str, object]:
        """Facts about the target to keep beside every summary row of its workloads, as
        `target_*` columns (e.g. cold start seconds, the provider's reported $/hour)."""
        return dict(self.host_facts)

    def describe(self) -> str:
        return type(self).__name__

    def __enter__(self) -> Target:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class ProcessTarget(Target):
    """A server started from a command line as its own process group on 127.0.0.1."""

    def __init__(self, argv: list[str], port: int, model_name: str, env: Mapping[str, str] | None = None,
                 log_path: Path | None = None, headers: Mapping[str, str] | None = None,
                 health_timeout_s: float = 300.0, extra_body: Mapping[str, object] | None = None):
        self.argv, self.port, self.model_name = argv, port, model_name
        self.env = {**os.environ, **(env or {})}
        self.log_path = log_path or Path(tempfile.mkstemp(prefix="servecat-target-", suffix=".log")[1])
        self.headers = dict(headers or {})
        self.extra_body = dict(extra_body or {})
        self.health_timeout_s = health_timeout_s
        self.proc: subprocess.Popen | None = None

    def describe(self) -> str:
        return f"server `{' '.join(self.argv[:4])} ...` on port {self.port}"

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 (owned by the child)
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=self.env,
                                     preexec_fn=_die_with_parent)
        log.close()
        self.wait_healthy(self.health_timeout_s)

    def endpoint(self) -> Endpoint:
        return Endpoint(base_url=f"http://127.0.0.1:{self.port}/v1", model=self.model_name,
                        headers=self.headers, api_key_env=None, extra_body=self.extra_body)

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise TargetError(f"{self.describe()} exited with code {self.proc.returncode}"
                              f"{self.log_tail()}")

    def stop(self, grace_s: float = 10.0) -> None:
        if self.proc is None:
            return
        pgid = self.proc.pid
        for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=wait)
                if not _group_alive(pgid):
                    break
        self.proc = None

    def log_tail(self, lines: int = 20) -> str:
        try:
            tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return "\nlast lines of the server log:\n" + "\n".join(tail) if tail else ""


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


# Our quantization vocabulary -> `servecat serve` flags.
BUILTIN_QUANT_FLAGS: dict[str, list[str]] = {
    **{word: ["--dtype", dtype] for word, dtype in TORCH_DTYPES.items()},
    **{word: ["--quantization", word] for word in WEIGHT_QUANTIZATIONS},
}


def builtin_target(deployment: Deployment, log_path: Path | None = None,
                   health_timeout_s: float = 300.0) -> ProcessTarget:
    """`servecat serve` for DEPLOYMENT on a free 127.0.0.1 port."""
    port = free_port()
    name = deployment.model
    argv = [sys.executable, "-m", "cli.main", "serve", "--model", deployment.model_id,
            "--host", "127.0.0.1", "--port", str(port), "--served-model-name", name,
            *BUILTIN_QUANT_FLAGS[deployment.quantization]]
    for arg in ("max_num_seqs", "max_num_batched_tokens"):
        value = getattr(deployment, arg)
        if value is not None:
            argv += [f"--{arg.replace('_', '-')}", str(value)]
    kv_gb = deployment.kv_cache_gb
    if kv_gb is not None:
        # The pool the matrix sized for this deployment's largest workload, with headroom for
        # block rounding; not a fraction of the host's memory.
        argv += ["--kv-cache-memory", f"{max(0.25, 1.25 * float(kv_gb)):.3f}"]
    return ProcessTarget(argv, port, name, log_path=log_path, health_timeout_s=health_timeout_s,
                         extra_body={"ignore_eos": True})


class ExistingTarget(Target):
    """An OpenAI-compatible server that is already running (nothing to start or stop)."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None,
                 health_timeout_s: float = 30.0, health_path: str = "/health"):
        self.base_url, self.model = base_url.rstrip("/"), model
        self._api_key = api_key
        self.health_timeout_s, self.health_path = health_timeout_s, health_path

    def start(self) -> None:
        self.wait_healthy(self.health_timeout_s)

    def health_url(self) -> str:
        return self.base_url.removesuffix("/v1") + self.health_path

    def endpoint(self) -> Endpoint:
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        return Endpoint(base_url=self.base_url, model=self.model, headers=headers,
                        api_key_env=None, extra_body={"ignore_eos": True})

    def describe(self) -> str:
        return f"server at {self.base_url}"


def command_target(template: str, deployment: Deployment, log_path: Path | None = None,
                   health_timeout_s: float = 300.0,
                   extra: Mapping[str, object] | None = None) -> ProcessTarget:
    """A server launched from a command template, e.g. `tgi-launcher --port {port} ...`.

    Placeholders: {port} {model} {model_id} {quantization} {dtype} {max_num_seqs}
    {max_num_batched_tokens} {tensor_parallel_size} {python}, any other field of the
    deployment, and EXTRA's (a launcher's own, e.g. vLLM's)."""
    port = free_port()
    values = {k: ("" if v is None else v) for k, v in deployment.values().items()}
    values |= {"port": port, "python": sys.executable,
               "dtype": TORCH_DTYPES.get(deployment.quantization, "auto"), **(extra or {})}
    try:
        argv = []
        for part in shlex.split(template):
            text = part.format(**values)
            # A `{..._flag(s)}` placeholder stands for zero or more whole arguments.
            argv += shlex.split(text) if re.fullmatch(r"\{\w+_flags?\}", part) else [text]
    except (KeyError, IndexError) as exc:
        raise TargetError(f"launch command {template!r}: unknown placeholder {exc}") from None
    return ProcessTarget(argv, port, deployment.model, log_path=log_path,
                         health_timeout_s=health_timeout_s, extra_body={"ignore_eos": True})
