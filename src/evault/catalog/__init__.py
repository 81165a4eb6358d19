"""evault.catalog."""
