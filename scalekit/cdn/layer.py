"""The CDN layer in the pipeline: thin WSGI and ASGI shells around :mod:`scalekit.cdn.policy`.

Each shell (:mod:`~scalekit.cdn.wsgi_shell`, :mod:`~scalekit.cdn.asgi_shell`) holds the app's
response start, asks the :class:`~scalekit.cdn.policy.Stamper` for the headers, and only then
lets it out. The body is touched only to compute an ETag, and only when the app produced it
whole at once: a WSGI list of bytes, a first WSGI chunk or a single ASGI body message of the
declared Content-Length (within ``cdn.etag_max_body_bytes``). A body produced in pieces is a
stream and is never held back to be hashed: it leaves chunk by chunk without an ETag, like
everything else (file wrappers and ASGI ``pathsend`` included). A conditional GET/HEAD whose
validators match is answered 304 (or 412) without sending the body (see
:mod:`scalekit.cdn.respond` for why unsafe methods are the app's to answer). When
``cdn.assets_manifest`` is set, servestatic serves the built assets inside this layer, so they
are stamped and answered 304 like everything else.

Around the cache layer, the cache's plain hits are stamped when the cache memoises them, not
per hit (:mod:`scalekit.cdn.hits`): the headers are the same as this layer's full path gives,
and such a hit never runs this layer.
"""

from __future__ import annotations

from typing import Any

from .. import asgi, wsgi
from .asgi_shell import ASGICDN
from .assets import load_index, serve_assets_asgi, serve_assets_wsgi
from .config import CDNConfig
from .exchange import STATE_KEY
from .policy import Stamper
from .wsgi_shell import WSGICDN

__all__ = ["ASGICDN", "STATE_KEY", "WSGICDN", "wrap_asgi", "wrap_wsgi"]


def _build(runtime: Any) -> tuple[Stamper, Any]:
    config: CDNConfig = runtime.config.cdn
    stamper = Stamper(config)
    index = load_index(config.assets_manifest, prefix=config.assets_prefix, base_url=config.assets_base_url)
    runtime.services["cdn"] = stamper
    runtime.services["cdn.assets"] = index
    return stamper, index if config.assets_manifest is not None and config.serve_assets else None


def wrap_wsgi(app: wsgi.WSGIApp, runtime: Any) -> wsgi.WSGIApp:
    """The cdn layer around a WSGI app (with servestatic inside it when assets are configured)."""
    stamper, index = _build(runtime)
    inner = serve_assets_wsgi(app, index) if index is not None else app
    return WSGICDN(inner, stamper)


def wrap_asgi(app: asgi.ASGIApp, runtime: Any) -> asgi.ASGIApp:
    """The cdn layer around an ASGI app (with servestatic inside it when assets are configured)."""
    stamper, index = _build(runtime)
    inner = serve_assets_asgi(app, index) if index is not None else app
    return ASGICDN(inner, stamper)
