"""Rules for the names the catalog stores: user ids, document names, profile text.

Pure functions; the gateway's API reuses them to reject bad input before any I/O.  Each rule
raises :class:`evault.errors.BadName` with the field and one sentence saying what is wrong;
a wrong *type* is a programming mistake and raises ``TypeError``.

User ids
    3–64 characters of ``[a-z0-9._-]`` starting with a letter or digit, compared without
    case: ``Alice`` and ``alice`` are the same user, stored as ``alice``.  Only ASCII is
    accepted *before* folding, so look-alikes such as the Kelvin sign (U+212A, which
    ``str.casefold`` turns into ``k``) cannot alias an existing id.

Document names
    1–255 characters of valid UTF-8 (code points, not bytes).  ``/`` may appear inside a
    name so that backups can mirror paths, but the name is then a relative path in normal
    form: no leading or trailing ``/``, no empty segment (``a//b``), no ``.`` or ``..``
    segment.  Rejected anywhere: control characters (Unicode Cc: C0, DEL, C1, including NUL),
    lone surrogates (undecodable file names smuggled in by ``surrogateescape``), line and
    paragraph separators, the BOM, and bidirectional overrides/isolates (they make a listing
    show a different name than the one stored).  No leading or trailing white space.
    Names are compared as exact code-point sequences, without Unicode normalisation, so a
    restore reproduces the very path that was backed up.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

from evault.errors import BadName

MIN_USER_ID_CHARS: Final = 3
MAX_USER_ID_CHARS: Final = 64
MAX_DOCUMENT_NAME_CHARS: Final = 255
MAX_PROFILE_NAME_CHARS: Final = 200
MAX_CONTACT_CHARS: Final = 320  # the longest e-mail address RFC 5321 allows

_USER_ID = re.compile(r"[a-z0-9][a-z0-9._-]*")

# Characters that change how the *rest* of a line is displayed, or that are invisible at
# the start of a name: rejected so that what a listing shows is what is stored.
_INVISIBLE_OR_REORDERING: Final = frozenset(
    "\u202a\u202b\u202c\u202d\u202e"  # bidi embeddings and overrides
    "\u2066\u2067\u2068\u2069"  # bidi isolates
    "\ufeff"  # byte order mark / zero-width no-break space
)
_REJECTED_CATEGORIES: Final = frozenset({"Cc", "Cs", "Zl", "Zp"})


def canonical_user_id(user_id: str) -> str:
    """Return the stored form of ``user_id`` (lower case) or raise ``BadName``."""
    if not isinstance(user_id, str):
        raise TypeError(f"user_id: expected str, got {type(user_id).__name__}")
    if not user_id.isascii():
        raise BadName("user_id", "only the ASCII letters, digits and . _ - are allowed", user_id)
    folded = user_id.lower()
    if not MIN_USER_ID_CHARS <= len(folded) <= MAX_USER_ID_CHARS:
        raise BadName(
            "user_id",
            f"must be {MIN_USER_ID_CHARS} to {MAX_USER_ID_CHARS} characters long",
            user_id,
        )
    if _USER_ID.fullmatch(folded) is None:
        raise BadName(
            "user_id",
            "only letters, digits and . _ - are allowed, starting with a letter or digit",
            user_id,
        )
    return folded


def _bad_character(text: str) -> str | None:
    """Describe the first character of ``text`` that no stored name may contain."""
    for ch in text:
        category = unicodedata.category(ch)
        if category in _REJECTED_CATEGORIES or ch in _INVISIBLE_OR_REORDERING:
            kind = {
                "Cc": "control character",
                "Cs": "unpaired surrogate (not valid UTF-8)",
                "Zl": "line separator",
                "Zp": "paragraph separator",
            }.get(category, "invisible or text-reordering character")
            return f"contains a {kind} (U+{ord(ch):04X})"
    return None


def validate_document_name(name: str) -> str:
    """Return ``name`` unchanged if it is a valid document name; raise ``BadName`` otherwise."""
    if not isinstance(name, str):
        raise TypeError(f"name: expected str, got {type(name).__name__}")
    field = "document name"
    if not name:
        raise BadName(field, "must not be empty", name)
    if len(name) > MAX_DOCUMENT_NAME_CHARS:
        raise BadName(
            field, f"is {len(name)} characters long, the limit is {MAX_DOCUMENT_NAME_CHARS}", name
        )
    problem = _bad_character(name)
    if problem is not None:
        raise BadName(field, problem, name)
    if name[0].isspace() or name[-1].isspace():
        raise BadName(field, "must not start or end with white space", name)
    if name.startswith("/") or name.endswith("/"):
        raise BadName(field, "must not start or end with '/'", name)
    for segment in name.split("/"):
        if segment == "":
            raise BadName(field, "must not contain an empty path segment ('//')", name)
        if segment in (".", ".."):
            raise BadName(field, f"must not contain a {segment!r} path segment", name)
    return name


def validate_profile_text(field: str, value: str, *, max_chars: int, required: bool) -> str:
    """Check a free-text profile field (full name, contact); return it unchanged."""
    if not isinstance(value, str):
        raise TypeError(f"{field}: expected str, got {type(value).__name__}")
    if required and not value.strip():
        raise BadName(field, "must not be empty", value)
    if len(value) > max_chars:
        raise BadName(field, f"is {len(value)} characters long, the limit is {max_chars}", value)
    problem = _bad_character(value)
    if problem is not None:
        raise BadName(field, problem, value)
    if value and (value[0].isspace() or value[-1].isspace()):
        raise BadName(field, "must not start or end with white space", value)
    return value
