"""The shop on Django: ``scalekit serve examples.django_shop.app:app`` (WSGI) or ``:asgi_app``."""
