"""Preconditions on unsafe methods, evaluated by the app where the current state is known.

The CDN layer answers conditional GET/HEAD itself, but it cannot answer If-Match /
If-Unmodified-Since on PUT, PATCH, DELETE or POST: RFC 9110 §13.1.1 requires the condition
to be evaluated "prior to performing the method", and only the app knows the resource's current
ETag before it changes it (see :mod:`scalekit.cdn.respond`). The app calls
:func:`check_preconditions` with that ETag, inside its transaction, and answers the status it
returns; the evaluation is the one shared with the layer and the cache.

    def update_product(request, product_id):
        product = Product.objects.select_for_update().get(pk=product_id)
        status = scalekit.cdn.check_preconditions(etag=product.etag)
        if status is not None:
            return HttpResponse(status=status)     # 412: someone changed it since you read it
        ...
"""

from __future__ import annotations

from ..conditional import evaluate_preconditions
from ..context import current
from ..errors import ScalekitError

__all__ = ["check_preconditions"]


def check_preconditions(*, etag: str | None, last_modified: str | None = None,
                        has_representation: bool = True) -> int | None:
    """The current request's preconditions evaluated against the resource as it is now.

    ``etag`` / ``last_modified``: the current representation's ETag (quoted, as the app sends
    it in ``ETag``) and Last-Modified (HTTP-date), None when it has none;
    ``has_representation`` False when the resource does not exist yet (a PUT creating it,
    which ``If-None-Match: *`` guards). Returns None to go ahead, 412 to refuse (or 304 for a
    GET/HEAD). Needs a request wrapped by scalekit with the CDN layer enabled.
    """
    ctx = current()
    if ctx is None or "cdn" not in ctx.state:
        raise ScalekitError(
            "check_preconditions() needs the request's headers, which the CDN layer records: "
            "call it while handling a request of an app wrapped by scalekit.wrap() with "
            "cdn.enabled = true, or evaluate scalekit.conditional.evaluate_preconditions() "
            "with the headers yourself.")
    preconditions = ctx.state["cdn"]
    if preconditions is None:
        return None
    return evaluate_preconditions(ctx.method, *preconditions, etag=etag, last_modified=last_modified,
                                  has_representation=has_representation)
