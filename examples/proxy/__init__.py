"""A caching reverse proxy built on scalekit (see app.py)."""
