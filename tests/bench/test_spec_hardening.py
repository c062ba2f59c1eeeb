"""Hostile matrix specs: alias bombs, deep nesting, huge or non-finite numbers, huge grids, bad
bytes and bad --out paths give one short error naming file and field, never a traceback."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from bench.matrix import expand_file
from cli.main import main
from servecat.errors import SpecError
from tests.bench.test_matrix import BASE, write


def cli(*args: str):
    return CliRunner().invoke(main, ["matrix", "expand", *args])


def assert_one_line_error(result, *fragments: str) -> None:
    """A ClickException: exit 1, one `Error:` line, no traceback (the runner saw SystemExit)."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def alias_bomb(levels: int) -> str:
    """BASE with a 'billion laughs' in quantizations: 9**levels nodes from a few hundred bytes.
    The anchors sit in an unknown key, which pydantic reports after the quantizations error."""
    lines = ["bombs:", '  a0: &a0 ["l","l","l","l","l","l","l","l","l"]']
    lines += [f"  a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    spec = {k: v for k, v in BASE.items() if k != "quantizations"}
    return "\n".join(lines) + "\n" + yaml.safe_dump(spec) + f"quantizations: [*a{levels - 1}]\n"


def test_alias_bomb_is_refused_with_a_short_message(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb(6))  # 9**6 = 531,441 nodes: over the budget, yet safe for old code
    assert len(path.read_bytes()) < 1000
    with pytest.raises(SpecError) as err:
        expand_file(path)
    message = str(err.value)
    assert message.startswith(f"{path}: refused YAML: expands to more than") and len(message) < 400
    assert_one_line_error(cli(str(path)), "refused YAML")


def test_recursive_alias_and_deep_nesting_are_refused(tmp_path):
    recursive = tmp_path / "recursive.yaml"
    recursive.write_text("description: &x [1, *x]\n")
    deep = tmp_path / "deep.yaml"
    deep.write_text("description: " + "[" * 5000 + "]" * 5000 + "\n")
    assert_one_line_error(cli(str(recursive)), f"{recursive}: refused YAML: recursive alias *x")
    assert_one_line_error(cli(str(deep)), f"{deep}: refused YAML: nested deeper than 64 levels")


def test_a_few_aliases_still_work(tmp_path):
    path = tmp_path / "aliases.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in BASE.items() if k != "models"}) + """
models:
  - &first {id: org/a, name: a, parameters: 8.0e+9, layers: 32, kv_heads: 8, head_dim: 128}
  - <<: *first
    id: org/b
    name: b
""")
    exp = expand_file(path)
    assert set(exp.configs["model"]) == {"a", "b"} and len(exp.configs) == 36


def test_long_input_is_not_echoed_whole(tmp_path):
    spec = copy.deepcopy(BASE)
    spec["quantizations"] = ["q" * 100_000]
    path = write(tmp_path, spec)
    with pytest.raises(SpecError) as err:
        expand_file(path)
    assert "quantizations[0]: 'qqq" in str(err.value) and len(str(err.value)) < 600


@pytest.mark.parametrize(("mutate", "field", "why"), [
    (lambda s: s["workloads"]["loads"][1].update(rate=[float("nan")]),
     "workloads.loads[1].rate[0]", "must be a finite number, got nan"),
    (lambda s: s["workloads"]["loads"][1].update(rate=[float("inf")]),
     "workloads.loads[1].rate[0]", "must be a finite number, got inf"),
    (lambda s: s["models"][0].update(parameters=float("-inf")),
     "models[0].parameters", "must be a finite number, got -inf"),
    (lambda s: s["workloads"].update(requests=10**30),
     "workloads.requests", "integer 1000000000000000000000000000000 is too large"),
    (lambda s: s["workloads"]["loads"][0].update(concurrency=[1, 10**19]),
     "workloads.loads[0].concurrency[1]", "integer 10000000000000000000 is too large"),
    (lambda s: s["engines"][0]["args"].update(max_num_seqs=[2**70]),
     "engines[0].args.max_num_seqs[0]", f"integer {2**70} is too large"),
], ids=["nan-rate", "inf-rate", "inf-parameters", "huge-requests", "huge-concurrency",
        "huge-engine-arg"])
def test_huge_and_non_finite_numbers_name_the_field(tmp_path, mutate, field, why):
    spec = copy.deepcopy(BASE)
    mutate(spec)
    path = write(tmp_path, spec)
    with pytest.raises(SpecError) as err:
        expand_file(path)
    assert str(err.value).startswith(f"{path}: {field}: {why}")
    assert_one_line_error(cli(str(path), "--out", str(tmp_path / "m.parquet")), f"{field}: {why}")
    assert not (tmp_path / "m.parquet").exists()


def test_matrix_size_is_capped_before_expanding(tmp_path):
    from bench.matrix import count_configs
    from bench.spec import load_spec
    from servecat.hardware import load_hardware

    path = write(tmp_path, BASE)
    spec = load_spec(path)
    # Counted, not built: the count is exactly the expansion's candidates (24 here).
    assert count_configs(spec, load_hardware()) == (8, 3)
    assert expand_file(path).candidates == 24
    with pytest.raises(SpecError, match=r"the matrix has 24 configs \(8 deployments x 3 "
                                        r"workloads\), over the cap of 23"):
        expand_file(path, max_configs=23)
    # 2,197,000 deployments, all excluded at deployment level (so even code without the cap
    # gets through in seconds and with no memory): refused at once by the count.
    huge = copy.deepcopy(BASE)
    huge["hardware"] = [{"name": "h100", "counts": [1]}]
    huge["quantizations"] = ["bf16"]
    huge["engines"][0]["args"] = {"tensor_parallel_size": [1], **{
        k: list(range(1, 131)) for k in ("max_num_seqs", "a", "b")}}
    huge["workloads"]["loads"] = [{"concurrency": [1]}]
    huge["exclude"] = [{"engine": "vllm"}]
    big = write(tmp_path, huge, "huge.yaml")
    assert_one_line_error(cli(str(big)), f"{big}: the matrix has 2,197,000 configs",
                          "over the cap of 2,000,000")


def test_cli_file_errors_are_one_line(tmp_path):
    spec = write(tmp_path, BASE)
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(b"name: caf\xe9\n")
    assert_one_line_error(cli(str(latin1)), f"{latin1}: not UTF-8 text (byte 9)")
    assert_one_line_error(cli(str(tmp_path)), f"{tmp_path}: cannot read: Is a directory")
    assert_one_line_error(cli(str(tmp_path / "missing.yaml")), "cannot read: No such file")
    folder = tmp_path / "out"
    folder.mkdir()
    assert_one_line_error(cli(str(spec), "--out", str(folder)), f"--out {folder}: is a directory")
    under_a_file = Path(spec) / "m.parquet"
    assert_one_line_error(cli(str(spec), "--out", str(under_a_file)),
                          f"--out {under_a_file}: cannot write")
    ok = cli(str(spec), "--out", str(tmp_path / "m.parquet"))
    assert ok.exit_code == 0 and "wrote 18 configs" in ok.output
