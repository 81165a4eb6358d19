"""Alembic migration environment of the catalog (see ``evault.catalog.migrate``)."""
