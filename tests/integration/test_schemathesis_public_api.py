"""Fuzz the public API from its own OpenAPI document (schemathesis, stateless).

The app runs in-process (ASGI) over the fake vault service and a real SQLite catalog.
Every generated request is sent with a valid bearer token (the unauthenticated paths are
covered by tests/unit/test_api.py); schemathesis generates both valid and invalid data.
The checks: no 5xx ever, every status and body the app answers is one its OpenAPI
document declares, and invalid input is refused with a 4xx.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from evault.gateway.api import router
from tests.unit.test_api_support import PASSWORD, Harness, harness_at

#: Examples per operation; ten operations keep the whole run well under a minute.
MAX_EXAMPLES = 100
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Harness, dict[str, str]]]:
    with harness_at(tmp_path_factory.mktemp("fuzz"), max_document_bytes=64 * 1024) as h:
        with TestClient(h.app) as client:
            client.post(
                "/api/v1/users",
                json={"user_id": "fuzzer", "password": PASSWORD, "name": "Fuzz", "contact": ""},
            )
            token = client.post(
                "/api/v1/tokens", json={"user_id": "fuzzer", "password": PASSWORD}
            ).json()["token"]
            # Something to find: a document with two versions.
            for body in (b"one", b"two"):
                client.put(
                    "/api/v1/documents/doc.txt",
                    content=body,
                    headers={"Authorization": f"Bearer {token}"},
                )
        yield h, {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def api_schema(fuzzed: tuple[Harness, dict[str, str]]) -> Any:
    harness, _ = fuzzed
    return schemathesis.openapi.from_asgi("/openapi.json", harness.app)


def _operations() -> list[tuple[str, str]]:
    """(METHOD, OpenAPI path) of every route, read from the router (no app needed)."""
    found = []
    for route in router.routes:
        if isinstance(route, APIRoute):
            path = route.path_format
            found += [(method, path) for method in sorted(route.methods)]
    return sorted(found)


# schemathesis.pytest.from_fixture does not work with this pytest; the strategies are driven
# by Hypothesis directly instead, one test per operation and generation mode.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
@pytest.mark.parametrize(("method", "path"), _operations())
def test_no_server_errors_and_the_spec_holds(
    method: str,
    path: str,
    mode: GenerationMode,
    api_schema: Any,
    fuzzed: tuple[Harness, dict[str, str]],
) -> None:
    _, auth = fuzzed
    if (method, path) == ("DELETE", "/api/v1/tokens/current"):
        pytest.skip("log-out would revoke the shared token; tests/unit/test_api.py covers it")
    if mode == GenerationMode.NEGATIVE and (method, path) == ("GET", "/api/v1/vault"):
        pytest.skip("the operation takes no input, so there is no invalid input to send")
    operation = api_schema[path][method]
    calls = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def fuzz(case: Any) -> None:
        response = case.call_and_validate(headers=auth, checks=CHECKS)
        calls.append(response.status_code)

    fuzz()
    assert calls and all(status < 500 for status in calls)
