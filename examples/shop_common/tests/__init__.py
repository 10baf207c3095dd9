"""Tests of the Flask shop."""
