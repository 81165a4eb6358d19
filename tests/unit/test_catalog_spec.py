"""docs/spec/catalog.md and the code agree: tables, columns, types, nullability, audit actions."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sqlalchemy as sa

import evault.catalog.catalog as catalog_module
from evault.catalog.schema import UtcDateTime, metadata

ROOT = Path(__file__).resolve().parents[2]
SPEC = (ROOT / "docs" / "spec" / "catalog.md").read_text(encoding="utf-8")


def _spec_tables() -> dict[str, list[tuple[str, str, str]]]:
    """{table: [(column, type, null), ...]} from the "### Table `x`" sections."""
    tables: dict[str, list[tuple[str, str, str]]] = {}
    for match in re.finditer(r"^### Table `(\w+)`\n(.*?)(?=^### |^## )", SPEC, re.S | re.M):
        rows = re.findall(r"^\| `(\w+)` \| ([^|]+?) \| (yes|no) \|", match.group(2), re.M)
        tables[match.group(1)] = [(c, t.strip(), n) for c, t, n in rows]
    return tables


def _describe(column: sa.Column[object]) -> str:
    """The spec's spelling of a column type."""
    kind = column.type
    if isinstance(kind, UtcDateTime):
        return "instant"
    if getattr(kind, "_variant_mapping", None):  # BigInteger on PostgreSQL, rowid on SQLite
        return "id"
    if isinstance(kind, sa.String) and not isinstance(kind, sa.Text) and kind.length:
        return f"String({kind.length})"
    return type(kind).__name__


SPEC_TABLES = _spec_tables()


def test_spec_describes_every_table() -> None:
    assert set(SPEC_TABLES) == set(metadata.tables)


@pytest.mark.parametrize("table", sorted(metadata.tables))
def test_spec_columns_match_schema(table: str) -> None:
    expected = [
        (c.name, _describe(c), "yes" if c.nullable else "no") for c in metadata.tables[table].c
    ]
    assert SPEC_TABLES[table] == expected


def test_spec_lists_every_audit_action_the_catalog_writes() -> None:
    source = Path(catalog_module.__file__).read_text(encoding="utf-8")
    written = set(re.findall(r'_write_audit\(\s*conn,\s*now,\s*"([a-z_.]+)"', source))
    section = SPEC.split("Actions written by the catalog itself", 1)[1].split("\n\n", 2)[1]
    documented = set(re.findall(r"^\| `([a-z_.]+)` \|", section, re.M))
    assert len(written) >= 9
    assert written == documented


def test_spec_index_names_exist() -> None:
    declared = {ix.name for table in metadata.tables.values() for ix in table.indexes}
    mentioned = set(re.findall(r"Index `(ix_\w+)`", SPEC))
    assert mentioned
    assert mentioned <= declared
