"""Canonical bytes: canonical JSON (RFC 8785) and domain-tagged hashes."""

from evault.encoding.canonical import canonical_json, parse_canonical_json
from evault.encoding.tagged import TAGS, tagged_hash, tagged_hasher

__all__ = ["TAGS", "canonical_json", "parse_canonical_json", "tagged_hash", "tagged_hasher"]
