"""Shared fixtures. Expensive keys are made once per test session."""

pytest_plugins = ["tests.crypto_fixtures"]
