from __future__ import annotations

from django.contrib import admin
from django.urls import path

from .notes import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("notes/", views.notes, name="notes"),
    path("public/", views.public),
]
