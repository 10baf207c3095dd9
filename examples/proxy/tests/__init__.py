"""End-to-end tests of the caching proxy over HTTP."""
