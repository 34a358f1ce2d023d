"""tokred."""
