"""Runnable example apps: the same small shop on Flask, FastAPI and Django, wrapped by scalekit."""
