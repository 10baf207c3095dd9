"""``Product`` maps the ``products`` table that ``examples.shop_common`` creates and seeds."""

from __future__ import annotations

from django.db import models


class Product(models.Model):
    slug = models.CharField(max_length=80, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField()
    price_cents = models.IntegerField()
    stock = models.IntegerField()

    class Meta:
        app_label = "shop"
        db_table = "products"
        managed = False  # shared with the other shops' schema (shop_common.data)

    def __str__(self) -> str:
        return self.name
