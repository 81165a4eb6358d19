"""evault.protocol."""
