"""evault.ida."""
