"""Unwrap keys, the key wrap, signed unwrap requests and partial unwraps (issue 6).

The fixtures play the whole cast in one process: a client with an identity key deals its
unwrap key 4-of-5 to five nodes (each with an X25519 key), sealed so the gateway that relays
the shares cannot read them; a ``Gateway`` test double holds everything the gateway sees.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import nacl.public
import nacl.signing
import pytest

from evault.crypto.feldman import (
    Dealing,
    FeldmanCommitments,
    KeyShare,
    NodeKeyShare,
    deal_unwrap_key,
    open_key_share,
    seal_dealing,
    seal_key_share,
    verify_key_share,
)
from evault.crypto.group import BASE, ORDER, base_mul, lagrange_at_zero, scalar_to_bytes
from evault.crypto.unwrap import (
    PARTIAL_UNWRAP_BYTES,
    WRAPPED_KEY_BYTES,
    Blinding,
    PartialUnwrap,
    UnwrapRequest,
    WrapContext,
    WrappedKey,
    blind,
    check_partial_unwraps,
    combine_partial_unwraps,
    make_unwrap_request,
    open_wrapped_key,
    partial_unwrap,
    peek_unwrap_request,
    recover_file_key,
    sign_unwrap_request,
    unwrap_file_key_with_secret,
    verify_partial_unwrap,
    verify_unwrap_request,
    wrap_file_key,
)
from evault.encoding import canonical_json
from evault.errors import (
    CryptoError,
    DecryptionError,
    FormatError,
    InvalidElement,
    InvalidKeyShare,
    InvalidPartialUnwrap,
    NotEnoughPartialUnwraps,
    NotEnoughShares,
    UnwrapRequestRejected,
)

VAULT, OWNER = "vault-1", "alice"
K, N = 4, 5
NOW = 1_700_000_000
CTX = WrapContext(VAULT, OWNER, "reports/q3.pdf", 7)
SECRET = 0x1234567890ABCDEF


@dataclass
class Cast:
    identity: nacl.signing.SigningKey
    node_keys: dict[int, nacl.public.PrivateKey]
    dealing: Dealing
    sealed: dict[int, bytes]
    shares: dict[int, NodeKeyShare]
    file_key: bytes
    wrapped: WrappedKey


@pytest.fixture(scope="module")
def cast() -> Cast:
    identity = nacl.signing.SigningKey(bytes(range(32)))
    node_keys = {i: nacl.public.PrivateKey(bytes([i]) * 32) for i in range(1, N + 1)}
    dealing = deal_unwrap_key(threshold=K, nodes=N, rng=os.urandom, secret=SECRET)
    sealed = seal_dealing(
        dealing,
        vault=VAULT,
        owner=OWNER,
        node_public_keys={i: bytes(k.public_key) for i, k in node_keys.items()},
        identity=identity,
    )
    shares = {
        i: open_key_share(
            sealed[i], node_private_key=node_keys[i], vault=VAULT, owner=OWNER, node_index=i
        )
        for i in node_keys
    }
    file_key = os.urandom(32)
    wrapped = WrappedKey.from_bytes(
        wrap_file_key(file_key, dealing.public_key, CTX, rng=os.urandom).to_bytes()
    )
    return Cast(identity, node_keys, dealing, sealed, shares, file_key, wrapped)


class ReplayCache:
    """The caller-side replay cache a node would keep (here: a set), counting look-ups."""

    def __init__(self) -> None:
        self.ids: set[bytes] = set()
        self.lookups = 0

    def __call__(self, request_id: bytes) -> bool:
        self.lookups += 1
        if request_id in self.ids:
            return True
        self.ids.add(request_id)
        return False


def _request(cast: Cast, *, node: int | None = None) -> tuple[Blinding, UnwrapRequest, bytes]:
    b = blind(cast.wrapped, rng=os.urandom)
    req = make_unwrap_request(b, vault=VAULT, owner=OWNER, issued_at=NOW, rng=os.urandom, node=node)
    return b, req, sign_unwrap_request(req, cast.identity)


def _answers(cast: Cast, signed: bytes, nodes: list[int]) -> list[PartialUnwrap]:
    out = []
    for i in nodes:
        req = verify_unwrap_request(
            signed, key_share=cast.shares[i], now=NOW, seen_before=ReplayCache()
        )
        wire = partial_unwrap(cast.shares[i], req, rng=os.urandom).to_bytes()
        out.append(PartialUnwrap.from_bytes(wire, node=i))
    return out


# -- Feldman dealing and sealing -------------------------------------------------------------


def test_dealing_shares_match_commitments_and_any_k_rebuild_x(cast: Cast) -> None:
    d = cast.dealing
    assert d.commitments.threshold == K and len(d.shares) == N
    assert d.public_key == base_mul(SECRET) == d.commitments.elements[0]
    for s in d.shares:
        verify_key_share(s, d.commitments)
        assert d.commitments.verification_key(s.index) == base_mul(s.value)
    for subset in ([1, 2, 3, 4], [2, 3, 4, 5], [1, 3, 4, 5]):
        x = sum(lagrange_at_zero(s.index, subset) * s.value for s in d.shares if s.index in subset)
        assert x % ORDER == SECRET


def test_a_wrong_share_fails_feldman_naming_the_node(cast: Cast) -> None:
    bad = KeyShare(3, (cast.dealing.shares[2].value + 1) % ORDER)
    with pytest.raises(InvalidKeyShare, match="node 3") as info:
        verify_key_share(bad, cast.dealing.commitments)
    assert info.value.node == 3


def test_share_values_stay_out_of_reprs(cast: Cast) -> None:
    for s in cast.dealing.shares:
        assert hex(s.value)[2:] not in repr(s)
        assert str(s.value) not in repr(s)
    assert str(cast.dealing.shares[0].value) not in repr(cast.dealing)
    assert str(cast.shares[1].share.value) not in repr(cast.shares[1])


def test_opened_share_carries_what_a_node_needs(cast: Cast) -> None:
    ks = cast.shares[2]
    assert ks.index == 2 and ks.threshold == K and ks.nodes == N
    assert ks.public_key == cast.dealing.public_key
    assert ks.identity_public_key == bytes(cast.identity.verify_key)
    assert ks.verification_key == base_mul(ks.share.value)
    again = NodeKeyShare.from_bytes(ks.to_bytes(), vault=VAULT, owner=OWNER, node_index=2)
    assert again == ks


def test_gateway_cannot_read_a_sealed_share(cast: Cast) -> None:
    for i, box in cast.sealed.items():
        share = cast.shares[i].share.value
        assert scalar_to_bytes(share) not in box
        assert scalar_to_bytes(share).hex().encode() not in box
    gateway_key = nacl.public.PrivateKey.generate()
    with pytest.raises(InvalidKeyShare, match="does not open"):
        open_key_share(
            cast.sealed[1], node_private_key=gateway_key, vault=VAULT, owner=OWNER, node_index=1
        )


def test_sealed_share_is_bound_to_vault_owner_and_node(cast: Cast) -> None:
    box, key = cast.sealed[2], cast.node_keys[2]
    with pytest.raises(InvalidKeyShare, match="another vault"):
        open_key_share(box, node_private_key=key, vault="other", owner=OWNER, node_index=2)
    with pytest.raises(InvalidKeyShare, match="another owner"):
        open_key_share(box, node_private_key=key, vault=VAULT, owner="mallory", node_index=2)
    with pytest.raises(InvalidKeyShare, match="addressed to node 2"):
        open_key_share(box, node_private_key=key, vault=VAULT, owner=OWNER, node_index=3)
    with pytest.raises(InvalidKeyShare, match="does not open"):
        open_key_share(cast.sealed[3], node_private_key=key, vault=VAULT, owner=OWNER, node_index=2)
    tampered = bytearray(box)
    tampered[-1] ^= 1
    with pytest.raises(InvalidKeyShare, match="does not open"):
        open_key_share(
            bytes(tampered), node_private_key=key, vault=VAULT, owner=OWNER, node_index=2
        )


def _record(cast: Cast, signer: nacl.signing.SigningKey, **changes: object) -> bytes:
    body: dict[str, object] = {
        "type": "evault/unwrap-key-share/v1",
        "vault": VAULT,
        "owner": OWNER,
        "node": 1,
        "nodes": N,
        "threshold": K,
        "commitments": cast.dealing.commitments.to_hex(),
        "share": scalar_to_bytes(cast.shares[1].share.value).hex(),
        "identity": bytes(cast.identity.verify_key).hex(),
    }
    body.update(changes)
    raw = canonical_json(body)
    return signer.sign(b"evault/unwrap-key-share/v1\x00" + raw).signature + raw


def test_record_checks(cast: Cast) -> None:
    def check(record: bytes) -> NodeKeyShare:
        return NodeKeyShare.from_bytes(record, vault=VAULT, owner=OWNER, node_index=1)

    assert check(_record(cast, cast.identity)) == cast.shares[1]
    other = nacl.signing.SigningKey.generate()
    with pytest.raises(InvalidKeyShare, match="not signed"):
        check(_record(cast, other))  # e.g. a gateway re-signing with its own key
    wrong = scalar_to_bytes((cast.shares[1].share.value + 1) % ORDER).hex()
    with pytest.raises(InvalidKeyShare, match="Feldman"):
        check(_record(cast, cast.identity, share=wrong))
    with pytest.raises(InvalidKeyShare, match="commitments"):
        check(_record(cast, cast.identity, commitments=cast.dealing.commitments.to_hex()[:2]))
    torsion = "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"
    with pytest.raises(InvalidElement):
        check(_record(cast, cast.identity, commitments=[torsion] * K))
    with pytest.raises(InvalidKeyShare, match="impossible"):
        check(_record(cast, cast.identity, threshold=N + 1))
    with pytest.raises(InvalidKeyShare, match="wrong type"):
        check(_record(cast, cast.identity, nodes="5"))
    with pytest.raises(InvalidKeyShare, match="unknown record type"):
        check(_record(cast, cast.identity, type="evault/unwrap-key-share/v2"))
    with pytest.raises(InvalidKeyShare, match="v1 fields"):
        check(_record(cast, cast.identity, extra=1))
    good = _record(cast, cast.identity)
    with pytest.raises(InvalidKeyShare, match="canonical"):
        check(good[:64] + good[64:].replace(b'"node":1', b'"node": 1'))
    with pytest.raises(InvalidKeyShare, match="length"):
        check(b"short")


def test_commitments_round_trip_and_validation(cast: Cast) -> None:
    c = cast.dealing.commitments
    assert FeldmanCommitments.from_bytes(c.to_bytes()) == c
    with pytest.raises(InvalidElement):
        FeldmanCommitments.from_bytes(c.to_bytes()[:-1])
    with pytest.raises(InvalidElement):
        FeldmanCommitments.from_bytes(bytes(32))


def test_dealing_argument_errors(cast: Cast) -> None:
    with pytest.raises(ValueError, match="threshold"):
        deal_unwrap_key(threshold=4, nodes=3, rng=os.urandom)
    with pytest.raises(ValueError, match="nodes"):
        deal_unwrap_key(threshold=1, nodes=0, rng=os.urandom)
    with pytest.raises(ValueError, match="secret"):
        deal_unwrap_key(threshold=1, nodes=1, rng=os.urandom, secret=ORDER)
    with pytest.raises(ValueError, match="node_public_keys"):
        seal_dealing(
            cast.dealing, vault=VAULT, owner=OWNER, node_public_keys={}, identity=cast.identity
        )
    with pytest.raises(ValueError, match="node_public_key"):
        seal_key_share(
            cast.dealing.shares[0],
            commitments=cast.dealing.commitments,
            vault=VAULT,
            owner=OWNER,
            nodes=N,
            node_public_key=b"short",
            identity=cast.identity,
        )


# -- the wrap --------------------------------------------------------------------------------


def test_wrap_round_trip_with_the_secret(cast: Cast) -> None:
    raw = cast.wrapped.to_bytes()
    assert len(raw) == WRAPPED_KEY_BYTES == 113 and raw[0] == 1
    assert raw[1:33] == cast.dealing.public_key.encoding
    assert unwrap_file_key_with_secret(cast.wrapped, SECRET, CTX) == cast.file_key
    assert cast.file_key not in raw


@pytest.mark.parametrize(
    "other",
    [
        WrapContext("vault-2", OWNER, CTX.name, CTX.version),
        WrapContext(VAULT, "bob", CTX.name, CTX.version),
        WrapContext(VAULT, OWNER, "reports/q4.pdf", CTX.version),
        WrapContext(VAULT, OWNER, CTX.name, CTX.version + 1),
    ],
)
def test_wrap_is_bound_to_its_context(cast: Cast, other: WrapContext) -> None:
    with pytest.raises(DecryptionError, match="does not open"):
        unwrap_file_key_with_secret(cast.wrapped, SECRET, other)


def test_tampered_or_malformed_wraps(cast: Cast) -> None:
    raw = bytearray(cast.wrapped.to_bytes())
    raw[-1] ^= 1
    with pytest.raises(DecryptionError):
        unwrap_file_key_with_secret(WrappedKey.from_bytes(bytes(raw)), SECRET, CTX)
    with pytest.raises(DecryptionError):
        unwrap_file_key_with_secret(cast.wrapped, SECRET + 1, CTX)
    with pytest.raises(FormatError, match="version"):
        WrappedKey.from_bytes(b"\x02" + cast.wrapped.to_bytes()[1:])
    with pytest.raises(FormatError, match="113"):
        WrappedKey.from_bytes(cast.wrapped.to_bytes()[:-1])
    small_order = bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f")
    with pytest.raises(InvalidElement, match="c1"):
        WrappedKey.from_bytes(cast.wrapped.to_bytes()[:33] + small_order + raw[65:])
    with pytest.raises(ValueError, match="version"):
        WrapContext(VAULT, OWNER, "x", -1)


# -- signed requests: the node-side check ------------------------------------------------------


def test_signed_request_is_accepted_once(cast: Cast) -> None:
    _, req, signed = _request(cast)
    cache = ReplayCache()
    got = verify_unwrap_request(signed, key_share=cast.shares[1], now=NOW + 5, seen_before=cache)
    assert got == req
    assert peek_unwrap_request(signed) == req
    with pytest.raises(UnwrapRequestRejected, match="replayed") as info:
        verify_unwrap_request(signed, key_share=cast.shares[1], now=NOW + 6, seen_before=cache)
    assert info.value.reason == "replayed"
    assert info.value.request_id == req.request_id.hex()


def test_unsigned_or_wrongly_signed_requests_are_rejected(cast: Cast) -> None:
    _, req, signed = _request(cast)
    cache = ReplayCache()
    gateway = nacl.signing.SigningKey.generate()
    forged = [
        bytes(64) + signed[64:],  # no signature
        sign_unwrap_request(req, gateway),  # signed by the gateway itself
        signed[:64] + signed[64:].replace(b'"issued_at":', b'"issued_at":1'),  # body edited
        signed[:64] + replace(req, node=2).to_bytes(),  # fields added after signing
    ]
    for bad in forged:
        with pytest.raises(UnwrapRequestRejected, match="bad_signature") as info:
            verify_unwrap_request(bad, key_share=cast.shares[1], now=NOW, seen_before=cache)
        assert info.value.reason == "bad_signature"
    assert cache.lookups == 0  # forgeries never reach (or fill) the replay cache


def test_freshness_window(cast: Cast) -> None:
    _, _, signed = _request(cast)

    def check(now: float) -> None:
        verify_unwrap_request(
            signed,
            key_share=cast.shares[1],
            now=now,
            seen_before=ReplayCache(),
            max_age_s=300,
            max_skew_s=60,
        )

    check(NOW + 300)
    check(NOW - 60)
    with pytest.raises(UnwrapRequestRejected, match="stale"):
        check(NOW + 301)
    with pytest.raises(UnwrapRequestRejected, match="from_future"):
        check(NOW - 61)


def test_request_must_match_the_nodes_share(cast: Cast) -> None:
    _, req, _ = _request(cast, node=2)
    signed = sign_unwrap_request(req, cast.identity)
    verify_unwrap_request(signed, key_share=cast.shares[2], now=NOW, seen_before=ReplayCache())
    cases = {
        "wrong_node": (signed, cast.shares[3]),
        "wrong_vault": (
            sign_unwrap_request(replace(req, vault="v2"), cast.identity),
            cast.shares[2],
        ),
        "wrong_owner": (
            sign_unwrap_request(replace(req, owner="bob"), cast.identity),
            cast.shares[2],
        ),
        "wrong_key": (
            sign_unwrap_request(replace(req, key_id=base_mul(5)), cast.identity),
            cast.shares[2],
        ),
    }
    for reason, (body, share) in cases.items():
        with pytest.raises(UnwrapRequestRejected) as info:
            verify_unwrap_request(body, key_share=share, now=NOW, seen_before=ReplayCache())
        assert info.value.reason == reason


def test_malformed_but_signed_requests(cast: Cast) -> None:
    def signed_body(body: bytes) -> bytes:
        return cast.identity.sign(b"evault/unwrap-request/v1\x00" + body).signature + body

    _, req, _ = _request(cast)
    good = req.to_bytes()
    small_order = "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"
    bodies = [
        good.replace(b'"c1":"', b'"c1": "'),  # not canonical
        good.replace(req.c1_blinded.hex().encode(), small_order.encode()),  # invalid point
        good.replace(b"evault/unwrap-request/v1", b"evault/unwrap-request/v9"),
        good.replace(req.request_id.hex().encode(), b"00"),  # id too short
        good.replace(b'"issued_at":', b'"issued_at":-'),
        b"[]",
    ]
    for body in bodies:
        with pytest.raises(UnwrapRequestRejected, match="malformed"):
            verify_unwrap_request(
                signed_body(body), key_share=cast.shares[1], now=NOW, seen_before=ReplayCache()
            )
    with pytest.raises(UnwrapRequestRejected, match="malformed"):
        peek_unwrap_request(b"x" * 10)


# -- partial unwraps and recovery -------------------------------------------------------------


def test_partial_unwrap_bytes_round_trip_and_validation(cast: Cast) -> None:
    _, req, _ = _request(cast)
    p = partial_unwrap(cast.shares[2], req, rng=os.urandom)
    raw = p.to_bytes()
    assert len(raw) == PARTIAL_UNWRAP_BYTES == 99
    assert PartialUnwrap.from_bytes(raw) == p
    with pytest.raises(InvalidPartialUnwrap, match="node 3") as info:
        PartialUnwrap.from_bytes(raw, node=3)  # node 3 sending node 2's answer
    assert info.value.node == 3
    with pytest.raises(InvalidPartialUnwrap, match="version"):
        PartialUnwrap.from_bytes(b"\x09" + raw[1:], node=2)
    small_order = bytes.fromhex("0000000000000000000000000000000000000000000000000000000000000000")
    with pytest.raises(InvalidPartialUnwrap, match="d is not a valid"):
        PartialUnwrap.from_bytes(raw[:3] + small_order + raw[35:], node=2)
    with pytest.raises(InvalidPartialUnwrap, match="reduced"):
        PartialUnwrap.from_bytes(raw[:67] + ORDER.to_bytes(32, "little"), node=2)


def test_proof_is_bound_to_node_and_request(cast: Cast) -> None:
    _, req, _ = _request(cast)
    p = partial_unwrap(cast.shares[2], req, rng=os.urandom)
    c = cast.dealing.commitments
    verify_partial_unwrap(p, commitments=c, request=req)
    with pytest.raises(InvalidPartialUnwrap, match="proof"):
        verify_partial_unwrap(replace(p, node=3), commitments=c, request=req)
    other = replace(req, request_id=os.urandom(16))
    with pytest.raises(InvalidPartialUnwrap, match="proof"):
        verify_partial_unwrap(p, commitments=c, request=other)
    with pytest.raises(InvalidPartialUnwrap, match="proof"):
        verify_partial_unwrap(replace(p, d=p.d + BASE), commitments=c, request=req)
    with pytest.raises(InvalidPartialUnwrap, match="proof"):
        verify_partial_unwrap(
            replace(p, response=(p.response + 1) % ORDER), commitments=c, request=req
        )


def test_recovery_with_t_nodes_down(cast: Cast) -> None:
    b, req, signed = _request(cast)
    for up in ([1, 2, 3, 4], [2, 3, 4, 5], [5, 1, 4, 2], [1, 2, 3, 4, 5]):
        got = recover_file_key(
            cast.wrapped,
            CTX,
            blinding=b,
            request=req,
            commitments=cast.dealing.commitments,
            partials=_answers(cast, signed, up),
        )
        assert got.file_key == cast.file_key
        assert got.used == tuple(sorted(up)[:K]) and not got.bad
        assert cast.file_key.hex() not in repr(got)


def test_two_nodes_down_is_not_enough(cast: Cast) -> None:
    b, req, signed = _request(cast)
    with pytest.raises(NotEnoughPartialUnwraps, match="need 4 valid partial unwraps, have 3") as e:
        recover_file_key(
            cast.wrapped,
            CTX,
            blinding=b,
            request=req,
            commitments=cast.dealing.commitments,
            partials=_answers(cast, signed, [1, 3, 5]),
        )
    assert (e.value.have, e.value.need) == (3, 4)
    assert isinstance(e.value, NotEnoughShares)


def test_a_lying_node_is_caught_excluded_and_named(cast: Cast) -> None:
    b, req, signed = _request(cast)
    answers = _answers(cast, signed, [1, 2, 3, 4, 5])
    answers[2] = replace(answers[2], d=answers[2].d + BASE)  # node 3 lies
    got = recover_file_key(
        cast.wrapped,
        CTX,
        blinding=b,
        request=req,
        commitments=cast.dealing.commitments,
        partials=answers,
    )
    assert got.file_key == cast.file_key
    assert got.used == (1, 2, 4, 5)
    assert set(got.bad) == {3} and "proof" in got.bad[3]
    # With a second node down the liar leaves too few: the error names it.
    with pytest.raises(NotEnoughPartialUnwraps, match="node 3") as info:
        combine_partial_unwraps(
            answers[:4], commitments=cast.dealing.commitments, request=req, blinding=b
        )
    assert info.value.bad == {3: got.bad[3]}


def test_two_different_answers_from_one_node_disqualify_it(cast: Cast) -> None:
    _, req, signed = _request(cast)
    answers = _answers(cast, signed, [1, 2])
    again = partial_unwrap(cast.shares[2], req, rng=os.urandom)  # valid, other proof nonce
    report = check_partial_unwraps(
        [*answers, answers[0], again], commitments=cast.dealing.commitments, request=req
    )
    assert set(report.valid) == {1} and set(report.bad) == {2}


def test_commitments_of_another_key_are_refused(cast: Cast) -> None:
    b, req, signed = _request(cast)
    other = deal_unwrap_key(threshold=K, nodes=N, rng=os.urandom).commitments
    with pytest.raises(CryptoError, match="another unwrap key"):
        combine_partial_unwraps(
            _answers(cast, signed, [1, 2, 3, 4]), commitments=other, request=req, blinding=b
        )


def test_paper_setting_n_of_n() -> None:
    # n = 3, k = 3 as in the paper's own deployment.
    identity = nacl.signing.SigningKey.generate()
    d = deal_unwrap_key(threshold=3, nodes=3, rng=os.urandom)
    shares = {
        s.index: NodeKeyShare(
            VAULT,
            OWNER,
            3,
            s,
            d.commitments,
            bytes(identity.verify_key),
            d.commitments.verification_key(s.index),
            b"",
        )
        for s in d.shares
    }
    key = os.urandom(32)
    wrapped = wrap_file_key(key, d.public_key, CTX, rng=os.urandom)
    b = blind(wrapped, rng=os.urandom)
    req = make_unwrap_request(b, vault=VAULT, owner=OWNER, issued_at=NOW, rng=os.urandom)
    partials = [partial_unwrap(shares[i], req, rng=os.urandom) for i in (3, 1, 2)]
    got = recover_file_key(
        wrapped, CTX, blinding=b, request=req, commitments=d.commitments, partials=partials
    )
    assert got.file_key == key and got.used == (1, 2, 3)


# -- what a malicious gateway can do ------------------------------------------------------------


def test_malicious_gateway_gets_nothing_usable(cast: Cast) -> None:
    """A gateway double with everything it relays: sealed shares, the wrap, the client's
    signed request and the nodes' answers."""
    b, _, signed = _request(cast)
    gateway_identity = nacl.signing.SigningKey.generate()
    cache = {i: ReplayCache() for i in cast.shares}

    # 1. Its own request for the unblinded c1, signed with its own key: every node refuses.
    own = UnwrapRequest(VAULT, OWNER, cast.wrapped.key_id, cast.wrapped.c1, os.urandom(16), NOW)
    for i, share in cast.shares.items():
        with pytest.raises(UnwrapRequestRejected, match="bad_signature"):
            verify_unwrap_request(
                sign_unwrap_request(own, gateway_identity),
                key_share=share,
                now=NOW,
                seen_before=cache[i],
            )

    # 2. It relays the client's request once, and sees the answers.
    seen_answers = []
    for i in (1, 2, 3, 4):
        r = verify_unwrap_request(signed, key_share=cast.shares[i], now=NOW, seen_before=cache[i])
        seen_answers.append(partial_unwrap(cast.shares[i], r, rng=os.urandom))

    # 3. A replay is refused by every node that served it.
    for i in (1, 2, 3, 4):
        with pytest.raises(UnwrapRequestRejected, match="replayed"):
            verify_unwrap_request(signed, key_share=cast.shares[i], now=NOW, seen_before=cache[i])

    # 4. Even combined, the answers are x·c1' = x·c1 + ρ·Y: without ρ the wrap stays shut.
    used = [1, 2, 3, 4]
    blinded = seen_answers[0].d * lagrange_at_zero(1, used)
    for p in seen_answers[1:]:
        blinded = blinded + lagrange_at_zero(p.node, used) * p.d
    with pytest.raises(DecryptionError):
        open_wrapped_key(cast.wrapped, blinded, CTX)
    # ... while the client, who knows ρ, opens it from the very same answers.
    assert open_wrapped_key(cast.wrapped, blinded - b.y_rho, CTX) == cast.file_key
    assert b.c1_blinded != cast.wrapped.c1
    assert blind(cast.wrapped, rng=os.urandom).c1_blinded != b.c1_blinded
