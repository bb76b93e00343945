"""Schemathesis against the real server (uvicorn on loopback) from its own /openapi.json.

Every operation gets up to 25 generated requests with a valid key (plus the negative cases
schemathesis derives). Checks: never a 5xx, and every response matches the documented schema.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import response_schema_conformance

from ganft.settings import Settings

EXAMPLES = 25  # per operation and generation mode
CHECKS = [not_a_server_error, response_schema_conformance]


@pytest.fixture
def api_schema(
    make_live_server: Callable[..., str], make_key: Callable[[str], str], rel_settings: Settings
) -> tuple[schemathesis.BaseSchema, dict[str, str]]:
    url = make_live_server()
    return schemathesis.openapi.from_url(f"{url}/openapi.json"), {"Authorization": f"Bearer {make_key('fuzz')}"}


def test_api_never_errors_and_matches_its_schema(api_schema: tuple[schemathesis.BaseSchema, dict[str, str]]) -> None:
    """Tried: generated valid (positive) and invalid (negative) requests for each operation, with a
    valid key; the events stream is left out (it does not end for a live job).
    Expect: no 5xx, every response as the OpenAPI document says (status and body schema)."""
    schema, auth = api_schema
    results = list(schema.get_all_operations())
    assert all(isinstance(result, Ok) for result in results), results  # every operation's schema loads
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    operations = [op for op in operations if not op.path.endswith("/events")]
    assert len(operations) >= 15
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            @given(case=operation.as_strategy(generation_mode=mode))
            def fuzz(case: schemathesis.Case) -> None:
                case.call_and_validate(headers=auth, timeout=30, checks=CHECKS)

            try:
                fuzz()
            except Unsatisfiable:  # nothing to break: an operation without parameters or body
                assert mode == GenerationMode.NEGATIVE, operation.label
