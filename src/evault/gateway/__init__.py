"""evault.gateway."""
