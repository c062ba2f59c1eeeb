"""Read a deployment key (`<model>-<hardware>x<gpus>-<engine>-<quantization>-<hash8>`, built by
`bench.matrix`) back into its parts, so a run's hardware is known from its partition alone."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from servecat.engines import ENGINES, QUANTIZATIONS

_TAIL = re.compile(rf"x(?P<gpus>\d+)-(?P<engine>{'|'.join(ENGINES)})-"
                   rf"(?P<quantization>{'|'.join(QUANTIZATIONS)})-(?P<hash>[0-9a-f]{{8}})$")


@dataclass(frozen=True, slots=True)
class DeploymentKey:
    """The parts of a deployment key."""

    key: str
    model: str  # the model's slug, as in the key
    hardware: str
    gpu_count: int
    engine: str
    quantization: str

    @property
    def hardware_key(self) -> str:
        return f"{self.hardware}x{self.gpu_count}"


def parse_deployment_key(key: str, hardware_names: Iterable[str]) -> DeploymentKey:
    """KEY's parts; the hardware is the longest name of HARDWARE_NAMES the key carries."""
    tail = _TAIL.search(key)
    if tail is None:
        raise ValueError(f"deployment key {key!r}: not <model>-<hardware>x<gpus>-<engine>-"
                         f"<quantization>-<hash8>")
    head = key[:tail.start()]  # "<model>-<hardware>"
    known = sorted(hardware_names)
    names = sorted((n for n in known if head.endswith(f"-{n}")), key=len, reverse=True)
    if not names:
        raise ValueError(f"deployment key {key!r}: no known hardware before "
                         f"'x{tail['gpus']}' (known: {', '.join(known)})")
    return DeploymentKey(key=key, model=head[:-len(names[0]) - 1], hardware=names[0],
                         gpu_count=int(tail["gpus"]), engine=tail["engine"],
                         quantization=tail["quantization"])
