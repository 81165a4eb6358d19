"""Receipt verification on the client: signature, fields, exported files, HTML pages."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from evault.client import pages
from evault.client.receipts import (
    Expected,
    Receipt,
    parse_vault_key,
    receipts_from_json,
    receipts_to_json,
    verify_receipt,
    verify_signature,
)
from evault.errors import FormatError, PageFormatError, ReceiptRejected
from tests.unit.test_client_fakegateway import (
    make_receipt,
    other_private_key,
    public_pem,
    vault_private_key,
)


def vault_key():  # type: ignore[no-untyped-def]
    return parse_vault_key(public_pem(vault_private_key()), source="vault.pem")


def receipt(**kwargs: object) -> Receipt:
    statement, signature = make_receipt(**kwargs)  # type: ignore[arg-type]
    return Receipt.from_parts(statement, signature)


def test_a_good_receipt_verifies_with_every_expected_field() -> None:
    r = receipt(owner="alice", name="a/b.c", version=3, data=b"content")
    verify_receipt(
        vault_key(),
        r,
        Expected(
            owner="alice",
            name="a/b.c",
            version=3,
            size=7,
            sha256=hashlib.sha256(b"content").hexdigest().upper(),
        ),
    )


def test_openssl_agrees_the_test_receipts_are_standard_rsa_pss(tmp_path: Path) -> None:
    statement, signature = make_receipt()
    (tmp_path / "s").write_bytes(statement)
    (tmp_path / "sig").write_bytes(signature)
    (tmp_path / "k.pem").write_bytes(public_pem(vault_private_key()))
    result = subprocess.run(
        ["openssl", "dgst", "-sha256", "-sigopt", "rsa_padding_mode:pss", "-sigopt",
         "rsa_pss_saltlen:32", "-verify", str(tmp_path / "k.pem"), "-signature",
         str(tmp_path / "sig"), str(tmp_path / "s")],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert "Verified OK" in result.stdout


def test_a_tampered_signature_is_rejected_in_one_sentence() -> None:
    statement, signature = make_receipt()
    bad = Receipt.from_parts(statement, bytes([signature[0] ^ 1]) + signature[1:])
    with pytest.raises(ReceiptRejected) as info:
        verify_signature(vault_key(), bad)
    assert "does not verify with the vault public key" in str(info.value)
    assert "\n" not in str(info.value)


def test_a_receipt_signed_by_another_key_is_rejected() -> None:
    r = receipt(key=other_private_key())
    with pytest.raises(ReceiptRejected):
        verify_signature(vault_key(), r)


def test_a_tampered_statement_is_rejected() -> None:
    statement, signature = make_receipt(data=b"abc")
    edited = statement.replace(b'"size":3', b'"size":4')
    assert edited != statement
    with pytest.raises(ReceiptRejected):
        verify_signature(vault_key(), Receipt.from_parts(edited, signature))


@pytest.mark.parametrize(
    ("expected", "field"),
    [
        (Expected(owner="bob"), "owner"),
        (Expected(name="other"), "name"),
        (Expected(version=2), "version"),
        (Expected(size=6), "size"),
        (Expected(sha256="00" * 32), "sha256"),
    ],
)
def test_a_valid_signature_over_another_statement_is_rejected(
    expected: Expected, field: str
) -> None:
    r = receipt(owner="alice", name="doc.txt", version=1, data=b"hello")
    with pytest.raises(ReceiptRejected, match=f"it signs {field}"):
        verify_receipt(vault_key(), r, expected)


def test_export_and_import_round_trip_one_and_many() -> None:
    one = receipt(name="a", data=b"1")
    two = receipt(name="b", data=b"22")
    assert receipts_from_json(receipts_to_json([one]), source="x") == [one]
    assert receipts_from_json(receipts_to_json([one, two]), source="x") == [one, two]
    doc = json.loads(receipts_to_json([one]))
    assert doc["format"] == "evault-receipt/v1" and doc["name"] == "a" and doc["size"] == 1


def test_an_exported_copy_whose_readable_fields_were_edited_is_refused() -> None:
    doc = json.loads(receipts_to_json([receipt(data=b"1")]))
    doc["sha256"] = "00" * 32
    with pytest.raises(FormatError, match="field 'sha256'"):
        receipts_from_json(json.dumps(doc), source="r.json")


@pytest.mark.parametrize(
    "text",
    ["not json", "[]", '{"statement": "!!", "signature": "AA=="}', '{"format": "other/v9"}'],
)
def test_malformed_receipt_files_are_format_errors(text: str) -> None:
    with pytest.raises(FormatError):
        receipts_from_json(text, source="r.json")


def test_a_key_that_is_not_rsa_pem_is_refused() -> None:
    with pytest.raises(FormatError):
        parse_vault_key(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", source="k")


def test_fingerprint_is_the_sha256_of_the_der_key() -> None:
    key = vault_key()
    assert len(key.fingerprint) == 64
    assert key.same_key(vault_key())
    assert not key.same_key(parse_vault_key(public_pem(other_private_key()), source="o"))


# --- pages (the minimal client's contract) ------------------------------------------------------


def test_elements_are_found_by_id_with_entities_decoded_and_markup_ignored() -> None:
    html = (
        "<html><body><p>Key:</p><pre id='vault-public-key'>-----BEGIN PUBLIC KEY-----\n"
        "AB&#43;CD<b>EF</b>\n-----END PUBLIC KEY-----</pre>"
        "<div><span id=document-name>a &amp; b.txt</span><br></div></body></html>"
    )
    found = pages.extract_elements(html, ["vault-public-key", "document-name", "absent"], page="p")
    assert found["vault-public-key"] == (
        "-----BEGIN PUBLIC KEY-----\nAB+CDEF\n-----END PUBLIC KEY-----"
    )
    assert found["document-name"] == "a & b.txt"
    assert "absent" not in found


def test_a_page_with_an_id_twice_is_refused() -> None:
    html = '<pre id="receipt-statement">AA==</pre><pre id="receipt-statement">AQ==</pre>'
    with pytest.raises(PageFormatError, match="more than once"):
        pages.extract_elements(html, ["receipt-statement"], page="dep.html")


def test_deposit_page_gives_the_receipt_bytes() -> None:
    statement, signature = make_receipt()
    html = (
        f'<pre id="receipt-statement">{base64.b64encode(statement).decode()}</pre>\n'
        f'<pre id="receipt-signature">\n{base64.encodebytes(signature).decode()}</pre>'
        f'<span id="receipt-sha256"> {"AB" * 32} </span>'
    )
    found = pages.receipt_from_deposit_page(html, page="p")
    assert found.statement == statement and found.signature == signature
    assert found.sha256 == "ab" * 32


def test_missing_pieces_name_the_element() -> None:
    with pytest.raises(PageFormatError, match="receipt-signature"):
        pages.receipt_from_deposit_page('<pre id="receipt-statement">AA==</pre>', page="p")
    with pytest.raises(PageFormatError, match="vault-public-key"):
        pages.key_from_registration_page("<html></html>", page="p")
    with pytest.raises(PageFormatError, match="not valid base64"):
        pages.document_from_retrieval_page(
            '<span id="document-name">x</span><pre id="document-base64">@@</pre>', page="p"
        )


def test_retrieval_page_with_an_empty_document_and_a_version() -> None:
    html = (
        '<span id="document-name">empty.txt</span><span id="document-version">4</span>'
        '<pre id="document-base64"></pre>'
    )
    found = pages.document_from_retrieval_page(html, page="p")
    assert (found.name, found.version, found.content) == ("empty.txt", 4, b"")
