"""A small Django project for the adapter tests: the items domain, ORM and pool side by side."""
