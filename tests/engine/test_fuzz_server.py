"""Property-based fuzzing of the inference server from its own OpenAPI schema (schemathesis):
every operation, valid and invalid bodies, against a live server on the tiny model. No answer
may be a 5xx, and every answer must have a declared status and content type.

Bounded for `make test` on 2 cores: a few dozen examples per operation, a 96-token context
(so no generation runs long), a generous read timeout (the cores are shared), no deadline, a
fixed seed, no example database.
"""

from __future__ import annotations

import pytest
import schemathesis
from engine_helpers import LiveServer, make_engine
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

FUZZ = settings(max_examples=30, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


def _openapi() -> dict:
    """The server's OpenAPI document, built once at collection time without a model."""
    from engine.server import make_app

    return make_app(None).openapi()


schema = schemathesis.openapi.from_dict(_openapi())


@pytest.fixture(scope="module")
def fuzz_server(tiny_model):
    with LiveServer(make_engine(tiny_model, max_model_len=96)) as live:
        yield live


@schema.parametrize()
@FUZZ
def test_no_input_breaks_the_server(case, fuzz_server):
    # A schema-valid body may still be refused (a prompt longer than the context, a model
    # name that is not served): those are 4xx by design, so positive acceptance is not checked.
    case.call_and_validate(base_url=fuzz_server.base_url, timeout=60,
                           excluded_checks=[positive_data_acceptance])
