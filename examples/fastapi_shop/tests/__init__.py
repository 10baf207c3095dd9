"""Tests of the FastAPI shop."""
