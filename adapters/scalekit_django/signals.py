"""Django's own database work, seen by the cache: model signals and per-query table tracking.

- A model saved or deleted invalidates ``model:app_label.Model`` and
  ``model:app_label.Model:<pk>`` once its transaction has committed.
- Every query Django runs goes through an execute wrapper: the tables it reads tag the current
  response ``table:NAME`` (as the pool layer does for its own connections), and the tables it
  writes are invalidated once the transaction commits (never for a rolled-back one). The SQL is
  classified by the pool layer's parser (``scalekit.pool.tracking.access_of_sql``).

Invalidating after the commit, not before, matters: in between, a concurrent request could
read the old rows and cache them under the new generation.

>>> model_tag("shop.Product"), model_tag("shop.Product", 42)
('model:shop.Product', 'model:shop.Product:42')
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from django.db import connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created
from django.db.models import Model
from django.db.models.signals import post_delete, post_save

import scalekit
from scalekit.context import current
from scalekit.pool.tracking import access_of_sql, table_tag

__all__ = ["install", "model_tag", "model_tags", "track_queries"]

_install_lock = threading.Lock()
_installed = False
# Django's SQL always uses the "format" paramstyle; sqlglot reads %s only in its Postgres
# dialect, so for other vendors the placeholders become the "?" their dialect knows.
_NATIVE_FORMAT_VENDORS = frozenset({"postgresql"})
_PENDING_ATTRIBUTE = "_scalekit_pending_tags"


def model_tag(model: type[Model] | Model | str, pk: Any = None) -> str:
    """``model:app_label.Model`` (or ``...:<pk>``): the tags that saves and deletes invalidate.

    Accepts a model class, an instance (its pk is used unless ``pk`` is given) or a label.
    """
    if isinstance(model, str):
        label = model
    else:
        label = model._meta.label
        if pk is None and isinstance(model, Model):
            pk = model.pk
    return f"model:{label}" if pk is None else f"model:{label}:{pk}"


def model_tags(instance: Model) -> tuple[str, str]:
    """Both tags of a model instance, for ``scalekit.tag(*model_tags(product))`` in a view."""
    return model_tag(type(instance)), model_tag(instance)


def install() -> None:
    """Connect the model signals and the query tracking (idempotent; the middleware calls it)."""
    global _installed
    with _install_lock:
        if _installed:
            return
        _installed = True
        post_save.connect(_invalidate_instance, dispatch_uid="scalekit_django.post_save")
        post_delete.connect(_invalidate_instance, dispatch_uid="scalekit_django.post_delete")
        connection_created.connect(_add_wrapper, dispatch_uid="scalekit_django.connection_created")
        # Connections this thread opened before the middleware loaded (migrations, checks).
        for connection in connections.all(initialized_only=True):
            _add_wrapper(sender=type(connection), connection=connection)


def _invalidate_instance(sender: type[Model], instance: Model, using: str = "default", **_: Any) -> None:
    _after_commit(connections[using], (model_tag(sender), model_tag(sender, instance.pk)), "api")


def _add_wrapper(sender: Any, connection: BaseDatabaseWrapper, **_: Any) -> None:
    if track_queries not in connection.execute_wrappers:
        connection.execute_wrappers.append(track_queries)


def track_queries(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
    """``connection.execute_wrapper`` hook: tag reads, invalidate committed writes."""
    result = execute(sql, params, many, context)
    connection: BaseDatabaseWrapper = context["connection"]
    vendor = connection.vendor
    access = access_of_sql(sql if vendor in _NATIVE_FORMAT_VENDORS else sql.replace("%s", "?"), vendor)
    if access.read:
        ctx = current()
        if ctx is not None:
            ctx.tables_read.update(access.read)
            ctx.tags.update(access.read_tags)
    if access.written:
        _after_commit(connection, tuple(sorted(table_tag(name) for name in access.written)), "table")
    return result


def _after_commit(connection: BaseDatabaseWrapper, tags: tuple[str, ...], source: str) -> None:
    """Invalidate ``tags`` once the current transaction commits (at once in autocommit).

    Inside ``atomic()`` the tags of every statement and save are gathered and invalidated in
    one call per source at the commit, instead of one call per statement. A rollback drops
    Django's on-commit callback, and with it the gathered tags.
    """
    if not connection.in_atomic_block:
        scalekit.invalidate(tags, source=source)
        return
    pending: tuple[dict[str, set[str]], Callable[[], None]] | None = getattr(connection, _PENDING_ATTRIBUTE, None)
    if pending is None or not any(entry[1] is pending[1] for entry in connection.run_on_commit):
        by_source: dict[str, set[str]] = {}

        def flush() -> None:
            if getattr(connection, _PENDING_ATTRIBUTE, (None, None))[1] is flush:
                setattr(connection, _PENDING_ATTRIBUTE, None)
            for flushed_source, flushed_tags in by_source.items():
                scalekit.invalidate(tuple(sorted(flushed_tags)), source=flushed_source)

        pending = (by_source, flush)
        setattr(connection, _PENDING_ATTRIBUTE, pending)
        transaction.on_commit(flush, using=connection.alias)
    pending[0].setdefault(source, set()).update(tags)
