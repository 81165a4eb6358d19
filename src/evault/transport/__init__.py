"""evault.transport."""
