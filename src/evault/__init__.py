"""evault: a secure distributed document repository (after IBM's e-Vault)."""

__version__ = "0.1.0"
