from tests.integration.vault_fixtures import vault, vault_factory  # noqa: F401
