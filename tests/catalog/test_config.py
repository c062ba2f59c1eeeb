from pathlib import Path

import pytest

from catalog.config import CRITERIA, ConfigError, load_hardware, load_profiles

REPO = Path(__file__).resolve().parents[2]


def test_repo_configs_load():
    profiles = load_profiles(REPO / "configs/profiles.yaml")
    assert {"interactive", "server", "offline", "cost-saver"} <= {p.name for p in profiles}
    for p in profiles:
        assert set(p.weights) <= set(CRITERIA) and p.ttft_p99_ms > 0 and p.tpot_p99_ms > 0
    hardware = load_hardware(REPO / "configs/hardware.yaml")
    h100 = next(h for h in hardware if h.name == "h100")
    assert h100.on_demand_usd_per_hour > h100.spot_usd_per_hour > 0


@pytest.mark.parametrize("body, message", [
    ("profiles:\n  - name: a\n    slo: {ttft_p99_ms: 1, tpot_p99_ms: 1}\n    weights: {speed: 1}\n",
     "profiles[0].weights.speed: unknown criterion"),
    ("profiles:\n  - name: a\n    slo: {ttft_p99_ms: -5, tpot_p99_ms: 1}\n    weights: {ttft_p99_ms: 1}\n",
     "profiles[0].slo.ttft_p99_ms: -5 is not a positive number"),
    ("profiles:\n  - name: a\n    weights: {ttft_p99_ms: 1}\n", "profiles[0].slo: expected a mapping"),
    ("profiles:\n  - name: a\n    slo: {ttft_p99_ms: 1, tpot_p99_ms: 1}\n    weights: {ttft_p99_ms: 0}\n",
     "profiles[0].weights: all weights are 0"),
    ("profiles:\n  - {name: a, slo: {ttft_p99_ms: 1, tpot_p99_ms: 1}, weights: {ttft_p99_ms: 1}}\n"
     "  - {name: a, slo: {ttft_p99_ms: 1, tpot_p99_ms: 1}, weights: {ttft_p99_ms: 1}}\n",
     "profiles[1].name: 'a' appears twice"),
    ("profiles: [\n", "malformed YAML"),
    ("other: 1\n", "profiles: expected a non-empty list"),
])
def test_profile_errors_name_file_and_field(tmp_path, body, message):
    path = tmp_path / "profiles.yaml"
    path.write_text(body)
    with pytest.raises(ConfigError) as err:
        load_profiles(path)
    assert str(path) in str(err.value) and message in str(err.value)


FULL = ("{name: x, memory_gb: 80, memory_bandwidth_gbps: 3350, peak_bf16_tflops: 989, "
        "counts: [1], on_demand_usd_per_hour: 1, on_demand_source: s, on_demand_date: d, "
        "spot_usd_per_hour: 1, spot_source: s, spot_date: d}")


@pytest.mark.parametrize("body, message", [
    ("hardware:\n  - " + FULL.replace("on_demand_usd_per_hour: 1", "on_demand_usd_per_hour: -1"),
     "hardware[0].on_demand_usd_per_hour: Input should be greater than or equal to 0"),
    ("hardware:\n  - " + FULL.replace("spot_usd_per_hour: 1, ", ""),
     "hardware[0].spot_usd_per_hour: required field is missing"),
    ("hardware:\n  - " + FULL.replace("name: x, ", ""), "hardware[0].name"),
    ("hardware:\n  - " + FULL.replace("counts: [1]", "counts: [0]"), "hardware[0].counts"),
    ("hardware:\n  - " + FULL + "\n  - " + FULL, "hardware[1].name: 'x' appears twice"),
])
def test_hardware_errors_name_file_and_field(tmp_path, body, message):
    path = tmp_path / "hardware.yaml"
    path.write_text(body)
    with pytest.raises(ConfigError) as err:
        load_hardware(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_profiles(tmp_path / "nope.yaml")
