"""GPU telemetry during a workload: utilisation, memory used and power draw, sampled in the
background between `start()` and `stop()` and summarised as mean and max per metric.

Two sources: `nvidia-smi -lms 500` (one CSV line per GPU per sample, a subprocess read by a
thread), or a DCGM exporter's Prometheus `/metrics` polled by a thread when its URL is given
(its values change as often as the exporter collects, every 30 s by default). Per sample,
utilisation is the mean over the GPUs and memory and power their sum: what the deployment as
a whole holds and draws. The window includes the workload's warm-up requests.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from statistics import fmean

import httpx

# The summary columns a sampler fills (servecat/results.py declares them).
GPU_COLUMNS: tuple[str, ...] = (
    "gpu_samples", "gpu_util_mean_pct", "gpu_util_max_pct", "gpu_memory_used_mean_mib",
    "gpu_memory_used_max_mib", "gpu_power_mean_w", "gpu_power_max_w")
QUERY = ["--query-gpu=index,utilization.gpu,memory.used,power.draw",
         "--format=csv,noheader,nounits"]
DCGM = {"util": "DCGM_FI_DEV_GPU_UTIL", "memory": "DCGM_FI_DEV_FB_USED",
        "power": "DCGM_FI_DEV_POWER_USAGE"}
_PROM = re.compile(r'^([A-Za-z_:][\w:]*)(?:\{([^}]*)\})?\s+(\S+)')
_GPU_LABEL = re.compile(r'(?:^|,)\s*gpu="(\d+)"')
_METRICS = (("util_pct", "gpu_util_{}_pct"), ("memory_mib", "gpu_memory_used_{}_mib"),
            ("power_w", "gpu_power_{}_w"))


@dataclass(frozen=True, slots=True)
class Sample:
    """One moment of the deployment's GPUs: mean utilisation, total memory used and power."""

    util_pct: float | None
    memory_mib: float | None
    power_w: float | None


def _number(text: str) -> float | None:
    """A CSV field as a number; None for `[N/A]`, `[Not Supported]` and the like."""
    try:
        return float(text.strip())
    except ValueError:
        return None


def combine(gpus: Sequence[tuple[float | None, float | None, float | None]]) -> Sample:
    """One Sample from each GPU's (utilisation, memory, power)."""
    def over(i: int, how) -> float | None:
        values = [g[i] for g in gpus if g[i] is not None]
        return how(values) if values else None

    return Sample(over(0, fmean), over(1, sum), over(2, sum))


def summarize(samples: Sequence[Sample]) -> dict[str, float | int | None]:
    """GPU_COLUMNS over SAMPLES: how many, and mean and max of each metric (None if unknown)."""
    out: dict[str, float | int | None] = {"gpu_samples": len(samples)}
    for field, column in _METRICS:
        values = [v for s in samples if (v := getattr(s, field)) is not None]
        out[column.format("mean")] = fmean(values) if values else None
        out[column.format("max")] = max(values) if values else None
    return out


def smi_samples(lines: Iterable[str]) -> Iterable[Sample]:
    """Samples from `nvidia-smi --query-gpu=index,...` lines: a sample ends where a GPU index
    repeats (nvidia-smi prints every GPU once per interval). A last sample cut short by
    stop() is dropped: its sums would be short of some GPUs."""
    group: dict[str, tuple[float | None, float | None, float | None]] = {}
    size = None
    for line in lines:
        parts = line.split(",")
        if len(parts) != 4:
            continue  # a banner or an error line, not a sample
        index = parts[0].strip()
        if index in group:
            size = len(group)
            yield combine(list(group.values()))
            group = {}
        group[index] = (_number(parts[1]), _number(parts[2]), _number(parts[3]))
    if group and len(group) == (size or len(group)):
        yield combine(list(group.values()))


def dcgm_sample(text: str, gpus: Sequence[int] | None = None) -> Sample | None:
    """A Sample from a DCGM exporter's /metrics text (only GPUS when given), or None if it
    has none of the three metrics."""
    per_gpu: dict[str, list[float | None]] = {}
    slot = {name: i for i, name in enumerate(DCGM.values())}
    for line in text.splitlines():
        m = _PROM.match(line)
        if not m or m[1] not in slot:
            continue
        gpu = _GPU_LABEL.search(m[2] or "")
        key = gpu[1] if gpu else "0"
        if gpus is not None and int(key) not in gpus:
            continue
        per_gpu.setdefault(key, [None, None, None])[slot[m[1]]] = _number(m[3])
    return combine([tuple(v) for v in per_gpu.values()]) if per_gpu else None


class GpuSampler:
    """Samples GPU telemetry in a background thread between start() and stop()."""

    def __init__(self, gpus: Sequence[int] | None = None, interval_ms: int = 500,
                 dcgm_url: str | None = None, nvidia_smi: str = "nvidia-smi") -> None:
        self.gpus, self.interval_ms, self.dcgm_url = gpus, interval_ms, dcgm_url
        self.nvidia_smi = nvidia_smi
        self._samples: list[Sample] = []
        self._stop, self._first = threading.Event(), threading.Event()
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None

    def start(self, first_sample_timeout_s: float = 5.0) -> None:
        """Begin a window: samples from now until stop(). Returns once the first sample is
        in (or the source failed), so even a short workload has its starting state."""
        self._samples, self._stop, self._first = [], threading.Event(), threading.Event()
        if self.dcgm_url:
            target = self._poll_dcgm
        else:
            args = [self.nvidia_smi, *QUERY, "-lms", str(self.interval_ms)]
            if self.gpus is not None:
                args += ["-i", ",".join(map(str, self.gpus))]
            if shutil.which("stdbuf"):
                # Line-buffered even into a pipe: a sample is read when it is printed, not
                # when a 4 KiB buffer fills (or never, for a short workload).
                args = ["stdbuf", "-oL", *args]
            self._proc = subprocess.Popen(args, stdout=subprocess.PIPE,
                                          stderr=subprocess.DEVNULL, text=True)
            target = self._read_smi
        self._thread = threading.Thread(target=self._run, args=(target,), name="gpu-sampler",
                                        daemon=True)
        self._thread.start()
        self._first.wait(first_sample_timeout_s)

    def stop(self) -> dict[str, float | int | None]:
        """End the window; GPU_COLUMNS over its samples."""
        self._stop.set()
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._thread is not None:
            self._thread.join(timeout=10)
        return summarize(list(self._samples))

    def _run(self, target) -> None:
        try:
            target()
        finally:
            self._first.set()  # a source that failed has nothing to wait for

    def _add(self, sample: Sample) -> None:
        self._samples.append(sample)
        self._first.set()

    def _read_smi(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for sample in smi_samples(self._proc.stdout):
            self._add(sample)

    def _poll_dcgm(self) -> None:
        with httpx.Client(timeout=max(self.interval_ms / 1000, 1.0)) as client:
            while not self._stop.is_set():
                try:
                    sample = dcgm_sample(client.get(self.dcgm_url).text, self.gpus)
                except httpx.HTTPError:
                    sample = None  # a missed scrape is a missing sample, not a failed workload
                if sample is not None:
                    self._add(sample)
                self._stop.wait(self.interval_ms / 1000)


def gpu_sampler(dcgm_url: str | None = None, nvidia_smi: str = "nvidia-smi",
                gpus: Sequence[int] | None = None) -> GpuSampler | None:
    """A sampler of this host's GPUs: from DCGM when its URL is given, else from nvidia-smi
    when it is on PATH; None when neither can be read."""
    if dcgm_url:
        return GpuSampler(gpus, dcgm_url=dcgm_url)
    exe = shutil.which(nvidia_smi)
    return GpuSampler(gpus, nvidia_smi=exe) if exe else None
