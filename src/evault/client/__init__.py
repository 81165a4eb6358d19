"""evault.client."""
