"""The shop's views: HTML pages through Django's ORM, the JSON API through scalekit's pool.

ORM queries tag each response ``table:products`` (the middleware's query tracking); a save
invalidates ``model:shop.Product`` and ``model:shop.Product:<id>`` after its commit, and its
UPDATE invalidates ``table:products``.
"""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from scalekit_django import cached, get_db, invalidate, model_tags, tag

from examples.shop_common import (
    PRICE_HINT,
    get_product,
    list_products,
    price_from_body,
    product_json,
)

from .models import Product


@cached(ttl_seconds=60, tags=["products"])
def product_list(request: HttpRequest) -> HttpResponse:
    return render(request, "product_list.html", {"products": Product.objects.order_by("name")})


@cached(ttl_seconds=300, tags=["product:{product_id}"])
def product_page(request: HttpRequest, product_id: int) -> HttpResponse:
    try:
        product = Product.objects.get(pk=product_id)
    except Product.DoesNotExist:
        raise Http404("no such product") from None
    tag(*model_tags(product))
    product.others = Product.objects.exclude(pk=product_id).order_by("pk")[:3]
    return render(request, "product_detail.html", {"product": product})


@cached(ttl_seconds=60, tags=["products"])
def api_products(request: HttpRequest) -> JsonResponse:
    return JsonResponse([product_json(product) for product in list_products(get_db(request))], safe=False)


@cached(ttl_seconds=300, tags=["product:{product_id}"])
def api_product(request: HttpRequest, product_id: int) -> JsonResponse:
    product = get_product(get_db(request), product_id)
    if product is None:
        raise Http404("no such product")
    return JsonResponse(product_json(product))


@csrf_exempt  # a JSON API called by scripts; a real shop would authenticate it
@require_POST
def change_price(request: HttpRequest, product_id: int) -> JsonResponse:
    price_cents = price_from_body(request.content_type, request.body)  # a form or JSON
    if price_cents is None:
        return HttpResponseBadRequest(PRICE_HINT)  # type: ignore[return-value]
    updated = Product.objects.filter(pk=product_id).first()
    if updated is None:
        raise Http404("no such product")
    updated.price_cents = price_cents
    updated.save(update_fields=["price_cents"])  # signals + query tracking invalidate after commit
    invalidate([f"product:{product_id}", "products"])  # and by tag, explicitly
    return JsonResponse({"id": product_id, "price_cents": price_cents})
