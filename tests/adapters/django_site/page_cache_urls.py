"""A URLconf with Django's own per-view cache on one view, for the start-up check."""

from __future__ import annotations

from django.urls import include, path
from django.views.decorators.cache import cache_page
from django.views.decorators.vary import vary_on_headers

from .catalog import views

urlpatterns = [
    path("labels/<int:pk>/", views.label),
    path("cached/", include([path("items/<int:item_id>/", vary_on_headers("Accept")(cache_page(60)(views.item)))])),
]
