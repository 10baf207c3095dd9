"""The metrics route label for Starlette and FastAPI: the template of the route that matched.

Starlette's router (1.7+) records the matched route in ``scope["route"]`` as it dispatches, on the
same scope dict every layer shares, so once the app has started its response the template can
be read back without routing a second time:

- the innermost route's own template (``route.path``, ``/items/{item_id}``), or for a route
  reached through ``include_router`` FastAPI's effective route, whose path carries every
  router prefix (``/api/v2/items/{item_id}``);
- preceded by the templates of the ``Mount``s that were entered (``/shops/{shop}``), found by
  matching only the Mounts of the app's route table against the request as it arrived
  (mount paths with parameters must not leak concrete values into the label).

Before Starlette 1.7, which records no plain ``Route`` there, the template is found by matching
the route table once more against the request as it arrived.

No match (404, or a redirect to the slash-less path) keeps the label ``unmatched``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from starlette.routing import BaseRoute, Match, Mount

from scalekit import asgi
from scalekit.context import CONTEXT_KEY

__all__ = ["RouteTemplates", "route_template"]

# FastAPI keeps per-request routing state under scope["fastapi"]; the effective route of an
# included router (its full path with every prefix) is stored there while it is dispatched.
FASTAPI_SCOPE_KEY = "fastapi"
EFFECTIVE_ROUTE_KEY = "effective_route_context"
# What a mounted plain ASGI app's label ends with: Starlette's own template for a Mount's rest.
MOUNTED_APP_SUFFIX = "/{path:path}"


class RouteTemplates:
    """Pure ASGI middleware, innermost in the scalekit chain: names ``ctx.route`` per request.

    ``app`` is the Starlette/FastAPI app (``scalekit_fastapi.wrap``) or, inside Starlette's
    middleware stack (``add_middleware``), the next middleware; then the route table comes
    from ``scope["app"]``, which Starlette sets before its middleware runs.
    """

    def __init__(self, app: asgi.ASGIApp) -> None:
        self.app = app
        self.routes: Sequence[BaseRoute] | None = getattr(app, "routes", None)

    async def __call__(self, scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send) -> None:
        ctx = scope.get(CONTEXT_KEY)
        if scope["type"] != "http" or ctx is None:
            await self.app(scope, receive, send)
            return
        routes = self.routes
        if routes is None:
            routes = getattr(scope.get("app"), "routes", ())
        # The request as it arrived: Mounts rewrite root_path and path_params as they dispatch.
        arrived = {"type": "http", "path": scope["path"], "root_path": scope.get("root_path", ""),
                   "method": scope.get("method", "GET"), "headers": scope.get("headers", ())}
        named = False

        async def send_naming_route(message: asgi.Message) -> None:
            nonlocal named
            if not named and message["type"] == "http.response.start":
                named = True
                _name(ctx, routes, scope, arrived)
            await send(message)

        try:
            await self.app(scope, receive, send_naming_route)
        finally:
            if not named:  # the app raised before starting a response
                _name(ctx, routes, scope, arrived)


def _name(ctx: Any, routes: Sequence[BaseRoute], scope: asgi.Scope, arrived: Mapping[str, Any]) -> None:
    template = route_template(routes, scope, arrived)
    if template is not None:
        ctx.route = template


def route_template(routes: Sequence[BaseRoute], scope: Mapping[str, Any],
                   arrived: Mapping[str, Any]) -> str | None:
    """The matched route's full template, from ``scope`` after dispatch; None if nothing matched.

    ``arrived`` holds ``path``, ``root_path``, ``method``, ``headers`` as the request came in.
    """
    route = scope.get("route")
    if route is None:
        # Starlette before 1.7 records no route for a plain Route: match the table once more.
        return _matched_template(routes, arrived)
    inner = _own_template(route, scope)
    if inner is None:
        return None
    if scope.get("root_path", "") == arrived["root_path"]:
        return inner  # no Mount was entered
    prefix = _mount_prefix(routes, arrived, scope.get("root_path", ""))
    return None if prefix is None else prefix + inner


def _own_template(route: Any, scope: Mapping[str, Any]) -> str | None:
    fastapi_state = scope.get(FASTAPI_SCOPE_KEY)
    if isinstance(fastapi_state, dict):
        effective = fastapi_state.get(EFFECTIVE_ROUTE_KEY)
        if effective is not None and getattr(effective, "original_route", None) is route:
            path = getattr(effective, "path", None)
            if isinstance(path, str) and path:
                return path
    if isinstance(route, Mount):
        # A Mount of a plain ASGI app (StaticFiles, say): its own path is in the mount prefix.
        return MOUNTED_APP_SUFFIX
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else None


def _matched_template(routes: Sequence[BaseRoute], arrived: Mapping[str, Any]) -> str | None:
    """The full template of the route that matches the request as it arrived, or None."""
    scope = dict(arrived)
    prefix = ""
    for _ in range(32):  # mounts nest a few levels; a cycle must not hang a request
        for candidate in routes:
            match, child = candidate.matches(scope)
            if match is not Match.FULL:
                continue
            if not isinstance(candidate, Mount):
                path = getattr(candidate, "path", None)
                return prefix + path if isinstance(path, str) else None
            prefix += candidate.path
            if not candidate.routes:  # a mounted plain ASGI app
                return prefix + MOUNTED_APP_SUFFIX
            scope.update(child)
            routes = candidate.routes
            break
        else:
            return None
    return None


def _mount_prefix(routes: Sequence[BaseRoute], arrived: Mapping[str, Any], final_root_path: str) -> str | None:
    """The templates of the Mounts entered, outermost first: ``/shops/{shop}/admin``."""
    scope = dict(arrived)
    prefix = ""
    for _ in range(32):  # mounts nest a few levels; a cycle must not hang a request
        if scope["root_path"] == final_root_path:
            return prefix
        for candidate in routes:
            if not isinstance(candidate, Mount):
                continue
            match, child = candidate.matches(scope)
            if match is Match.FULL:
                prefix += candidate.path
                scope.update(child)
                routes = candidate.routes
                break
        else:
            return None
    return None
