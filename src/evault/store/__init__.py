"""evault.store."""
