"""The web UI (gateway/web.py) against a fake vault service and a real SQLite catalog.

The pages are parsed with the minimal client's own parser (``evault.client.pages``), so the
HTML-id contract the CLI relies on is tested from the reader's side; receipts are checked
with ``cryptography``.  Browser behaviour (WebCrypto, the file picker) is in tests/browser.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from evault.client import pages
from evault.errors import AuthFailed, NotFound
from evault.gateway import web
from tests.unit.test_api_support import PASSWORD, Harness, harness_at, verify_receipt

BASE = "https://testserver"


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    with harness_at(tmp_path) as h:
        yield h


@pytest.fixture
def client(harness: Harness) -> Iterator[TestClient]:
    with TestClient(harness.app, base_url=BASE, follow_redirects=False) as c:
        yield c


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF field on the page"
    return match.group(1)


def form_token(client: TestClient, path: str = "/login") -> str:
    r = client.get(path)
    assert r.status_code == 200
    return csrf_of(r.text)


def register(client: TestClient, user_id: str = "alice", password: str = PASSWORD) -> None:
    r = client.post(
        "/register",
        data={
            "csrf_token": form_token(client, "/register"),
            "user_id": user_id,
            "name": "Alice Example",
            "contact": "alice@example.org",
            "password": password,
            "password_repeat": password,
        },
    )
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/login?m=registered"


def log_in(client: TestClient, user_id: str = "alice", password: str = PASSWORD) -> None:
    r = client.post(
        "/login",
        data={"csrf_token": form_token(client), "user_id": user_id, "password": password},
    )
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/documents"


@pytest.fixture
def alice(client: TestClient) -> TestClient:
    register(client)
    log_in(client)
    return client


def upload(
    client: TestClient, content: bytes, filename: str = "notes.txt", name: str = ""
) -> httpx.Response:
    token = csrf_of(client.get("/documents").text)
    return client.post(
        "/documents",
        data={"csrf_token": token, "name": name},
        files={"file": (filename, content, "application/octet-stream")},
    )


def assert_page(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["cache-control"] == "no-store"
    assert "Traceback" not in response.text
    return response.text


def error_message(html: str) -> str:
    match = re.search(r'<p id="error-message" role="alert">(.*?)</p>', html, re.S)
    assert match, "no error message on the page"
    return match.group(1)


# --- public pages ---------------------------------------------------------------------------


def test_landing_page_names_the_vault(client: TestClient, harness: Harness) -> None:
    html = assert_page(client.get("/"), 200)
    assert harness.settings.info.vault_id in html
    assert '<html lang="en">' in html
    assert 'href="/register"' in html and 'href="/login"' in html


def test_registration_page_shows_the_key_extractkey_reads(
    client: TestClient, harness: Harness
) -> None:
    html = assert_page(client.get("/register"), 200)
    pem = pages.key_from_registration_page(html, page="register.html")
    assert pem.decode("ascii").strip() == harness.settings.info.public_key_pem.strip()
    for field in ("user_id", "name", "contact", "password", "password_repeat"):
        assert f'<label for="{field}">' in html and f'id="{field}"' in html


def test_public_key_file(client: TestClient, harness: Harness) -> None:
    r = client.get("/vault-public.pem")
    assert r.status_code == 200
    assert r.text == harness.settings.info.public_key_pem
    assert "attachment" in r.headers["content-disposition"]


def test_static_script_and_style_are_served(client: TestClient) -> None:
    js = client.get("/static/evault.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert 'crypto.subtle.verify(\n        { name: "RSA-PSS", saltLength: 32 }' in js.text
    assert client.get("/static/evault.css").status_code == 200


def test_web_routes_stay_out_of_the_openapi_document(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert paths and all(p.startswith("/api/v1/") for p in paths)


# --- registration ---------------------------------------------------------------------------


def test_register_creates_the_user(client: TestClient, harness: Harness) -> None:
    register(client, "Carol")
    assert harness.catalog.get_user("carol").name == "Alice Example"
    html = assert_page(client.get("/login?m=registered"), 200)
    assert "Your account is ready" in html


@pytest.mark.parametrize(
    ("changes", "status", "expected"),
    [
        ({"password_repeat": "something else"}, 400, "The two passwords differ"),
        ({"user_id": "a"}, 400, "Bad user_id"),
        ({"password": "short", "password_repeat": "short"}, 400, "Password not accepted"),
    ],
)
def test_register_refusals_show_the_form_again(
    client: TestClient, changes: dict[str, str], status: int, expected: str
) -> None:
    fields = {
        "user_id": "dave",
        "name": "Dave",
        "contact": "d@x",
        "password": PASSWORD,
        "password_repeat": PASSWORD,
    }
    fields.update(changes)
    fields["csrf_token"] = form_token(client, "/register")
    html = assert_page(client.post("/register", data=fields), status)
    assert expected in html
    assert 'value="Dave"' in html  # what was typed is kept ...
    assert PASSWORD not in html  # ... except passwords


def test_register_twice_is_a_conflict(client: TestClient) -> None:
    register(client, "erin")
    r = client.post(
        "/register",
        data={
            "csrf_token": form_token(client, "/register"),
            "user_id": "ERIN",
            "name": "Other",
            "contact": "",
            "password": PASSWORD,
            "password_repeat": PASSWORD,
        },
    )
    assert "already taken" in assert_page(r, 409)


# --- CSRF -----------------------------------------------------------------------------------


def test_a_post_without_the_csrf_token_is_refused(client: TestClient, harness: Harness) -> None:
    client.get("/register")  # the browser has the cookie, the attacker's form lacks the field
    r = client.post(
        "/register",
        data={
            "user_id": "mallory",
            "name": "M",
            "contact": "",
            "password": PASSWORD,
            "password_repeat": PASSWORD,
        },
    )
    assert "Form refused" in assert_page(r, 403)
    with pytest.raises(NotFound, match="no user"):
        harness.catalog.get_user("mallory")


def test_a_post_with_a_wrong_token_or_a_foreign_origin_is_refused(client: TestClient) -> None:
    token = form_token(client)
    fields = {"user_id": "alice", "password": PASSWORD}
    r = client.post("/login", data={**fields, "csrf_token": token + "x"})
    assert_page(r, 403)
    token = form_token(client)
    r = client.post(
        "/login",
        data={**fields, "csrf_token": token},
        headers={"Origin": "https://evil.example"},
    )
    assert_page(r, 403)


def test_the_csrf_cookie_is_host_only_secure_strict(client: TestClient) -> None:
    client.cookies.clear()
    r = client.get("/login")
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{web.CSRF_COOKIE}=")
    for attribute in ("HttpOnly", "Path=/", "SameSite=strict", "Secure"):
        assert attribute.lower() in cookie.lower()
    assert "domain" not in cookie.lower()


# --- log-in and log-out ---------------------------------------------------------------------


def test_wrong_password_shows_the_login_page_with_one_message(client: TestClient) -> None:
    register(client)
    r = client.post(
        "/login",
        data={"csrf_token": form_token(client), "user_id": "alice", "password": "wrong password"},
    )
    html = assert_page(r, 401)
    assert html.count('role="alert"') == 1
    assert "Wrong user id or password." in html
    assert '<form method="post" action="/login"' in html
    assert 'value="alice"' in html and "wrong password" not in html
    assert web.SESSION_COOKIE not in r.headers.get("set-cookie", "")


def test_login_sets_a_session_cookie_holding_a_session_token(
    client: TestClient, harness: Harness
) -> None:
    register(client)
    r = client.post(
        "/login",
        data={"csrf_token": form_token(client), "user_id": "Alice", "password": PASSWORD},
    )
    assert r.status_code == 303
    cookies = r.headers.get_list("set-cookie")
    session = next(c for c in cookies if c.startswith(f"{web.SESSION_COOKIE}="))
    for attribute in ("HttpOnly", "Secure", "SameSite=lax", "Path=/"):
        assert attribute.lower() in session.lower()
    token = session.split(";", 1)[0].split("=", 1)[1]
    assert harness.catalog.resolve_token(token, kind="session") == "alice"
    # A new CSRF token comes with the session.
    assert any(c.startswith(f"{web.CSRF_COOKIE}=") for c in cookies)


def test_an_api_token_is_no_session(client: TestClient, harness: Harness) -> None:
    register(client)
    api_token = harness.catalog.issue_token("alice", 60, "api")
    client.cookies.set(web.SESSION_COOKIE, api_token)
    r = client.get("/documents")
    assert r.status_code == 303
    assert r.headers["location"] == "/login?m=expired"


def test_documents_need_a_session(client: TestClient) -> None:
    for path in (
        "/documents",
        "/documents/a/receipt",
        "/documents/a/download",
        "/documents/a/page",
    ):
        r = client.get(path)
        assert r.status_code == 303, path
        assert r.headers["location"] == "/login?m=expired"
    html = assert_page(client.get("/login?m=expired"), 200)
    assert "Your session has ended" in html


def test_logout_revokes_the_session(alice: TestClient) -> None:
    html = assert_page(alice.get("/logout"), 200)
    old = alice.cookies.get(web.SESSION_COOKIE)
    r = alice.post("/logout", data={"csrf_token": csrf_of(html)})
    assert r.status_code == 303 and r.headers["location"] == "/login?m=logged-out"
    assert alice.cookies.get(web.SESSION_COOKIE) is None
    alice.cookies.set(web.SESSION_COOKIE, str(old))
    assert alice.get("/documents").status_code == 303


# --- upload, listing, receipts --------------------------------------------------------------


def test_upload_gives_a_deposit_page_that_evault_verify_reads(
    alice: TestClient, harness: Harness
) -> None:
    content = b"the paper's minimal client, in 2026\n" * 3000  # > the 64 KiB JSON body cap
    html = assert_page(upload(alice, content, "notes.txt"), 201)
    found = pages.receipt_from_deposit_page(html, page="deposit.html")
    verify_receipt(harness.settings.info.public_key_pem, found.statement, found.signature)
    assert found.sha256 == hashlib.sha256(content).hexdigest()
    assert harness.service.blobs[("alice", "notes.txt", 1)] == content
    assert "version 1" in html


def test_listing_shows_documents_versions_and_links(alice: TestClient) -> None:
    upload(alice, b"one", "a.txt")
    upload(alice, b"two", "a.txt")
    upload(alice, b"three", "whatever.bin", name="folder/my file #1.txt")
    html = assert_page(alice.get("/documents"), 200)
    rows = re.findall(r'<tr data-document="([^"]+)" data-version="(\d+)">', html)
    assert rows == [("a.txt", "2"), ("a.txt", "1"), ("folder/my file #1.txt", "1")]
    assert 'href="/documents/folder/my%20file%20%231.txt/download?version=1"' in html
    assert 'href="/documents/a.txt/receipt?version=2"' in html
    r = alice.get("/documents/folder/my%20file%20%231.txt/download?version=1")
    assert r.status_code == 200 and r.content == b"three"


def test_empty_listing(alice: TestClient) -> None:
    html = assert_page(alice.get("/documents"), 200)
    assert 'id="no-documents"' in html
    assert 'type="file"' in html and 'enctype="multipart/form-data"' in html


def test_the_upload_form_puts_its_text_fields_before_the_file(alice: TestClient) -> None:
    html = alice.get("/documents").text
    form = html[html.index('id="upload-form"') : html.index("</form>", html.index("upload-form"))]
    assert form.index('name="csrf_token"') < form.index('name="name"') < form.index('name="file"')


def test_encrypted_versions_get_a_badge(alice: TestClient, harness: Harness) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"ciphertext"

    asyncio.run(
        harness.service.deposit(
            "alice", "secret.bin", body(), size=None, sha256=None, encrypted=True
        )
    )
    upload(alice, b"plain", "plain.txt")
    html = alice.get("/documents").text
    secret_row = re.search(r'<tr data-document="secret.bin".*?</tr>', html, re.S)
    plain_row = re.search(r'<tr data-document="plain.txt".*?</tr>', html, re.S)
    assert secret_row and plain_row
    assert 'class="badge encrypted">encrypted<' in secret_row.group(0)
    assert "encrypted" not in plain_row.group(0)


def test_download_is_byte_identical_attachment(alice: TestClient) -> None:
    content = bytes(range(256)) * 1000
    upload(alice, content, "data.bin", name="dir/Grüße.bin")
    r = alice.get("/documents/dir/Gr%C3%BC%C3%9Fe.bin/download")
    assert r.status_code == 200
    assert r.content == content
    assert r.headers["content-disposition"] == (
        "attachment; filename=\"Gr__e.bin\"; filename*=UTF-8''Gr%C3%BC%C3%9Fe.bin"
    )
    assert r.headers["content-length"] == str(len(content))


def test_retrieval_page_is_what_extractfile_reads(alice: TestClient) -> None:
    upload(alice, b"first", "doc.txt")
    upload(alice, b"second \x00\xff version", "doc.txt")
    html = assert_page(alice.get("/documents/doc.txt/page?version=2"), 200)
    found = pages.document_from_retrieval_page(html, page="page.html")
    assert (found.name, found.version, found.content) == ("doc.txt", 2, b"second \x00\xff version")
    found = pages.document_from_retrieval_page(
        alice.get("/documents/doc.txt/page").text, page="latest.html"
    )
    assert found.version == 2


def test_retrieval_page_refuses_big_documents_clearly(
    alice: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(web, "MAX_PAGE_DOCUMENT_BYTES", 10)
    upload(alice, b"eleven byte", "big.txt")
    html = assert_page(alice.get("/documents/big.txt/page"), 413)
    assert "download" in error_message(html).lower()


def test_receipt_page_shows_the_statement_and_the_receipt(
    alice: TestClient, harness: Harness
) -> None:
    content = b"receipt me"
    upload(alice, content, "r.txt")
    html = assert_page(alice.get("/documents/r.txt/receipt?version=1"), 200)
    found = pages.receipt_from_deposit_page(html, page="receipt.html")
    verify_receipt(harness.settings.info.public_key_pem, found.statement, found.signature)
    assert found.sha256 == hashlib.sha256(content).hexdigest()
    table = html[html.index('id="statement-fields"') :]
    for label, value in (
        ("Owner", "alice"),
        ("Document name", "r.txt"),
        ("Size (bytes)", "10"),
        ("SHA-256 of the document", hashlib.sha256(content).hexdigest()),
        ("Encrypted by the client", "no"),
    ):
        assert f'<th scope="row">{label}</th><td>{value}</td>' in table
    # The verifier comes pre-filled and the trust point is spelled out.
    for ident in ("paste-statement", "paste-signature", "paste-public-key"):
        assert f'id="{ident}"' in html
    assert 'id="verify-result"' in html and 'id="file-result"' in html
    assert "What this check trusts" in html
    assert '<script src="/static/evault.js' in html and "<script>" not in html


def test_verify_page_needs_no_login(client: TestClient) -> None:
    html = assert_page(client.get("/verify"), 200)
    assert '<textarea id="paste-statement" rows="5" spellcheck="false" autocomplete="off">' in html
    assert "BEGIN PUBLIC KEY" in html


# --- refusals -------------------------------------------------------------------------------


def test_upload_over_the_limit_is_a_413_page_and_stores_nothing(
    alice: TestClient, harness: Harness
) -> None:
    limit = harness.settings.max_document_bytes
    html = assert_page(upload(alice, b"x" * (limit + 1), "huge.bin"), 413)
    assert str(limit) in error_message(html)
    assert harness.catalog.list_documents("alice") == []
    # A declared length far over the limit is refused before reading.
    html = assert_page(upload(alice, b"x" * (limit + 2 * web.FORM_OVERHEAD_BYTES), "h.bin"), 413)
    assert harness.catalog.list_documents("alice") == []


def test_upload_without_a_file_is_400(alice: TestClient) -> None:
    token = csrf_of(alice.get("/documents").text)
    r = alice.post(
        "/documents",
        data={"csrf_token": token, "name": "x"},
        files={"file": ("", b"", "application/octet-stream")},
    )
    assert "choose a file" in error_message(assert_page(r, 400))


def test_upload_with_a_bad_name_is_400(alice: TestClient, harness: Harness) -> None:
    html = assert_page(upload(alice, b"x", "a.txt", name="a/../b"), 400)
    assert "document name" in error_message(html)
    assert harness.catalog.list_documents("alice") == []


def test_upload_without_csrf_is_refused_before_any_deposit(
    alice: TestClient, harness: Harness
) -> None:
    r = alice.post("/documents", files={"file": ("a.txt", b"data", "text/plain")})
    assert_page(r, 403)
    assert not [c for c in harness.service.calls if c[0] == "deposit"]


def test_a_truncated_upload_is_refused_and_not_listed(alice: TestClient, harness: Harness) -> None:
    token = csrf_of(alice.get("/documents").text)
    boundary = "xyzBOUNDARYxyz"
    body = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="csrf_token"\r\n\r\n'
        f"{token}\r\n"
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="cut.txt"\r\n'
        "Content-Type: text/plain\r\n\r\n"
        "only the first half of the file"
    ).encode()
    r = alice.post(
        "/documents",
        content=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert "ended before" in error_message(assert_page(r, 400))
    assert harness.catalog.list_documents("alice") == []


def test_fields_after_the_file_are_ignored(alice: TestClient, harness: Harness) -> None:
    token = csrf_of(alice.get("/documents").text)
    boundary = "b0undary"
    body = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="csrf_token"\r\n\r\n'
        f"{token}\r\n"
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="f.txt"\r\n\r\n'
        "body\r\n"
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="name"\r\n\r\n'
        "too-late.txt\r\n"
        f"--{boundary}--\r\n"
    ).encode()
    r = alice.post(
        "/documents",
        content=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert_page(r, 201)
    assert harness.service.blobs[("alice", "f.txt", 1)] == b"body"


def test_upload_that_is_not_multipart_is_400(alice: TestClient) -> None:
    r = alice.post("/documents", content=b"raw", headers={"Content-Type": "text/plain"})
    assert "multipart/form-data" in error_message(assert_page(r, 400))


def test_other_users_documents_are_not_there(alice: TestClient, harness: Harness) -> None:
    upload(alice, b"mine", "private.txt")
    harness.catalog.create_user("bob", PASSWORD, "Bob", "")
    alice.cookies.clear()
    log_in(alice, "bob")
    assert "private.txt" not in alice.get("/documents").text
    for suffix in ("receipt", "page", "download"):
        html = assert_page(alice.get(f"/documents/private.txt/{suffix}"), 404)
        assert "private.txt" in error_message(html)


@pytest.mark.parametrize("version", ["0", "x", "-1", "99999999999"])
def test_bad_version_is_a_400_page(alice: TestClient, version: str) -> None:
    upload(alice, b"v", "v.txt")
    html = assert_page(alice.get(f"/documents/v.txt/receipt?version={version}"), 400)
    assert "version" in error_message(html)


def test_missing_version_is_a_404_page(alice: TestClient) -> None:
    upload(alice, b"v", "v.txt")
    assert_page(alice.get("/documents/v.txt/receipt?version=7"), 404)


def test_unknown_paths_are_pages_for_browsers_and_json_for_programs(client: TestClient) -> None:
    html = assert_page(client.get("/nope", headers={"Accept": "text/html,*/*"}), 404)
    assert "Page not found" in html
    r = client.get("/nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_path"
    r = client.get("/api/v1/nope", headers={"Accept": "text/html"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_path"
    html = assert_page(client.put("/documents", headers={"Accept": "text/html"}), 405)
    assert "not allowed" in error_message(html)


def test_node_failures_are_pages_that_name_the_problem(alice: TestClient, harness: Harness) -> None:
    upload(alice, b"x" * 200_000, "c.bin")
    harness.service.corrupt_mid_stream = True
    # A failure before the first byte would be a page; mid-stream, the connection is cut.
    with pytest.raises(Exception, match="aborted"):
        alice.get("/documents/c.bin/download")


# --- pure helpers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "shown"),
    [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1536 * 1024, "1.5 MiB"), (2**40, "1.0 TiB")],
)
def test_human_size(size: int, shown: str) -> None:
    assert web.human_size(size) == shown


@pytest.mark.parametrize(
    ("name", "header"),
    [
        ("a.txt", "attachment; filename=\"a.txt\"; filename*=UTF-8''a.txt"),
        ("dir/x y.txt", "attachment; filename=\"x y.txt\"; filename*=UTF-8''x%20y.txt"),
        ('q"\\;.txt', "attachment; filename=\"q___.txt\"; filename*=UTF-8''q%22%5C%3B.txt"),
    ],
)
def test_attachment_disposition(name: str, header: str) -> None:
    assert web.attachment_disposition(name) == header


def test_statement_rows_cover_every_field(harness: Harness) -> None:
    harness.catalog.create_user("alice", PASSWORD, "Alice", "")

    async def body() -> AsyncIterator[bytes]:
        yield b"abc"

    outcome = asyncio.run(harness.service.deposit("alice", "s.txt", body(), size=None, sha256=None))
    rows = web.statement_rows(outcome.statement)
    assert (rows[0].label, rows[0].value) == ("Statement format", "evault.receipt-statement v1")
    assert [r.label for r in rows[1:]] == [label for _key, label in web._FIELD_LABELS]
    assert rows[3].value == "s.txt" and rows[5].value == "3"


def test_a_form_starlette_cannot_parse_is_a_400_page(client: TestClient) -> None:
    token = form_token(client)
    r = client.post(
        "/login",
        data={"csrf_token": token, "user_id": "alice"},
        files={"password": ("p.txt", b"secret", "text/plain")},
    )
    html = assert_page(r, 400)
    assert error_message(html)


# --- password -------------------------------------------------------------------------------


def test_password_page_needs_a_session(client: TestClient) -> None:
    r = client.get("/password")
    assert r.status_code == 303 and r.headers["location"] == "/login?m=expired"


def test_change_password_needs_the_current_one_and_renews_the_session(
    alice: TestClient, harness: Harness
) -> None:
    api_token = harness.catalog.issue_token("alice", 3600, "api")
    old_session = alice.cookies.get(web.SESSION_COOKIE)
    html = assert_page(alice.get("/password"), 200)
    assert 'href="/password"' in html  # in the menu

    def change(current: str, new: str, repeat: str | None = None) -> httpx.Response:
        token = csrf_of(alice.get("/password").text)
        return alice.post(
            "/password",
            data={
                "csrf_token": token,
                "password": current,
                "new_password": new,
                "new_password_repeat": new if repeat is None else repeat,
            },
        )

    assert "The current password is wrong." in assert_page(change("nope", "a new password"), 401)
    assert "differ" in assert_page(change(PASSWORD, "a new password", "another one"), 400)
    assert "at least 8" in assert_page(change(PASSWORD, "short"), 400)
    assert harness.catalog.authenticate("alice", PASSWORD) == "alice"  # nothing changed yet
    r = change(PASSWORD, "a new password")
    assert r.status_code == 303 and r.headers["location"] == "/password?m=changed"
    assert "Your password is changed" in assert_page(alice.get("/password?m=changed"), 200)
    assert alice.get("/documents").status_code == 200  # the new session
    for revoked in (api_token, str(old_session)):
        with pytest.raises(AuthFailed):
            harness.catalog.resolve_token(revoked)
    assert harness.catalog.authenticate("alice", "a new password") == "alice"
    r = alice.post("/password", data={"password": "a new password", "new_password": "x" * 9})
    assert r.status_code == 403  # no CSRF token: refused before anything is checked
