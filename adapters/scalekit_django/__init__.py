"""scalekit for django."""
