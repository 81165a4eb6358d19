"""evault.node."""
