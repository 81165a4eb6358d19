"""Browser tests: Debian's chromium, headless, driven by Playwright (sync API), against a real
local vault (n node processes and a gateway over TLS, from tests/integration/vault_fixtures).

One vault and one browser serve the whole module (a vault costs seconds to start).  The
browser trusts the gateway's own certificate by its public key
(``--ignore-certificate-errors-spki-list``), so pages load over verified HTTPS, a secure
context, which WebCrypto requires; nothing else is exempted from certificate checks.

When a test fails, a full-page screenshot of its page is saved in ``test-artifacts/``
(git-ignored) by the ``pytest_runtest_makereport`` hook below.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from evault.config import load_gateway_config
from tests.integration.vault_fixtures import LiveVault, VaultFactory, vault_factory

__all__ = ["vault_factory"]  # re-exported: the session-scoped fixture the vaults come from

playwright_sync = pytest.importorskip("playwright.sync_api")

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
PASSWORD = "correct horse battery staple"
#: Playwright's waits, in milliseconds: generous for a loaded CI box, small next to the budget.
TIMEOUT_MS = 20_000


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.when != "call" or not report.failed:
        return
    page = getattr(item, "funcargs", {}).get("page")
    if page is None or page.is_closed():
        return
    ARTIFACTS.mkdir(exist_ok=True)
    target = ARTIFACTS / (re.sub(r"[^A-Za-z0-9_.-]+", "_", item.nodeid) + ".png")
    try:
        page.screenshot(path=str(target), full_page=True)
    except Exception as exc:  # the test failed already; a missing screenshot must not hide it
        report.sections.append(("screenshot", f"could not save {target}: {exc}"))
    else:
        report.sections.append(("screenshot", f"saved {target}"))


def gateway_spki_sha256(vault: LiveVault) -> str:
    """Base64 SHA-256 of the gateway certificate's SubjectPublicKeyInfo (Chromium's pin form)."""
    config = load_gateway_config(vault.directory / "gateway" / "gateway.toml")
    cert = x509.load_pem_x509_certificate(config.server_cert.read_bytes())
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")


@pytest.fixture(scope="module")
def web_vault(vault_factory: VaultFactory, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A default (5, 3, 4) vault for this module's tests."""
    vault = vault_factory.start(tmp_path_factory.mktemp("web") / "vault")
    try:
        yield vault
    finally:
        vault.stop()


@pytest.fixture(scope="module")
def browser(web_vault: LiveVault) -> Any:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (make test installs Debian's chromium package)")
    with playwright_sync.sync_playwright() as p:
        instance = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                *CHROMIUM_ARGS,
                f"--ignore-certificate-errors-spki-list={gateway_spki_sha256(web_vault)}",
            ],
        )
        try:
            yield instance
        finally:
            instance.close()


def new_context(browser: Any, vault: LiveVault) -> Any:
    context = browser.new_context(base_url=vault.url, accept_downloads=True)
    context.set_default_timeout(TIMEOUT_MS)
    return context


@dataclass
class Account:
    user_id: str
    password: str
    context: Any  # a browser context holding the account's session cookie


def register_and_log_in(browser: Any, vault: LiveVault, user_id: str) -> Account:
    """The web UI's own flow: the registration form, then the log-in form."""
    context = new_context(browser, vault)
    page = context.new_page()
    try:
        page.goto("/register")
        page.get_by_label("User id").fill(user_id)
        page.get_by_label("Full name").fill(user_id.title())
        page.get_by_label("Contact").fill(f"{user_id}@example.org")
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_label("Password again").fill(PASSWORD)
        page.get_by_role("button", name="Register").click()
        page.wait_for_url("**/login?m=registered")
        page.get_by_label("User id").fill(user_id)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url("**/documents")
    finally:
        page.close()
    return Account(user_id, PASSWORD, context)


@pytest.fixture(scope="module")
def account(browser: Any, web_vault: LiveVault) -> Iterator[Account]:
    acc = register_and_log_in(browser, web_vault, "webuser")
    try:
        yield acc
    finally:
        acc.context.close()


@pytest.fixture
def page(account: Account) -> Iterator[Any]:
    """A new tab in the logged-in account's browser context."""
    tab = account.context.new_page()
    try:
        yield tab
    finally:
        tab.close()
