"""Is this host the deployment's hardware? Checked with `nvidia-smi` before anything is
measured, and kept as provenance beside the results.

`cpu` hardware passes on any host. A GPU type passes when nvidia-smi lists at least the
deployment's GPU count of GPUs whose name is one of the type's `gpu_names` in the hardware
table; otherwise `HardwareMismatch` names what was wanted and what was found.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

from servecat import __version__
from servecat.hardware import Hardware, hardware_key, load_hardware

QUERY = ["--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"]
_CUDA = re.compile(r"CUDA Version:\s*([0-9.]+)")


class HardwareMismatch(RuntimeError):
    """The host does not have the GPUs the deployment was to be measured on."""


@dataclass(frozen=True, slots=True)
class Gpu:
    """One line of `nvidia-smi --query-gpu=name,memory.total,driver_version`."""

    name: str
    memory_mib: int | None
    driver: str


@dataclass(frozen=True, slots=True)
class Host:
    """The GPUs nvidia-smi lists here (none without it), its driver and CUDA version."""

    gpus: tuple[Gpu, ...]
    cuda_version: str | None = None
    problem: str | None = None  # why no GPU could be listed

    def describe(self) -> str:
        if not self.gpus:
            return f"no NVIDIA GPU ({self.problem or 'nvidia-smi lists none'})"
        names: dict[str, int] = {}
        for g in self.gpus:
            label = g.name + (f" ({g.memory_mib} MiB)" if g.memory_mib else "")
            names[label] = names.get(label, 0) + 1
        return (", ".join(f"{n} x {label}" for label, n in names.items())
                + f", driver {self.gpus[0].driver}")


def parse_query(text: str) -> tuple[Gpu, ...]:
    """GPUs from nvidia-smi's CSV lines (`NVIDIA H100 80GB HBM3, 81559 MiB, 550.54.15`)."""
    gpus = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = [p.strip() for p in line.rsplit(",", 2)]
        if len(parts) != 3:
            raise ValueError(f"nvidia-smi: cannot read GPU line {line!r} "
                             f"(expected name, memory.total, driver_version)")
        name, memory, driver = parts
        mib = re.match(r"(\d+)\s*MiB", memory)
        gpus.append(Gpu(name, int(mib[1]) if mib else None, driver))
    return tuple(gpus)


def probe(nvidia_smi: str = "nvidia-smi", timeout_s: float = 30.0) -> Host:
    """This host's GPUs from nvidia-smi (found on PATH); no GPUs when it is absent or fails."""
    exe = shutil.which(nvidia_smi)
    if exe is None:
        return Host((), problem=f"{nvidia_smi} not found on PATH")
    try:
        out = subprocess.run([exe, *QUERY], capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Host((), problem=f"{exe} {' '.join(QUERY)}: {exc}")
    if out.returncode != 0:
        said = (out.stderr or out.stdout).strip().splitlines()
        return Host((), problem=f"{exe} exited with code {out.returncode}"
                    + (f": {said[-1]}" if said else ""))
    return Host(parse_query(out.stdout), _cuda_version(exe, timeout_s))


def _cuda_version(exe: str, timeout_s: float) -> str | None:
    """The CUDA version of nvidia-smi's banner (`... CUDA Version: 12.4 |`), if it says one."""
    try:
        banner = subprocess.run([exe], capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = _CUDA.search(banner.stdout or "")
    return found[1] if found else None


def check_host(hardware: str, gpu_count: int, table: Mapping[str, Hardware] | None = None,
               host: Host | None = None) -> Host:
    """HOST (default: probed now) if it has GPU_COUNT GPUs of HARDWARE, else HardwareMismatch."""
    table = table if table is not None else load_hardware()
    if hardware not in table:
        raise HardwareMismatch(f"hardware {hardware!r} is not in the hardware table "
                               f"({', '.join(table)})")
    hw = table[hardware]
    host = host if host is not None else (probe() if hw.is_gpu else Host(()))
    if not hw.is_gpu:
        return host
    matching = [g for g in host.gpus if g.name in hw.gpu_names]
    if len(matching) < gpu_count:
        names = " or ".join(repr(n) for n in hw.gpu_names) or "(no gpu_names in the table)"
        raise HardwareMismatch(
            f"wanted {hardware_key(hardware, gpu_count)}: {gpu_count} x {names}; "
            f"found {host.describe()}")
    return host


def provenance(host: Host, hardware: str, gpu_count: int) -> dict[str, object]:
    """What the measurements ran on, to keep beside them."""
    gpu = host.gpus[0] if host.gpus else None
    return {"hardware": hardware_key(hardware, gpu_count),
            "gpu_name": gpu.name if gpu else None,
            "gpu_count": len(host.gpus),
            "gpu_memory_mib": gpu.memory_mib if gpu else None,
            "driver_version": gpu.driver if gpu else None,
            "cuda_version": host.cuda_version,
            "servecat_version": __version__}
