"""docs/spec/public-api.md and the app must agree (paths, statuses, error codes, limits,
headers, examples): the spec is tested like code, so it cannot drift."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from evault.config import DEFAULT_MAX_DOCUMENT_BYTES
from evault.gateway import api
from evault.gateway.errors_http import all_codes
from tests.unit.test_api_support import harness_at

SPEC_PATH = Path(__file__).parents[2] / "docs" / "spec" / "public-api.md"
SPEC = SPEC_PATH.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def openapi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with harness_at(tmp_path_factory.mktemp("spec")) as h, TestClient(h.app) as client:
        yield client.get("/openapi.json").json()


def spec_sections() -> dict[tuple[str, str], str]:
    """Each ``### `METHOD /path``` heading with the text up to the next heading."""
    parts = re.split(r"^### `([A-Z]+) (/\S+)`\s*$", SPEC, flags=re.M)
    return {(parts[i], parts[i + 1]): parts[i + 2] for i in range(1, len(parts), 3)}


def test_every_endpoint_is_specified_and_every_specified_one_exists(
    openapi: dict[str, Any],
) -> None:
    in_app = {(m.upper(), path) for path, ops in openapi["paths"].items() for m in ops}
    assert set(spec_sections()) == in_app


def test_each_endpoint_lists_exactly_its_status_codes(openapi: dict[str, Any]) -> None:
    for (method, path), text in spec_sections().items():
        match = re.search(r"^Status codes: (.+)\.$", text, flags=re.M)
        assert match, f"{method} {path}: no 'Status codes:' line"
        listed = re.findall(r"`(\d{3})`", match.group(1))
        declared = sorted(openapi["paths"][path][method.lower()]["responses"])
        assert listed == declared, f"{method} {path}"


def test_error_tables_match_the_code_table_exactly() -> None:
    rows = re.findall(r"^\| (\d{3}) \| `(\w+)` \|", SPEC, flags=re.M)
    documented = {code: int(status) for status, code in rows}
    assert len(documented) == len(rows), "a code is documented twice"
    assert documented == all_codes()


def test_limits_quoted_are_the_code_constants() -> None:
    assert f"| JSON request bodies | {api.MAX_JSON_BODY_BYTES // 1024} KiB |" in SPEC
    assert f"| {int(api.BODY_IDLE_TIMEOUT_S)} s without a byte |" in SPEC
    assert f"| token lifetime | {api.DEFAULT_TOKEN_TTL_S // 3600} h |" in SPEC
    assert f"Tokens live {api.DEFAULT_TOKEN_TTL_S // 3600} h" in SPEC
    assert f"| version numbers | 1 to {api.MAX_VERSION} |" in SPEC
    assert f"| {api.MAX_HEADER_REASON_CHARS} characters" in SPEC
    assert f"(default {DEFAULT_MAX_DOCUMENT_BYTES // 1024**3} GiB)" in SPEC
    for segment in api.RESERVED_LAST_SEGMENTS:
        assert f"`{segment}`" in SPEC


def test_every_header_is_specified() -> None:
    for name in dir(api):
        if name.startswith("HEADER_"):
            assert f"`{getattr(api, name)}`" in SPEC, name


def examples() -> list[tuple[str, Any]]:
    found = re.findall(r"<!-- example: (\w+) -->\n```json\n(.*?)\n```", SPEC, flags=re.S)
    return [(model, json.loads(text)) for model, text in found]


def test_there_are_examples() -> None:
    assert {m for m, _ in examples()} >= {"DepositOut", "ErrorResponse", "VaultOut", "UserCreate"}


@pytest.mark.parametrize(("model_name", "example"), examples(), ids=lambda v: str(v)[:20])
def test_examples_are_valid_for_their_models(model_name: str, example: Any) -> None:
    model = getattr(api, model_name)
    assert issubclass(model, BaseModel)
    parsed = model.model_validate(example)
    # No field of the example is unknown to the model (responses do not forbid extras).
    assert parsed.model_dump(exclude_unset=True).keys() == example.keys()
