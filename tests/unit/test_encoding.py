import hashlib

import pytest

from evault.encoding import canonical_json, parse_canonical_json, tagged_hash
from evault.errors import FormatError


def test_canonical_json_sorts_keys_and_strips_space() -> None:
    assert (
        canonical_json({"b": 1, "a": [True, None, "é"]}) == '{"a":[true,null,"é"],"b":1}'.encode()
    )


def test_rfc8785_number_vector() -> None:
    # RFC 8785 §3.2.2.3: numbers are serialised as ECMAScript does.
    assert (
        canonical_json([1e21, 1e-7, -0.0, 333333333.3333333]) == b"[1e+21,1e-7,0,333333333.3333333]"
    )


def test_parse_rejects_non_canonical_forms() -> None:
    assert parse_canonical_json(b'{"a":1,"b":2}') == {"a": 1, "b": 2}
    with pytest.raises(FormatError, match="canonical"):
        parse_canonical_json(b'{"b":2,"a":1}')
    with pytest.raises(FormatError, match="canonical"):
        parse_canonical_json(b'{"a": 1}')
    with pytest.raises(FormatError, match="JSON"):
        parse_canonical_json(b"{not json")
    with pytest.raises(FormatError, match="limit"):
        parse_canonical_json(b"[" + b"1," * 40000 + b"1]")


def test_tagged_hash_matches_its_definition_and_separates_domains() -> None:
    t = hashlib.sha256(b"evault/x/v1").digest()
    assert tagged_hash("evault/x/v1", b"abc") == hashlib.sha256(t + t + b"abc").digest()
    assert tagged_hash("evault/x/v1", b"abc") != tagged_hash("evault/y/v1", b"abc")
    assert tagged_hash("evault/x/v1", [b"a", b"bc"]) == tagged_hash("evault/x/v1", b"abc")
    with pytest.raises(ValueError, match="tag"):
        tagged_hash("", b"")
