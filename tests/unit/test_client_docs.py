"""docs/cli.md and the code agree: every command documented, the page contract, the examples."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path

import pytest

from evault.cli_client import COMMANDS
from evault.client import pages
from evault.client.config import parse_client_config
from evault.client.receipts import Receipt
from evault.errors import PageFormatError
from tests.unit.test_client_fakegateway import make_receipt

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
TEXT = DOC.read_text(encoding="utf-8")


def example(name: str) -> str:
    match = re.search(rf"<!-- example: {name} -->\n```\w+\n(.*?)\n```", TEXT, re.S)
    assert match, f"docs/cli.md has no example {name!r}"
    return match.group(1)


def contract_rows() -> list[tuple[str, str, str, bool]]:
    block = TEXT.split("<!-- page-contract:start -->")[1].split("<!-- page-contract:end -->")[0]
    rows = []
    for line in block.strip().splitlines()[2:]:
        page, element, _content, required = [c.strip() for c in line.strip("|").split("|")]
        tag, ident = re.fullmatch(r'`<(\w+) id="([\w-]+)">`', element).groups()  # type: ignore[union-attr]
        rows.append((page, tag, ident, required.startswith("yes")))
    return rows


def test_every_command_has_a_section() -> None:
    for command in COMMANDS:
        if command.name == "receipts":
            assert "### evault receipts export" in TEXT
        else:
            assert f"### evault {command.name}\n" in TEXT, command.name


def test_the_page_contract_table_names_the_ids_the_parser_reads() -> None:
    ids = {
        pages.ID_VAULT_KEY,
        pages.ID_STATEMENT,
        pages.ID_SIGNATURE,
        pages.ID_SHA256,
        pages.ID_DOCUMENT,
        pages.ID_DOCUMENT_NAME,
        pages.ID_DOCUMENT_VERSION,
    }
    assert {ident for _, _, ident, _ in contract_rows()} == ids


def full_pages() -> dict[str, dict[str, str]]:
    """A complete page of each kind: element id -> content."""
    statement, signature = make_receipt(data=b"foo")
    return {
        "registration": {
            pages.ID_VAULT_KEY: "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"
        },
        "deposit result": {
            pages.ID_STATEMENT: base64.b64encode(statement).decode(),
            pages.ID_SIGNATURE: base64.b64encode(signature).decode(),
            pages.ID_SHA256: hashlib.sha256(b"foo").hexdigest(),
        },
        "retrieval": {
            pages.ID_DOCUMENT: "Zm9v",
            pages.ID_DOCUMENT_NAME: "notes.txt",
            pages.ID_DOCUMENT_VERSION: "2",
        },
    }


PARSERS = {
    "registration": pages.key_from_registration_page,
    "deposit result": pages.receipt_from_deposit_page,
    "retrieval": pages.document_from_retrieval_page,
}


@pytest.mark.parametrize(("page", "tag", "ident", "required"), contract_rows())
def test_required_means_required_and_optional_means_optional(
    page: str, tag: str, ident: str, required: bool
) -> None:
    contents = full_pages()[page]
    html = "".join(f'<{tag} id="{i}">{c}</{tag}>' for i, c in contents.items() if i != ident)
    parse = PARSERS[page]
    if required:
        with pytest.raises(PageFormatError, match=ident):
            parse(html, page="p")
    else:
        parse(html, page="p")


def test_the_example_fragments_parse() -> None:
    key = pages.key_from_registration_page(example("registration-page"), page="doc")
    assert key.startswith(b"-----BEGIN PUBLIC KEY-----")
    found = pages.extract_elements(
        example("deposit-page"),
        [pages.ID_STATEMENT, pages.ID_SIGNATURE, pages.ID_SHA256],
        page="doc",
    )
    assert found[pages.ID_SHA256] == hashlib.sha256(b"foo").hexdigest()
    assert found[pages.ID_STATEMENT] and found[pages.ID_SIGNATURE]
    doc = pages.document_from_retrieval_page(example("retrieval-page"), page="doc")
    assert (doc.name, doc.version, doc.content) == ("notes.txt", 2, b"foo")


def test_the_receipt_file_example_has_the_fields_the_code_writes() -> None:
    doc = json.loads(example("receipt-file"))
    statement, signature = make_receipt()
    written = Receipt.from_parts(statement, signature).to_json_obj()
    assert set(doc) == set(written)
    assert doc["format"] == written["format"]


def test_the_configuration_example_parses() -> None:
    match = re.search(r"## Configuration.*?```toml\n(.*?)\n```", TEXT, re.S)
    assert match
    config = parse_client_config(match.group(1), source=Path("/etc/evault/client.toml"))
    assert config.gateways == ("https://127.0.0.1:8443", "https://backup-host:8443")
    assert config.ca_cert == Path("/etc/evault/client/ca.pem")
    assert (config.connect_timeout_s, config.timeout_s, config.user_id) == (5.0, 300.0, "alice")
