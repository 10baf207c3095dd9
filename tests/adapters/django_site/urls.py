"""URLs of the adapter tests' Django project (one include, for the full-pattern labels)."""

from __future__ import annotations

from django.urls import include, path

from .catalog import views

shop_patterns = [path("things/<str:name>/", views.thing)]

urlpatterns = [
    path("items/<int:item_id>/", views.item),
    path("orm/items/<int:pk>/", views.orm_item),
    path("labels/<int:pk>/", views.label),
    path("admin/items/<int:pk>/save/<str:name>/", views.save_with_orm),
    path("admin/items/<int:item_id>/rename/<str:name>/", views.rename_with_pool),
    path("admin/items/<int:item_id>/touch/", views.touch),
    path("calls/", views.calls_view),
    path("boom/", views.boom),
    path("stream/", views.stream),
    path("async/items/<int:item_id>/", views.async_item),
    path("async/pool/items/<int:item_id>/", views.async_pool_item),
    path("cookie/", views.cookie),
    path("shop/", include(shop_patterns)),
]
