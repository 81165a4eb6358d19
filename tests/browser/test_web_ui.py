"""The web UI in a real browser against a real vault (issue 5's "Done when" for the web half).

Register, log in, upload through the form, see the document listed, download it byte-identical,
and check receipts and files in the page with WebCrypto: valid for a real receipt, invalid for
a tampered one or a foreign key; match for the right file, mismatch for another.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.browser.conftest import PASSWORD, Account, new_context, register_and_log_in
from tests.integration.vault_fixtures import LiveVault

pytestmark = [pytest.mark.browser, pytest.mark.integration]

#: Set to a path to keep a screenshot of the documents page (docs/screenshots/web-ui.png).
SCREENSHOT_ENV = "EVAULT_WEB_SCREENSHOT"


def vault_pem(vault: LiveVault) -> str:
    return (vault.directory / "client" / "vault-public.pem").read_text(encoding="ascii")


def verify_with_cryptography(pem: str, statement: bytes, signature: bytes) -> None:
    key = serialization.load_pem_public_key(pem.encode("ascii"))
    assert isinstance(key, rsa.RSAPublicKey)
    key.verify(
        signature,
        statement,
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
        hashes.SHA256(),
    )


def api_deposit(vault: LiveVault, account: Account, name: str, content: bytes) -> dict[str, Any]:
    """Deposit through the JSON API as the same user (independent of the upload form)."""
    r = vault.client.post(
        "/api/v1/tokens", json={"user_id": account.user_id, "password": account.password}
    )
    assert r.status_code == 201, r.text
    r = vault.client.put(
        f"/api/v1/documents/{quote(name, safe='/')}",
        content=content,
        headers={"Authorization": f"Bearer {r.json()['token']}"},
    )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def wait_result(page: Any, element_id: str, expected: str) -> str:
    """Wait until #element_id says ``expected`` (its data-result); return its text."""
    locator = page.locator(f"#{element_id}[data-result='{expected}']")
    locator.wait_for()
    text: str = locator.inner_text()
    assert text.startswith(expected)
    return text


@pytest.fixture(scope="module")
def deposited(web_vault: LiveVault, account: Account) -> dict[str, Any]:
    content = b"a receipt worth checking\n" + secrets.token_bytes(5000)
    body = api_deposit(web_vault, account, "reports/q3 summary.txt", content)
    return {"name": "reports/q3 summary.txt", "content": content, "body": body}


def test_register_shows_the_key_and_a_wrong_password_gets_one_message(
    browser: Any, web_vault: LiveVault
) -> None:
    context = new_context(browser, web_vault)
    page = context.new_page()
    try:
        response = page.goto("/register")
        assert response is not None and response.ok
        assert page.url.startswith("https://127.0.0.1:")
        # Verified HTTPS (the gateway's certificate is trusted by its key): a secure context.
        assert page.evaluate("window.isSecureContext") is True
        assert response.security_details() is not None
        shown = page.locator("pre#vault-public-key").inner_text()
        assert shown.strip() == vault_pem(web_vault).strip()

        page.get_by_label("User id").fill("walter")
        page.get_by_label("Full name").fill("Walter Example")
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_label("Password again").fill(PASSWORD)
        page.get_by_role("button", name="Register").click()
        page.wait_for_url("**/login?m=registered")
        assert "Your account is ready" in page.locator("#notice").inner_text()

        page.get_by_label("User id").fill("walter")
        page.get_by_label("Password").fill("not the password")
        page.get_by_role("button", name="Log in").click()
        assert page.locator("[role=alert]").all_inner_texts() == ["Wrong user id or password."]
        assert page.get_by_label("User id").input_value() == "walter"

        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url("**/documents")
        assert page.locator("#no-documents").is_visible()
        cookies = {c["name"]: c for c in context.cookies()}
        session = cookies["__Host-evault-session"]
        assert session["httpOnly"] and session["secure"] and session["sameSite"] == "Lax"
    finally:
        context.close()


def test_upload_through_the_form_list_and_download_byte_identical(
    page: Any, web_vault: LiveVault, tmp_path: Path
) -> None:
    original = tmp_path / "holiday plan.bin"
    content = secrets.token_bytes(300_000)  # over the 64 KiB cap on other form bodies
    original.write_bytes(content)

    page.goto("/documents")
    page.get_by_label("File (up to").set_input_files(str(original))
    page.get_by_role("button", name="Deposit").click()
    page.get_by_role("heading", name="Deposited").wait_for()

    sha256 = hashlib.sha256(content).hexdigest()
    assert page.locator("#receipt-sha256").inner_text() == sha256
    statement = base64.b64decode(page.locator("#receipt-statement").inner_text())
    signature = base64.b64decode(page.locator("#receipt-signature").inner_text())
    verify_with_cryptography(vault_pem(web_vault), statement, signature)
    facts = json.loads(statement)
    assert (facts["name"], facts["owner"], facts["size"]) == (
        "holiday plan.bin",
        "webuser",
        300_000,
    )

    page.goto("/documents")
    row = page.locator("tr[data-document='holiday plan.bin'][data-version='1']")
    assert row.is_visible()
    assert sha256.startswith(row.locator("code.hash").inner_text().rstrip("…"))
    with page.expect_download() as info:
        row.get_by_role("link", name="Download holiday plan.bin version 1").click()
    download = info.value
    assert download.suggested_filename == "holiday plan.bin"
    saved = tmp_path / "downloaded.bin"
    download.save_as(str(saved))
    assert saved.read_bytes() == content


def test_receipt_verifies_in_the_page_and_tampering_is_caught(
    page: Any, deposited: dict[str, Any]
) -> None:
    page.goto(f"/documents/{quote(deposited['name'])}/receipt?version=1")
    # The page checks the receipt it shows on load, with WebCrypto.
    text = wait_result(page, "verify-result", "valid")
    assert deposited["body"]["sha256"] in text
    assert page.locator("#verified-fields").is_visible()

    statement_b64 = page.locator("#paste-statement").input_value()
    statement = base64.b64decode(statement_b64)
    assert statement_b64.strip() == deposited["body"]["receipt"]["statement"]
    # One changed byte of the statement: its size of 5025 bytes becomes 6025.
    tampered = statement.replace(b'"size":5025', b'"size":6025')
    assert tampered != statement
    page.locator("#paste-statement").fill(base64.b64encode(tampered).decode("ascii"))
    page.get_by_role("button", name="Verify the receipt").click()
    wait_result(page, "verify-result", "invalid")
    assert page.locator("#verified-fields").is_hidden()

    page.locator("#paste-statement").fill(statement_b64)
    page.get_by_role("button", name="Verify the receipt").click()
    wait_result(page, "verify-result", "valid")

    signature = bytearray(base64.b64decode(page.locator("#paste-signature").input_value()))
    signature[-1] ^= 1
    page.locator("#paste-signature").fill(base64.b64encode(bytes(signature)).decode("ascii"))
    page.get_by_role("button", name="Verify the receipt").click()
    wait_result(page, "verify-result", "invalid")


def test_file_check_says_match_and_mismatch(
    page: Any, deposited: dict[str, Any], tmp_path: Path
) -> None:
    right = tmp_path / "right.txt"
    right.write_bytes(deposited["content"])
    wrong = tmp_path / "wrong.txt"
    wrong.write_bytes(deposited["content"][:-1] + b"?")
    page.goto(f"/documents/{quote(deposited['name'])}/receipt")
    wait_result(page, "verify-result", "valid")

    page.get_by_label("File to check").set_input_files(str(right))
    page.get_by_role("button", name="Check the file").click()
    wait_result(page, "file-result", "match")

    page.get_by_label("File to check").set_input_files(str(wrong))
    page.get_by_role("button", name="Check the file").click()
    text = wait_result(page, "file-result", "mismatch")
    assert deposited["body"]["sha256"] in text


def test_pasted_receipt_and_a_foreign_pinned_key(
    browser: Any, web_vault: LiveVault, deposited: dict[str, Any]
) -> None:
    """Verification that does not take the gateway's word for the key: on /verify (no log-in)
    a pasted receipt checks out with the key pinned at registration; a different pinned key
    is used instead of the served one, flagged, and the receipt fails against it."""
    receipt = deposited["body"]["receipt"]
    context = new_context(browser, web_vault)
    page = context.new_page()
    try:
        page.goto("/register")
        page.get_by_role("button", name="Remember this key in this browser").click()
        page.locator("#pin-result[data-result='pinned']").wait_for()

        page.goto("/verify")
        assert "remembered" in page.locator("#key-source").inner_text()
        page.get_by_label("Receipt statement (base64)").fill(receipt["statement"])
        page.get_by_label("Receipt signature (base64)").fill(receipt["signature"])
        page.get_by_role("button", name="Verify the receipt").click()
        wait_result(page, "verify-result", "valid")

        other = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
        other_pem = other.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")
        page.evaluate(
            "pem => localStorage.setItem('evault.pinned-vault-public-key', "
            "JSON.stringify({pem, pinnedAt: '2026-01-01T00:00:00Z'}))",
            other_pem,
        )
        page.reload()
        assert "differs" in page.locator("#key-source").inner_text()
        assert page.get_by_label("Vault public key (PEM)").input_value().strip() == (
            other_pem.strip()
        )
        page.get_by_label("Receipt statement (base64)").fill(receipt["statement"])
        page.get_by_label("Receipt signature (base64)").fill(receipt["signature"])
        page.get_by_role("button", name="Verify the receipt").click()
        wait_result(page, "verify-result", "invalid")
    finally:
        context.close()


def test_retrieval_page_and_error_pages(page: Any, deposited: dict[str, Any]) -> None:
    page.goto(f"/documents/{quote(deposited['name'])}/page?version=1")
    assert page.locator("#document-name").inner_text() == deposited["name"]
    assert base64.b64decode(page.locator("#document-base64").inner_text()) == deposited["content"]

    response = page.goto("/no/such/page")
    assert response is not None and response.status == 404
    assert page.get_by_role("heading", name="Page not found").is_visible()
    response = page.goto(f"/documents/{quote(deposited['name'])}/receipt?version=9")
    assert response is not None and response.status == 404
    assert "version 9" in page.locator("#error-message").inner_text()


def test_listing_shows_every_version_newest_first(
    page: Any, web_vault: LiveVault, account: Account, deposited: dict[str, Any]
) -> None:
    api_deposit(web_vault, account, deposited["name"], b"the revised summary\n")
    api_deposit(web_vault, account, "letters/to the bank.txt", b"Dear bank,\n")
    page.set_viewport_size({"width": 1100, "height": 720})
    page.goto("/documents")
    rows = page.locator("#documents tbody tr")
    listed = [
        (row.get_attribute("data-document"), row.get_attribute("data-version"))
        for row in rows.all()
    ]
    # (The upload test's document may be listed too; it sorts first.)
    assert [r for r in listed if r[0] != "holiday plan.bin"] == [
        ("letters/to the bank.txt", "1"),
        (deposited["name"], "2"),
        (deposited["name"], "1"),
    ]
    latest = page.locator(f"tr[data-document='{deposited['name']}'][data-version='2']")
    assert "latest" in latest.inner_text()
    if os.environ.get(SCREENSHOT_ENV):
        page.screenshot(path=os.environ[SCREENSHOT_ENV], full_page=True)


def test_change_password_in_the_browser(browser: Any, web_vault: LiveVault) -> None:
    account = register_and_log_in(browser, web_vault, "pwuser")
    page = account.context.new_page()
    try:
        page.goto("/documents")
        page.get_by_role("link", name="Password").click()
        page.wait_for_url("**/password")
        page.get_by_label("Current password").fill("not the password")
        page.get_by_label("New password", exact=True).fill("a new password here")
        page.get_by_label("New password again").fill("a new password here")
        page.get_by_role("button", name="Change the password").click()
        assert page.locator("[role=alert]").all_inner_texts() == ["The current password is wrong."]
        page.get_by_label("Current password").fill(PASSWORD)
        page.get_by_label("New password", exact=True).fill("a new password here")
        page.get_by_label("New password again").fill("a new password here")
        page.get_by_role("button", name="Change the password").click()
        page.wait_for_url("**/password?m=changed")
        assert "Your password is changed" in page.locator("#notice").inner_text()
        page.goto("/documents")  # this browser keeps a (new) session
        assert page.locator("#no-documents").is_visible()
        old = web_vault.client.post(
            "/api/v1/tokens", json={"user_id": "pwuser", "password": PASSWORD}
        )
        new = web_vault.client.post(
            "/api/v1/tokens", json={"user_id": "pwuser", "password": "a new password here"}
        )
        assert (old.status_code, new.status_code) == (401, 201)
    finally:
        page.close()
        account.context.close()
