"""Property-based fuzzing of the catalog API from its own OpenAPI schema (schemathesis 4):
every operation, valid and invalid input, against a live server over the synthetic catalog;
then /v1/recommend and /v1/curves with real names, so the numbers reach the sizing code.
No answer may be a 5xx, and every answer must have a declared status, content type and shape.

`positive_data_acceptance` is off: some rules span parameters (lengths or tokens, not both; a
cursor only with the query that issued it), which OpenAPI cannot say, so a request that fits
the schema may rightly answer 422.

Bounded for `make test` on 2 cores (about a minute): a few dozen examples per operation, no
deadline and no health checks (the server shares the cores, and generating from a large schema
is slow there), a fixed seed so a run is reproducible, and no example database (Hypothesis
still keeps caches under .hypothesis/, which git-ignores itself).
"""

from __future__ import annotations

import tempfile

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.catalog.conftest import REPO, SHARED_KEY

FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


def _openapi() -> dict:
    """The API's OpenAPI document, at collection time: it does not depend on the catalog, and
    schemathesis's fixture-based loader does not run on pytest 9 (it sets Node._nodeid)."""
    from catalog.api import create_app

    with tempfile.TemporaryDirectory() as root:
        return create_app(root, configs_dir=REPO / "configs").openapi()


schema = schemathesis.openapi.from_dict(_openapi())


@schema.parametrize()
@FUZZ
def test_every_answer_is_declared_and_none_is_a_server_error(case, shared_live):
    # With the key the body checks run too, not only the 401 in front of them.
    case.call_and_validate(base_url=shared_live.url, headers={"X-API-Key": SHARED_KEY},
                           excluded_checks=[positive_data_acceptance])


TRAFFIC = {"lengths", "input_tokens", "output_tokens"}
FILTERS = ("hardware", "engine", "quantization")
DEEP = settings(FUZZ, max_examples=100)


@DEEP
@given(data=st.data())
def test_recommend_and_curves_with_measured_names(data, shared_live, deployment_tables):
    # Generated names almost never exist, so the test above stops at the 404s; here model,
    # profile, traffic, filters and deployment are real (or left out) and the numbers (demand,
    # limits, tokens) are generated from the schema, so the sizing code runs on them.
    deployments = deployment_tables["deployments"]
    row = deployments.iloc[data.draw(st.integers(0, len(deployments) - 1), label="row")]
    if data.draw(st.booleans(), label="traffic by name"):
        fixed = {"lengths": row["lengths"]}
    else:
        tokens = st.floats(1, 100_000)
        fixed = {"input_tokens": data.draw(tokens), "output_tokens": data.draw(tokens)}
    for name in FILTERS:
        fixed[name] = data.draw(st.sampled_from([None, *deployments[name].astype(str).unique()]),
                                label=name)
    case = data.draw(schema["/v1/recommend"]["GET"].as_strategy(
        query={"model": row["model"], "profile": row["profile"], **fixed}))
    for name in TRAFFIC | set(FILTERS):  # the traffic given one way only: both earns a 422
        if name not in fixed or fixed[name] is None:
            case.query.pop(name, None)
    check(case, shared_live)
    lengths = data.draw(st.sampled_from([row["lengths"], None]), label="curve lengths")
    case = data.draw(schema["/v1/curves"]["GET"].as_strategy(
        query={"deployment": row["deployment"], "lengths": lengths}))
    if lengths is None:
        case.query.pop("lengths", None)
    check(case, shared_live)


def check(case, live) -> None:
    case.call_and_validate(base_url=live.url, excluded_checks=[positive_data_acceptance])
