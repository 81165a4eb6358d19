"""The internal protocol spec (docs/spec/node-protocol.md) and the code must agree."""

import re
from pathlib import Path

from evault.protocol import node_api

SPEC = (Path(__file__).parents[2] / "docs" / "spec" / "node-protocol.md").read_text()


def test_every_path_constant_is_specified() -> None:
    bare = SPEC
    for method in ("GET ", "PUT ", "POST ", "DELETE "):
        bare = bare.replace(method, "")
    for name in dir(node_api):
        if name.startswith("PATH_"):
            assert f"`{getattr(node_api, name).split('{')[0]}" in bare, name


def test_unwrap_endpoints_have_their_headings() -> None:
    assert f"#### `PUT {node_api.PATH_UNWRAP_KEYS}`" in SPEC
    assert f"#### `GET {node_api.PATH_UNWRAP_KEYS}`" in SPEC
    assert f"#### `POST {node_api.PATH_UNWRAP}`" in SPEC


def test_unwrap_limits_and_tags_match_constants() -> None:
    assert f"| unwrap keys per owner at one node | {node_api.MAX_UNWRAP_KEYS_PER_OWNER} |" in SPEC
    assert (
        f"| {node_api.UNWRAP_MAX_AGE_S} s (and at most {node_api.UNWRAP_MAX_SKEW_S} s "
        "in the future) |" in SPEC
    )
    assert node_api.OWNER_ID_TAG in SPEC
    assert node_api.KEY_CERTIFICATE_TYPE in SPEC


def test_every_header_is_specified() -> None:
    for name in dir(node_api):
        if name.startswith("HEADER_"):
            assert getattr(node_api, name) in SPEC, name


def test_error_table_matches_code_exactly() -> None:
    rows = re.findall(r"^\| (\d{3}) \| (\w+) \|", SPEC, flags=re.M)
    assert {code: int(status) for status, code in rows} == node_api.ERRORS


def test_limits_in_spec_match_constants() -> None:
    assert f"| {node_api.MAX_PROPOSAL_BYTES // 1024} KiB decoded |" in SPEC
    assert f"| {node_api.MAX_JSON_BODY_BYTES // 1024} KiB |" in SPEC
    assert f"| {int(node_api.BODY_IDLE_TIMEOUT_S)} s without a byte |" in SPEC
    assert f"| {node_api.CLOCK_SKEW_S} s |" in SPEC
    assert f"default {node_api.DEFAULT_MAX_OBJECT_BYTES // 1024**3} GiB" in SPEC
    assert node_api.OBJECT_ID_TAG in SPEC
    assert node_api.GATEWAY_CERT_CN in SPEC
