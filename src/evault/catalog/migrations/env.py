"""Alembic environment for the catalog.

Normally run from code by ``evault.catalog.migrate.upgrade``, which passes an open connection
already inside a transaction (``config.attributes["connection"]``): the whole upgrade then
commits or rolls back as one unit, on SQLite as on PostgreSQL.  From the ``alembic`` command
line (developers only) the database comes from ``-x url=...``.
"""

from __future__ import annotations

from alembic import context

from evault.catalog.engine import create_catalog_engine
from evault.catalog.migrate import VERSION_TABLE, migration_transaction
from evault.catalog.schema import metadata


def _configure_and_run(**kwargs: object) -> None:
    context.configure(
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=True,
        compare_type=True,
        **kwargs,  # type: ignore[arg-type]
    )
    with context.begin_transaction():
        context.run_migrations()


def _command_line_url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url")
    if not url:
        raise SystemExit("give the catalog database as: alembic -x url=DATABASE_URL ...")
    return url


def main() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _configure_and_run(connection=connection)
    elif context.is_offline_mode():
        _configure_and_run(url=_command_line_url(), literal_binds=True)
    else:
        engine = create_catalog_engine(_command_line_url(), pool_size=0)
        try:
            with engine.connect() as conn, migration_transaction(conn, schema=None):
                _configure_and_run(connection=conn)
        finally:
            engine.dispose()


main()
