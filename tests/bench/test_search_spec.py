"""The capacity-search load form: validation errors, and one matrix row per search."""

from __future__ import annotations

import copy

import pandas as pd
import pytest
from click.testing import CliRunner

from bench.matrix import REASON_KV, expand_file
from cli.main import main
from servecat.errors import SpecError
from tests.bench.test_matrix import BASE, write

SEARCH = {"search": "rate", "min": 0.5, "max": 64, "slo": ["interactive", "server"]}


def with_loads(*loads: dict) -> dict:
    spec = copy.deepcopy(BASE)
    spec["workloads"]["loads"] = list(loads)
    return spec


BAD = [
    ({**SEARCH, "rate": [1.0]}, "workloads.loads[0]: search: rate takes min and max, not "
                                "concurrency or rate lists"),
    ({"search": "rate", "max": 8, "slo": ["server"]}, "search: rate needs min (the load range)"),
    ({**SEARCH, "min": 64, "max": 8}, "search: rate: min 64 is not below max 8"),
    ({"search": "concurrency", "min": 1, "max": 64, "slo": ["server"]},
     "loads[0]: concurrency 64 is above requests"),
    ({"concurrency": [1, 64]}, "loads[0]: concurrency 64 is above requests"),
    ({**SEARCH, "search": "concurrency", "min": 1.5}, "search: concurrency needs an integer min"),
    ({**SEARCH, "slo": []}, "search: rate needs slo: the profiles whose capacity it brackets"),
    ({**SEARCH, "slo": ["server", "server"]}, "search: rate: slo names 'server' twice"),
    ({**SEARCH, "precision": 1.5}, "workloads.loads[0].precision: Input should be less than 1"),
    ({**SEARCH, "search": "latency"}, "workloads.loads[0].search: 'latency' is not one of"),
    ({"concurrency": [1], "min": 1, "slo": ["server"]},
     "workloads.loads[0]: min, slo: only for a capacity search (add `search: rate`"),
    ({**SEARCH, "slo": ["server", "chatty"]},
     "workloads.loads[0].slo[1]: unknown profile 'chatty' (profiles in"),
]


@pytest.mark.parametrize(("load", "message"), BAD, ids=[m.split(": ")[-1][:30] for _, m in BAD])
def test_bad_search_names_the_field(tmp_path, load, message):
    path = write(tmp_path, with_loads(load))
    with pytest.raises(SpecError) as err:
        expand_file(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value), str(err.value)


def test_a_search_is_one_row_beside_fixed_levels(tmp_path):
    spec = with_loads({"concurrency": [1, 8]}, SEARCH,
                      {"search": "concurrency", "min": 1, "max": 4096, "slo": ["interactive"],
                       "precision": 0.2})
    spec["workloads"]["requests"] = 4096  # a closed loop needs as many requests as it holds
    exp = expand_file(write(tmp_path, spec))
    first = exp.configs[exp.configs["deployment"] == exp.deployments[0]]
    # Sweep order: by kind, fixed levels first; the hash suffix dropped.
    assert first["workload_id"].str.rsplit("-", n=1).str[0].tolist() == [
        "chat-c1", "chat-c8", "chat-search-c1-4096", "chat-search-r0.5-64"]
    row = first.iloc[3]
    assert (row["load"], row["search_min"], row["search_max"], row["search_slo"],
            row["search_precision"]) == ("rate", 0.5, 64.0, "interactive,server", 0.1)
    assert row["search"] and pd.isna(row["rate"]) and pd.isna(row["probe_of"])
    # A concurrency search is sized for its max: 4096 sequences x the context fit nowhere
    # beyond max_num_seqs (64), so it is kept; the fixed levels' ids are unchanged by it.
    assert REASON_KV not in exp.pruned
    plain_spec = with_loads({"concurrency": [1, 8]})
    plain_spec["workloads"]["requests"] = 4096
    plain = expand_file(write(tmp_path, plain_spec, "plain.yaml"))
    assert set(plain.configs["config_id"]) <= set(exp.configs["config_id"])


def test_matrix_expand_counts_searches_and_their_probes(tmp_path):
    out = CliRunner().invoke(main, ["matrix", "expand", str(write(tmp_path, with_loads(SEARCH))),
                                    "--summary"])
    assert out.exit_code == 0, out.output
    # 6 deployments x 1 search; each at most 8 + 2 x 3 probes, against a 52-level grid.
    assert "6 of them capacity searches: probes chosen at run time, at most 84 in all " \
           "(fixed grids at the same precision: 312 levels)" in out.output
