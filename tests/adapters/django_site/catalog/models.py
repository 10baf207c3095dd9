"""``Item`` maps the shared ``items`` table (created by the tests, not by migrations)."""

from __future__ import annotations

from django.db import models


class Item(models.Model):
    name = models.TextField()

    class Meta:
        app_label = "catalog"
        db_table = "items"
        managed = False

    def __str__(self) -> str:
        return self.name
