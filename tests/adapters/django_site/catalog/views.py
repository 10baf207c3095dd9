"""Views of the items domain: pool reads, ORM reads, ORM and pool writes, failures, streams.

``CALLS`` counts how often each view really ran (a cache hit runs none).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from scalekit_django import aget_db, cached, get_db, invalidate, model_tag, model_tags, tag
from sqlalchemy import text

from .models import Item

CALLS: Counter[str] = Counter()


@cached(ttl_seconds=60, tags=["item:{item_id}"])
def item(request: HttpRequest, item_id: int) -> JsonResponse:
    CALLS["item"] += 1
    row = get_db(request).execute(text("SELECT name FROM items WHERE id = :id"), {"id": item_id}).one_or_none()
    if row is None:
        raise Http404("no such item")
    return JsonResponse({"id": item_id, "name": row.name})


@cached(ttl_seconds=60)
async def async_item(request: HttpRequest, item_id: int) -> JsonResponse:
    CALLS["async_item"] += 1
    found = await Item.objects.aget(pk=item_id)
    return JsonResponse({"id": item_id, "name": found.name})


@cached(ttl_seconds=60, tags=["item:{item_id}"])
async def async_pool_item(request: HttpRequest, item_id: int) -> JsonResponse:
    CALLS["async_pool_item"] += 1
    connection = await aget_db(request)
    name = connection.execute(text("SELECT name FROM items WHERE id = :id"), {"id": item_id}).scalar_one()
    return JsonResponse({"id": item_id, "name": name})


@cached(ttl_seconds=60)
def orm_item(request: HttpRequest, pk: int) -> JsonResponse:
    CALLS["orm_item"] += 1
    found = Item.objects.get(pk=pk)  # the query tags the response table:items
    tag(*model_tags(found))
    return JsonResponse({"id": found.pk, "name": found.name})


@cached(ttl_seconds=60, tags=[model_tag("catalog.Item") + ":{pk}"])
def label(request: HttpRequest, pk: int) -> HttpResponse:
    CALLS["label"] += 1  # no query: only the instance's model tag can invalidate this
    return HttpResponse(f"label {pk}", content_type="text/plain")


@csrf_exempt
@require_POST
def save_with_orm(request: HttpRequest, pk: int, name: str) -> JsonResponse:
    found = Item.objects.get(pk=pk)
    found.name = name
    found.save()  # post_save: model:catalog.Item[:pk]; the UPDATE itself: table:items
    return JsonResponse({"ok": True})


@csrf_exempt
@require_POST
def rename_with_pool(request: HttpRequest, item_id: int, name: str) -> JsonResponse:
    connection = get_db(request)
    connection.execute(text("UPDATE items SET name = :name WHERE id = :id"), {"id": item_id, "name": name})
    connection.commit()  # the pool's table tracking invalidates table:items
    return JsonResponse({"ok": True})


@csrf_exempt
@require_POST
def touch(request: HttpRequest, item_id: int) -> JsonResponse:
    invalidate([f"item:{item_id}"])
    return JsonResponse({"ok": True})


def calls_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse(dict(CALLS))


def boom(request: HttpRequest) -> HttpResponse:
    get_db(request).execute(text("SELECT 1"))
    raise RuntimeError("the view failed after using the database")


def stream(request: HttpRequest) -> StreamingHttpResponse:
    rows = get_db(request).execute(text("SELECT id, name FROM items ORDER BY id")).all()

    def generate() -> Iterator[bytes]:
        for row in rows:
            yield f"{row.id},{row.name}\n".encode()

    async def agenerate() -> AsyncIterator[bytes]:
        for chunk in generate():
            yield chunk
    # Under ASGI Django wants an async iterator (a sync one is buffered, with a warning).
    body = agenerate() if hasattr(request, "scope") else generate()
    return StreamingHttpResponse(body, content_type="text/plain")


def cookie(request: HttpRequest) -> HttpResponse:
    response = HttpResponse("a cookie for you", content_type="text/plain")
    response.set_cookie("flavour", "ginger", httponly=True)
    return response


def thing(request: HttpRequest, name: str) -> JsonResponse:
    return JsonResponse({"name": name})


class SyncOnlyMiddleware:
    """A middleware that is sync only: under ASGI, Django then runs the ones above it (scalekit's
    included) in sync mode, with an ASGIRequest."""

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)
