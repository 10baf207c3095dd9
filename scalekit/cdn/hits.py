"""The CDN layer's part in the cache's plain hits: stamping done when the cache memoises a hit.

A plain hit (a GET or HEAD with no conditional, Range or Authorization, see
:mod:`scalekit.cache.hot`) depends only on its method, path and entry, so the headers this
layer gives it are computed once per memo, by the same :class:`~scalekit.cdn.policy.Stamper`
call and ETag rule as the layer's full path, instead of once per hit.
"""

from __future__ import annotations

from typing import Any

from ..cache.entry import CachedEntry
from ..cache.hot import Stamp
from ..cache.layer import tag_names
from .policy import Stamper
from .respond import with_etag

__all__ = ["early_path", "plain_hit_stamp"]

Lines = tuple[tuple[str, str], ...]


def plain_hit_stamp(stamper: Stamper) -> Stamp:
    """What this layer does to a cache's plain hit (a GET or HEAD with no conditional, no
    Authorization and, where it matters, no Cookie), as a function of the hit's method, path, entry and headers: the
    stamped
    headers, with the ETag of the body when the full path would compute one. None when the
    full path must run (a 200 without Content-Length, never stored by the cache)."""
    max_bytes = stamper.config.etag_max_body_bytes

    def stamp(method: str, path: str, entry: CachedEntry, lines: Lines) -> Lines | None:
        headers = [(name.lower(), value) for name, value in lines]
        outcome = stamper.stamp(method, path, False, entry.status, headers, tag_names(entry.tags))
        out = outcome.headers
        if outcome.generate_etag:
            length = outcome.content_length
            if length is None:
                return None
            body = b"" if method == "HEAD" else entry.body
            if len(body) == length and length <= max_bytes:  # both shells' condition, with a length
                return tuple(with_etag(out, body))
        return lines if out == headers else tuple(out)

    return stamp


def early_path(layer: Any, app: Any, stamper: Stamper, names: tuple[str, str],
               authorization: Any, cookie: Any) -> Any:
    """The inner cache's early path with this layer's stamping added (None: no cache inside).
    ``names``: the cache's two sets of request headers that take a request off its early path
    (special ones, and those never plain), to which this layer adds the request headers its
    stamping reads: ``authorization`` (which makes a hit private), and ``cookie`` when a rule
    or the default policy may give a lifetime (which a Cookie on the request makes private)."""
    plain_hits = getattr(app, "plain_hits", None)
    serve_early = getattr(app, "serve_early", None)
    if plain_hits is None or serve_early is None:
        return None
    plain_hits.add_stamper(plain_hit_stamp(stamper))
    added = {authorization, cookie} if stamper.rules or stamper.default is not None else {authorization}
    for name in names:
        setattr(app, name, getattr(app, name) | added)
    layer.plain_hits = plain_hits
    return serve_early
