"""cdn layer."""
