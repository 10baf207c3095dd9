"""scalekit for flask."""
