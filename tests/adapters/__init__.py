"""Tests of the Flask, FastAPI/Starlette and Django adapters."""
