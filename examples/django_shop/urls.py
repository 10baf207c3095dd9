"""The shop's URLs: the same paths as the Flask and FastAPI shops."""

from __future__ import annotations

from django.urls import path

from .shop import views

urlpatterns = [
    path("", views.product_list),
    path("products/<int:product_id>", views.product_page),
    path("api/products", views.api_products),
    path("api/products/<int:product_id>", views.api_product),
    path("api/products/<int:product_id>/price", views.change_price),
]
