"""evault.crypto."""
