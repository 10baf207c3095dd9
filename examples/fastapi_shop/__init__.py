"""The shop on FastAPI: ``scalekit serve examples.fastapi_shop.app:app``."""
