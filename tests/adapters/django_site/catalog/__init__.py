"""The catalog app: an ``Item`` model over the ``items`` table the pool also reads."""
