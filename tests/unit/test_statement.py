import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from evault.errors import FormatError
from evault.protocol.node_api import Proposal, object_id
from evault.protocol.statement import Statement, format_time

FIELDS = dict(
    vault="0123456789abcdef0123456789abcdef",
    owner="alice",
    name="contracts/lease 2026.pdf",
    version=3,
    size=12345,
    sha256="a" * 64,
    fv_hash="b" * 64,
    fingerprint_scheme="sha256-merkle/v1",
    n=5,
    m=3,
    codec="rs-isal-cauchy/v1",
    segment_bytes=1 << 20,
    encrypted=False,
    deposited_at="2026-11-25T15:35:54Z",
)


def test_statement_bytes_are_canonical_and_round_trip() -> None:
    st = Statement(**FIELDS)
    raw = st.to_bytes()
    obj = json.loads(raw)
    assert list(obj) == sorted(obj)  # RFC 8785 orders keys
    assert obj["type"] == "evault.receipt-statement" and obj["v"] == 1
    assert b" " not in raw.replace(b"lease 2026", b"")
    assert Statement.from_bytes(raw) == st


@pytest.mark.parametrize(
    ("field", "value", "word"),
    [
        ("vault", "XYZ", "vault"),
        ("sha256", "A" * 64, "sha256"),
        ("version", 0, "version"),
        ("version", True, "version"),
        ("size", -1, "size"),
        ("m", 6, "n and m"),
        ("deposited_at", "2026-11-25 15:35:54", "deposited_at"),
        ("encrypted", 0, "encrypted"),
        ("name", "", "name"),
    ],
)
def test_invalid_fields_are_rejected_with_the_field_named(
    field: str, value: object, word: str
) -> None:
    with pytest.raises(FormatError, match=word):
        Statement(**{**FIELDS, field: value})  # type: ignore[arg-type]


def test_from_bytes_rejects_extra_missing_and_foreign_documents() -> None:
    obj = Statement(**FIELDS).to_json_obj()
    from evault.encoding import canonical_json

    with pytest.raises(FormatError, match="unexpected"):
        Statement.from_bytes(canonical_json({**obj, "evil": 1}))
    del obj["size"]
    with pytest.raises(FormatError, match="missing"):
        Statement.from_bytes(canonical_json(obj))
    with pytest.raises(FormatError, match="not a receipt statement"):
        Statement.from_bytes(canonical_json({"type": "x"}))
    with pytest.raises(FormatError, match="canonical"):
        Statement.from_bytes(json.dumps(Statement(**FIELDS).to_json_obj()).encode())


def test_format_time_is_utc_whole_seconds() -> None:
    t = datetime(2026, 11, 25, 16, 35, 54, 999, tzinfo=timezone(timedelta(hours=1)))
    assert format_time(t) == "2026-11-25T15:35:54Z"
    with pytest.raises(ValueError, match="moment"):
        format_time(datetime(2026, 1, 1))
    assert Statement(**FIELDS).deposited_at_datetime == datetime(
        2026, 11, 25, 15, 35, 54, tzinfo=UTC
    )


def test_proposal_header_round_trip_and_completion() -> None:
    p_fields = {k: v for k, v in FIELDS.items() if k not in ("size", "sha256", "fv_hash")}
    p = Proposal(**p_fields)  # type: ignore[arg-type]
    assert Proposal.from_header(p.to_header()) == p
    st = p.complete(size=1, sha256="c" * 64, fv_hash="d" * 64)
    assert st.size == 1 and st.owner == "alice"
    assert p.object_id() == object_id(FIELDS["vault"], "alice", FIELDS["name"], 3)  # type: ignore[arg-type]
    assert p.object_id() != object_id(FIELDS["vault"], "alice", FIELDS["name"], 4)  # type: ignore[arg-type]
    with pytest.raises(FormatError):
        Proposal.from_header("!!!")
    with pytest.raises(FormatError, match="vault"):
        Proposal.from_header(Proposal(**{**p_fields, "vault": "nothex"}).to_header())  # type: ignore[arg-type]
