"""GPU telemetry (bench/telemetry.py): a fake `nvidia-smi` first on PATH streams known samples,
a fake DCGM exporter serves known gauges; the sampler's mean/max are those of the samples
between start() and stop(), and the sweep puts them on each workload's summary row."""

from __future__ import annotations

import os
import stat
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pytest

from bench.deployment_run import sweep
from bench.endpoint import Endpoint
from bench.scripted_server import Scenario, scripted_server
from bench.telemetry import GPU_COLUMNS, GpuSampler, dcgm_sample, gpu_sampler, smi_samples
from tests.bench.test_deployment_run import PROFILES, config

# Two GPUs, two alternating samples: A = util (20+40)/2, memory 1000+3000, power 100+150;
# B = util (60+80)/2, memory 1000+5000, power 200+250.
SAMPLE_A = ["0, 20, 1000, 100.00", "1, 40, 3000, 150.00"]
SAMPLE_B = ["0, 60, 1000, 200.00", "1, 80, 5000, 250.00"]
EXPECTED = {"gpu_samples": 4, "gpu_util_mean_pct": 50.0, "gpu_util_max_pct": 70.0,
            "gpu_memory_used_mean_mib": 5000.0, "gpu_memory_used_max_mib": 6000.0,
            "gpu_power_mean_w": 350.0, "gpu_power_max_w": 450.0}


def fake_nvidia_smi(directory: Path, lines: list[str]) -> Path:
    """An `nvidia-smi` that records its arguments, prints LINES, then waits to be stopped
    (the real one prints a sample every -lms milliseconds until killed)."""
    script = directory / "nvidia-smi"
    body = "\n".join(lines)
    script.write_text(f"""#!/bin/sh
echo "$@" > "{directory}/args"
cat <<'EOF'
{body}
EOF
exec sleep 60
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


@pytest.fixture
def gpu_path(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    return tmp_path


def _wait_for(predicate, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)


def test_nvidia_smi_samples_give_mean_and_max_and_the_process_ends(gpu_path):
    fake_nvidia_smi(gpu_path, [*SAMPLE_A, *SAMPLE_B, *SAMPLE_A, *SAMPLE_B])
    sampler = gpu_sampler()
    assert sampler is not None
    sampler.start()
    proc = sampler._proc
    _wait_for(lambda: len(sampler._samples) >= 3)  # the 4th ends when the stream does
    summary = sampler.stop()
    assert summary == EXPECTED
    assert proc.poll() is not None, "nvidia-smi still running after stop()"
    args = (gpu_path / "args").read_text().split()
    assert args == ["--query-gpu=index,utilization.gpu,memory.used,power.draw",
                    "--format=csv,noheader,nounits", "-lms", "500"]


def test_unreadable_fields_and_a_cut_sample_are_left_out():
    lines = ["0, 50, 2000, [N/A]", "1, 70, 2000, [N/A]", "garbage line",
             "0, 90, 4000, 300", "1, 30, 4000, 100",
             "0, 99, 9999, 999"]  # stop() cut this sample before GPU 1's line
    samples = list(smi_samples(lines))
    assert [(s.util_pct, s.memory_mib, s.power_w) for s in samples] == [
        (60.0, 4000.0, None), (60.0, 8000.0, 400.0)]


def test_a_stop_with_no_samples_gives_nulls(gpu_path):
    fake_nvidia_smi(gpu_path, [])
    sampler = GpuSampler(nvidia_smi=str(gpu_path / "nvidia-smi"), gpus=[1])
    sampler.start(first_sample_timeout_s=0.2)
    assert sampler.stop() == {c: 0 if c == "gpu_samples" else None for c in GPU_COLUMNS}
    assert (gpu_path / "args").read_text().split()[-2:] == ["-i", "1"]


METRICS = """# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).
# TYPE DCGM_FI_DEV_GPU_UTIL gauge
DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-a",device="nvidia0",modelName="NVIDIA H100 80GB HBM3"} 20
DCGM_FI_DEV_GPU_UTIL{gpu="1",UUID="GPU-b",device="nvidia1",modelName="NVIDIA H100 80GB HBM3"} 40
DCGM_FI_DEV_FB_USED{gpu="0",UUID="GPU-a",device="nvidia0"} 1000
DCGM_FI_DEV_FB_USED{gpu="1",UUID="GPU-b",device="nvidia1"} 3000
DCGM_FI_DEV_POWER_USAGE{gpu="0",UUID="GPU-a",device="nvidia0"} 100.5
DCGM_FI_DEV_POWER_USAGE{gpu="1",UUID="GPU-b",device="nvidia1"} 150.5
DCGM_FI_DEV_SM_CLOCK{gpu="0",UUID="GPU-a",device="nvidia0"} 1980
"""


class _Metrics(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = METRICS.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def dcgm_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Metrics)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    server.shutdown()
    thread.join()


def test_dcgm_exporter_is_polled_when_its_url_is_given(dcgm_url, gpu_path):
    fake_nvidia_smi(gpu_path, SAMPLE_B)  # not asked: DCGM wins
    sampler = gpu_sampler(dcgm_url=dcgm_url)
    sampler.interval_ms = 50
    sampler.start()
    _wait_for(lambda: len(sampler._samples) >= 2)
    summary = sampler.stop()
    assert summary["gpu_samples"] >= 2 and not (gpu_path / "args").exists()
    assert summary["gpu_util_mean_pct"] == summary["gpu_util_max_pct"] == 30.0
    assert summary["gpu_memory_used_max_mib"] == 4000.0 and summary["gpu_power_max_w"] == 251.0
    one = dcgm_sample(METRICS, gpus=[1])
    assert (one.util_pct, one.memory_mib, one.power_w) == (40.0, 3000.0, 150.5)


def test_no_sampler_without_nvidia_smi_or_dcgm(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert gpu_sampler() is None


def test_the_written_summary_has_the_gpu_columns():
    from bench.run_files import outcome_schema
    from servecat.results import GPU_FIELDS

    assert [f.name for f in GPU_FIELDS] == list(GPU_COLUMNS)
    written = outcome_schema(pa.schema([pa.field("config_id", pa.string())]), []).names
    assert [c for c in GPU_COLUMNS if c not in written] == []


def test_the_sweep_samples_each_workload(gpu_path, tiny_model):
    fake_nvidia_smi(gpu_path, [*SAMPLE_A, *SAMPLE_B, *SAMPLE_A, *SAMPLE_B])
    written = []
    with scripted_server(Scenario(ttft_ms=(1, 2), gap_ms=(0.5, 1))) as url:
        ep = Endpoint(base_url=url, model="scripted", api_key_env=None)
        out = sweep([config(0, 1), config(1, 2)], ep, str(tiny_model), PROFILES, done=set(),
                    on_outcome=written.append, log=lambda _: None, sampler=gpu_sampler())
    assert [o.status for o in out] == ["ok", "ok"], [o.reason for o in out]
    for outcome in out:
        row = outcome.summary_row()
        # Each workload is its own window: the fake prints its 4 samples at every start().
        assert {c: row[c] for c in GPU_COLUMNS} == EXPECTED
