"""Canonical JSON: RFC 8785 (JSON Canonicalization Scheme).

A signed statement must have exactly one byte form, so every party (client, gateway, each
node) that rebuilds it gets the same bytes.  We use the ``rfc8785`` library for the encoding
and add the check that a received byte string *is* canonical: parsing then re-encoding must
give the same bytes, otherwise the statement is rejected (two byte forms of one meaning are a
classic source of signature confusion).
"""

from __future__ import annotations

import json
from typing import Any

import rfc8785

from evault.errors import FormatError

#: Upper bound on a canonical document we are willing to parse (statements are ~1 KiB).
MAX_CANONICAL_BYTES = 64 * 1024


def canonical_json(value: Any) -> bytes:
    """Encode ``value`` (dicts, lists, str, int, bool, None) as RFC 8785 canonical JSON."""
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise ValueError(f"value: cannot be canonicalised: {exc}") from exc


def parse_canonical_json(data: bytes, *, max_bytes: int = MAX_CANONICAL_BYTES) -> Any:
    """Parse ``data`` and verify it is in canonical form; raise ``FormatError`` otherwise."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError("data: expected bytes")
    raw = bytes(data)
    if len(raw) > max_bytes:
        raise FormatError(f"canonical JSON is {len(raw)} bytes, over the limit of {max_bytes}")
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"not valid JSON: {exc}") from exc
    try:
        again = rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, ValueError) as exc:
        raise FormatError(f"JSON cannot be canonicalised: {exc}") from exc
    if again != raw:
        raise FormatError("JSON is not in RFC 8785 canonical form")
    return value
