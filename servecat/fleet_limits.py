"""The run queue's limits from a fleet: one run per GPU of each type, one per provider quota
slot, rendered into the `concurrency:` block of a Dagster instance's `dagster.yaml`.

Dagster's tag limits count runs, not GPUs: a `servecat/hardware` limit of N GPUs lets N
one-GPU runs go at once, and a `servecat/hardware_key` limit keeps N // k the most k-GPU runs.
Runs of different GPU counts of one type can still ask for more GPUs than the fleet has; the
cluster holds those until GPUs free up (ECS PROVISIONING, a pending pod).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from servecat.fleet import REMOTE_ENGINES, ROOT, Fleet, load_fleet
from servecat.hardware import Hardware, load_hardware
from servecat.run_tags import HARDWARE_KEY_TAG, HARDWARE_TAG, QUOTA_TAG

BEGIN = "# >>> servecat fleet limits: generated from "
END = "# <<< servecat fleet limits"
_BLOCK = re.compile(rf"^{re.escape(BEGIN)}(?P<fleet>\S+).*?\n.*?^{re.escape(END)}[^\n]*\n?",
                    re.M | re.S)


@dataclass(frozen=True, slots=True)
class TagLimit:
    """At most LIMIT runs at once carry the tag KEY=VALUE."""

    key: str
    value: str
    limit: int


def tag_limits(fleet: Fleet, table: Mapping[str, Hardware]) -> list[TagLimit]:
    """Limits for every hardware type of TABLE (0 when the fleet has none) and every quota."""
    limits = []
    for name, hw in table.items():
        gpus = fleet.gpus(name)
        limits.append(TagLimit(HARDWARE_TAG, name, gpus))
        if hw.is_gpu:
            limits += [TagLimit(HARDWARE_KEY_TAG, f"{name}x{k}", gpus // k)
                       for k in hw.counts if k > 1]
    limits += [TagLimit(QUOTA_TAG, p, fleet.quotas.get(p, 0)) for p in REMOTE_ENGINES]
    return limits


# Room for runs without hardware (benchmark_matrix, benchmark_results, model_catalog), so they
# never wait behind a full fleet.
OTHER_RUNS = 4


def benchmark_slots(fleet: Fleet) -> int:
    """Benchmark runs at once: every GPU (machine for `cpu`) and every quota slot busy."""
    return sum(h.gpus for h in fleet.hardware.values()) + sum(fleet.quotas.values())


def render(fleet: Fleet, table: Mapping[str, Hardware], source: str) -> str:
    """The generated `concurrency:` block of a dagster.yaml, between its two marker lines."""
    slots = benchmark_slots(fleet)
    pool = fleet.pool_limit if fleet.pool_limit is not None else slots
    lines = [f"{BEGIN}{source} by `servecat fleet limits --write`; do not edit",
             "concurrency:",
             "  pools:",
             f"    default_limit: {pool}  # the `benchmark` pool of benchmark_runs"]
    if fleet.pool_granularity:
        lines.append(f"    granularity: {fleet.pool_granularity}")
    lines += ["  runs:", f"    max_concurrent_runs: {slots + OTHER_RUNS}",
              "    tag_concurrency_limits:"]
    lines += [f"      - {{key: {t.key}, value: {t.value}, limit: {t.limit}}}"
              for t in tag_limits(fleet, table)]
    return "\n".join([*lines, END]) + "\n"


def fleet_of(text: str, where: str) -> str:
    """The fleet file a dagster.yaml's generated block names."""
    match = _BLOCK.search(text)
    if match is None:
        raise ValueError(f"{where}: no generated block ('{BEGIN}<fleet file>' ... '{END}'): "
                         f"add those two lines where the concurrency limits go")
    return match["fleet"]


def regenerate(path: str | Path, table: Mapping[str, Hardware] | None = None) -> tuple[str, str]:
    """(current text, text with its generated block rebuilt from the fleet it names)."""
    path = Path(path)
    text = path.read_text()
    source = fleet_of(text, str(path))
    fleet_path = Path(source) if Path(source).is_absolute() else ROOT / source
    table = table if table is not None else load_hardware()
    block = render(load_fleet(fleet_path, table), table, source)
    return text, _BLOCK.sub(lambda _: block, text, count=1)
