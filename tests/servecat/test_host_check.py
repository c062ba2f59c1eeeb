"""Done-when (c): the hardware check against a fake `nvidia-smi` first on PATH: it passes on
the deployment's GPUs, and fails naming both what was wanted and what was found."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from servecat import __version__
from servecat.host_check import HardwareMismatch, check_host, parse_query, probe, provenance

H100_LINE = "NVIDIA H100 80GB HBM3, 81559 MiB, 550.54.15"
BANNER = """+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 550.54.15              Driver Version: 550.54.15      CUDA Version: 12.4     |
+-----------------------------------------------------------------------------------------+"""


def fake_nvidia_smi(directory: Path, query_lines: list[str], exit_code: int = 0) -> None:
    """An `nvidia-smi` that answers the CSV query with QUERY_LINES and prints a banner."""
    script = directory / "nvidia-smi"
    csv = "\\n".join(query_lines)
    script.write_text(f"""#!/bin/sh
if [ "{exit_code}" != 0 ]; then
  echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver." >&2
  exit {exit_code}
fi
case "$1" in
  --query-gpu=name,memory.total,driver_version) printf '{csv}\\n' ;;
  *) cat <<'EOF'
{BANNER}
EOF
  ;;
esac
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def gpu_host(tmp_path, monkeypatch):
    """Put a fake nvidia-smi first on PATH; returns a function that sets what it prints."""
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    return lambda lines, exit_code=0: fake_nvidia_smi(tmp_path, lines, exit_code)


def test_two_h100s_pass_and_give_provenance(gpu_host):
    gpu_host([H100_LINE, H100_LINE])
    host = check_host("h100", 2)
    assert provenance(host, "h100", 2) == {
        "hardware": "h100x2", "gpu_name": "NVIDIA H100 80GB HBM3", "gpu_count": 2,
        "gpu_memory_mib": 81559, "driver_version": "550.54.15", "cuda_version": "12.4",
        "servecat_version": __version__}


def test_wrong_gpu_type_names_wanted_and_found(gpu_host):
    gpu_host(["NVIDIA A10G, 23028 MiB, 535.104.05"])
    with pytest.raises(HardwareMismatch) as err:
        check_host("h100", 1)
    message = str(err.value)
    assert "wanted h100x1: 1 x 'NVIDIA H100 80GB HBM3'" in message
    assert "found 1 x NVIDIA A10G (23028 MiB), driver 535.104.05" in message


def test_too_few_gpus_fail(gpu_host):
    gpu_host([H100_LINE])
    with pytest.raises(HardwareMismatch, match=r"wanted h100x2: .*found 1 x NVIDIA H100 80GB HBM3"):
        check_host("h100", 2)


def test_a100_sizes_are_told_apart(gpu_host):
    gpu_host(["NVIDIA A100-SXM4-40GB, 40960 MiB, 535.104.05"])
    assert check_host("a100-40gb", 1).gpus[0].memory_mib == 40960
    with pytest.raises(HardwareMismatch, match="wanted a100-80gbx1.*found 1 x NVIDIA A100-SXM4-40GB"):
        check_host("a100-80gb", 1)


def test_broken_driver_and_missing_nvidia_smi_are_reported(gpu_host, monkeypatch, tmp_path):
    gpu_host([], exit_code=9)
    with pytest.raises(HardwareMismatch, match="wanted l4x1.*found no NVIDIA GPU .*exited with "
                                               "code 9: NVIDIA-SMI has failed"):
        check_host("l4", 1)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(HardwareMismatch, match="found no NVIDIA GPU \\(nvidia-smi not found on PATH"):
        check_host("l4", 1)


def test_cpu_passes_on_any_host(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no nvidia-smi at all
    host = check_host("cpu", 1)
    assert provenance(host, "cpu", 1)["gpu_name"] is None
    assert probe().problem == "nvidia-smi not found on PATH"


def test_unknown_hardware_and_bad_lines():
    with pytest.raises(HardwareMismatch, match="'tpu-v5' is not in the hardware table"):
        check_host("tpu-v5", 1)
    with pytest.raises(ValueError, match="cannot read GPU line 'garbage'"):
        parse_query("garbage\n")
