"""scalekit for fastapi."""
