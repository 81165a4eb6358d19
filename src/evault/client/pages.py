"""The minimal client's page contract (paper §2.3.1): machine-readable data in web UI pages.

The paper's minimal client uses a browser; three small programs then work on the pages it
saved: ``extractkey`` takes the vault's public key from the registration page, ``verify``
checks the receipt on a deposit's result page, ``extractfile`` takes a retrieved document out
of its page.  The web UI embeds the data in elements with these ids (``docs/cli.md``):

======================  ======================  ==========================================
page                    element                 content
======================  ======================  ==========================================
registration            ``pre#vault-public-key``  the vault public key, PEM
deposit result          ``pre#receipt-statement`` base64 of the exact signed statement bytes
deposit result          ``pre#receipt-signature`` base64 of the RSA-PSS signature
deposit result          ``span#receipt-sha256``   hex SHA-256 of the document (for people)
retrieval               ``pre#document-base64``   the document's bytes, base64
retrieval               ``span#document-name``    the document's name
retrieval (optional)    ``span#document-version`` its version number
======================  ======================  ==========================================

Parsing uses the standard library's :mod:`html.parser` (character references decoded, markup
inside an element ignored, its text kept).  An id that appears twice is an error: a page
that could say two things must not be trusted to say either.  This module is pure: it takes
the page's text and returns what it found.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Final

from evault.errors import PageFormatError

ID_VAULT_KEY: Final = "vault-public-key"
ID_STATEMENT: Final = "receipt-statement"
ID_SIGNATURE: Final = "receipt-signature"
ID_SHA256: Final = "receipt-sha256"
ID_DOCUMENT: Final = "document-base64"
ID_DOCUMENT_NAME: Final = "document-name"
ID_DOCUMENT_VERSION: Final = "document-version"

# Elements that never have content or an end tag; they must not be counted as open.
_VOID: Final = frozenset(
    (
        "area",
        "base",
        "br",
        "col",
        "embed",
        "hr",
        "img",
        "input",
        "link",
        "meta",
        "param",
        "source",
        "track",
        "wbr",
    )
)


class _IdTextParser(HTMLParser):
    def __init__(self, wanted: frozenset[str]) -> None:
        super().__init__(convert_charrefs=True)
        self.wanted = wanted
        self.found: dict[str, list[str]] = {}
        self.counts: dict[str, int] = {}
        # Open elements we are collecting text for: (id, tag, nesting depth of that tag).
        self._open: list[tuple[str, str, int]] = []
        self._depth: dict[str, int] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _VOID:
            return
        self._depth[tag] = self._depth.get(tag, 0) + 1
        ident = dict(attrs).get("id")
        if ident is not None and ident in self.wanted:
            self.counts[ident] = self.counts.get(ident, 0) + 1
            self.found.setdefault(ident, [])
            self._open.append((ident, tag, self._depth[tag]))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        ident = dict(attrs).get("id")
        if ident is not None and ident in self.wanted:
            self.counts[ident] = self.counts.get(ident, 0) + 1
            self.found.setdefault(ident, [])

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID or not self._depth.get(tag):
            return
        depth = self._depth[tag]
        while self._open and self._open[-1][1] == tag and self._open[-1][2] == depth:
            self._open.pop()
        self._depth[tag] = depth - 1

    def handle_data(self, data: str) -> None:
        for ident, _tag, _depth in self._open:
            self.found[ident].append(data)


def extract_elements(html: str, ids: Iterable[str], *, page: str) -> dict[str, str]:
    """The text inside each element whose id is in ``ids`` (absent ids are left out).

    Raises PageFormatError naming ``page`` if a wanted id appears more than once.
    """
    wanted = frozenset(ids)
    parser = _IdTextParser(wanted)
    parser.feed(html)
    parser.close()
    twice = sorted(i for i, n in parser.counts.items() if n > 1)
    if twice:
        raise PageFormatError(
            page, f"the element id {twice[0]!r} appears more than once, so the page is ambiguous"
        )
    return {ident: "".join(parts) for ident, parts in parser.found.items()}


def _require(found: dict[str, str], ident: str, page: str, what: str) -> str:
    value = found.get(ident)
    if value is None or not value.strip():
        raise PageFormatError(page, f"no {what} (an element with id {ident!r}) on this page")
    return value.strip()


def _base64(text: str, page: str, what: str) -> bytes:
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise PageFormatError(page, f"the {what} is not valid base64 ({exc})") from None


def key_from_registration_page(html: str, *, page: str) -> bytes:
    """The PEM text of the vault public key (not yet parsed as a key)."""
    found = extract_elements(html, [ID_VAULT_KEY], page=page)
    pem = _require(found, ID_VAULT_KEY, page, "vault public key")
    if "-----BEGIN PUBLIC KEY-----" not in pem:
        raise PageFormatError(page, "the vault public key element holds no PEM public key")
    return pem.encode("ascii", errors="replace") + b"\n"


@dataclass(frozen=True)
class DepositPage:
    statement: bytes
    signature: bytes
    sha256: str | None


def receipt_from_deposit_page(html: str, *, page: str) -> DepositPage:
    found = extract_elements(html, [ID_STATEMENT, ID_SIGNATURE, ID_SHA256], page=page)
    statement = _base64(_require(found, ID_STATEMENT, page, "receipt statement"), page, "statement")
    signature = _base64(_require(found, ID_SIGNATURE, page, "receipt signature"), page, "signature")
    sha = found.get(ID_SHA256)
    return DepositPage(statement, signature, sha.strip().lower() if sha and sha.strip() else None)


@dataclass(frozen=True)
class RetrievalPage:
    name: str
    version: int | None
    content: bytes


def document_from_retrieval_page(html: str, *, page: str) -> RetrievalPage:
    found = extract_elements(html, [ID_DOCUMENT, ID_DOCUMENT_NAME, ID_DOCUMENT_VERSION], page=page)
    name = _require(found, ID_DOCUMENT_NAME, page, "document name")
    raw = found.get(ID_DOCUMENT)
    if raw is None:
        raise PageFormatError(
            page, f"no document (an element with id {ID_DOCUMENT!r}) on this page"
        )
    content = _base64(raw, page, "document")
    version: int | None = None
    text = found.get(ID_DOCUMENT_VERSION, "").strip()
    if text:
        if not text.isascii() or not text.isdigit() or int(text) < 1:
            raise PageFormatError(page, f"the document version {text!r} is not a number >= 1")
        version = int(text)
    return RetrievalPage(name=name, version=version, content=content)
