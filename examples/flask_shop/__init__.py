"""The shop on Flask: ``scalekit serve examples.flask_shop.app:app``."""
