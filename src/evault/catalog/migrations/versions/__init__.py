"""Catalog schema revisions, one file each, applied in order by ``Catalog.migrate()``."""
