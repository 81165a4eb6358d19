"""Running the catalog's Alembic migrations from code (no ``alembic.ini`` needed).

The migration scripts ship inside the package (``evault/catalog/migrations``).  An upgrade
runs in ONE transaction holding a lock, so that several gateways starting together against
one PostgreSQL database migrate it exactly once (the others wait, then find it at head), and
an upgrade that fails half-way leaves the schema as it was.  SQLite and PostgreSQL both have
transactional DDL; on SQLite the lock is the ``BEGIN IMMEDIATE`` write lock, on PostgreSQL a
transaction-scoped advisory lock.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from evault.catalog.engine import SQLITE_BEGIN_OPTION

#: Alembic's bookkeeping table, named for the catalog so it cannot collide with another
#: Alembic-managed schema living in the same database.
VERSION_TABLE: Final = "catalog_schema_version"
SCRIPT_LOCATION: Final = "evault.catalog:migrations"
#: Key of the PostgreSQL advisory lock taken by migrations: the bytes "evaultCM" as an int64.
ADVISORY_LOCK_KEY: Final = int.from_bytes(b"evaultCM", "big", signed=True)


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    return config


def head_revision() -> str:
    """The newest schema revision this version of evault knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError("the catalog ships no migrations")
    return head


def known_revisions() -> frozenset[str]:
    script = ScriptDirectory.from_config(alembic_config())
    return frozenset(rev.revision for rev in script.walk_revisions())


def current_revision(connection: sa.Connection) -> str | None:
    """The revision the database is at, or None for an empty database."""
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


@contextmanager
def migration_transaction(connection: sa.Connection, *, schema: str | None) -> Iterator[None]:
    """Open the single, locked transaction that a migration runs in."""
    if connection.dialect.name == "sqlite":
        connection.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
    with connection.begin():
        if connection.dialect.name == "postgresql":
            # Lock first: two concurrent "CREATE SCHEMA IF NOT EXISTS" can still collide.
            connection.execute(
                sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY}
            )
            if schema is not None:
                connection.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
                # The dialect learnt its default schema when this connection was first made,
                # possibly before the schema existed; reflection (used by Alembic) needs it.
                connection.dialect.default_schema_name = schema
        yield


def upgrade(engine: sa.Engine, *, schema: str | None = None, revision: str = "head") -> None:
    """Bring the database to ``revision`` (default: the newest), in one transaction."""
    config = alembic_config()
    with engine.connect() as connection, migration_transaction(connection, schema=schema):
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def downgrade(engine: sa.Engine, *, revision: str, schema: str | None = None) -> None:
    """Take the database back to ``revision`` ("base" drops everything).  For tests and
    operators rolling back a release; the gateway never calls it."""
    config = alembic_config()
    with engine.connect() as connection, migration_transaction(connection, schema=schema):
        config.attributes["connection"] = connection
        command.downgrade(config, revision)
