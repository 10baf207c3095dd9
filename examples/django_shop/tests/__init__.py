"""Tests of the Django shop."""
