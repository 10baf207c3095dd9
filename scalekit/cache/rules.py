"""Route rules: how app code and config make a response storable without Cache-Control.

App code calls :func:`cache_response` during a request (the adapters' ``@cached`` decorators
do); config does the same with ``cache.rules`` (ordered path globs). Either supplies a lifetime
(default 300 s) for a response that carries no explicit freshness of its own; explicit
``Cache-Control`` / ``Expires`` / ``Surrogate-Control`` still win, and private, no-store and
Set-Cookie responses are never stored whatever a rule says.

>>> from scalekit.context import RequestContext, activate
>>> ctx = RequestContext("GET", "/products/42"); _ = activate(ctx)
>>> cache_response(60, tags=["product:42"])
>>> rule_of(ctx).ttl_seconds, sorted(ctx.tags)
(60.0, ['product:42'])
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..context import current
from ..memo import TextMemo
from .config import DEFAULT_RULE_TTL_SECONDS, CacheRule

__all__ = ["ResponseRule", "RuleMatcher", "cache_response", "format_tags", "rule_of", "view_rule"]

STATE_KEY = "cache.rule"


@dataclass(frozen=True, slots=True)
class ResponseRule:
    """What a rule or ``cache_response()`` says about one response."""

    ttl_seconds: float = DEFAULT_RULE_TTL_SECONDS
    stale_while_revalidate_seconds: float = 0.0
    stale_if_error_seconds: float = 0.0
    tags: tuple[str, ...] = ()
    # The operator's word that the response is the same for every user (CacheRule.public):
    # stored even when the request carried Cookie or Authorization.
    public: bool = False


def cache_response(
    ttl_seconds: float = DEFAULT_RULE_TTL_SECONDS,
    *,
    tags: Iterable[str] = (),
    stale_while_revalidate_seconds: float = 0,
    stale_if_error_seconds: float = 0,
    public: bool = False,
) -> None:
    """Make the current response storable for ``ttl_seconds`` (unless it says otherwise).

    Call it while handling a request; outside one it does nothing, like ``scalekit.tag``.
    ``tags`` are added to the request's tags for invalidation. The answer to a request that
    carried Cookie or Authorization is not stored unless ``public=True`` (the response is the
    same for every user) or the response itself says ``public`` / ``s-maxage``.
    """
    if ttl_seconds < 0 or stale_while_revalidate_seconds < 0 or stale_if_error_seconds < 0:
        raise ValueError("cache_response() takes zero or more seconds; got "
                         f"ttl_seconds={ttl_seconds!r}, stale_while_revalidate_seconds="
                         f"{stale_while_revalidate_seconds!r}, stale_if_error_seconds={stale_if_error_seconds!r}")
    ctx = current()
    if ctx is None:
        return
    tag_tuple = (tags,) if isinstance(tags, str) else tuple(tags)
    for value in tag_tuple:
        if not isinstance(value, str) or not value:
            raise ValueError(f"cache tags are non-empty strings; got {value!r}")
    ctx.tags.update(tag_tuple)
    ctx.state[STATE_KEY] = ResponseRule(float(ttl_seconds), float(stale_while_revalidate_seconds),
                                        float(stale_if_error_seconds), tag_tuple, bool(public))


def format_tags(templates: tuple[str, ...], arguments: Mapping[str, Any]) -> tuple[str, ...]:
    """``("product:{product_id}",)`` with ``{"product_id": 7}`` gives ``("product:7",)``."""
    return tuple(template.format_map(arguments) if "{" in template else template
                 for template in templates)


def view_rule(ttl_seconds: float, tags: Iterable[str], stale_while_revalidate_seconds: float,
              stale_if_error_seconds: float, public: bool) -> Callable[[Mapping[str, Any]], None]:
    """What a framework's ``@cached`` view decorator calls with the view's URL arguments:
    :func:`cache_response` with the tag templates filled in."""
    templates = (tags,) if isinstance(tags, str) else tuple(tags)

    def apply(arguments: Mapping[str, Any]) -> None:
        cache_response(ttl_seconds, tags=format_tags(templates, arguments),
                       stale_while_revalidate_seconds=stale_while_revalidate_seconds,
                       stale_if_error_seconds=stale_if_error_seconds, public=public)

    return apply


def rule_of(ctx: Any) -> ResponseRule | None:
    """The rule ``cache_response()`` set on this request's context, if any."""
    if ctx is None:
        return None
    rule: ResponseRule | None = ctx.state.get(STATE_KEY)
    return rule


class RuleMatcher:
    """``cache.rules`` compiled once: one regex per rule, first match wins, memoised per path."""

    def __init__(self, rules: Iterable[CacheRule]) -> None:
        self._rules = tuple(
            (re.compile(fnmatch.translate(rule.path)),
             ResponseRule(rule.ttl_seconds, rule.stale_while_revalidate_seconds,
                          rule.stale_if_error_seconds, rule.tags, rule.public))
            for rule in rules
        )
        # Paths are client-controlled: only short ones are remembered.
        self._seen: TextMemo[ResponseRule | None] = TextMemo(max_entries=4096, max_text_chars=512)

    def __bool__(self) -> bool:
        return bool(self._rules)

    def match(self, path: str) -> ResponseRule | None:
        """The first rule whose glob matches ``path``, or None."""
        if not self._rules:
            return None
        found = self._seen.get(path, False)
        if found is not False:
            return found  # type: ignore[return-value]
        result = next((rule for pattern, rule in self._rules if pattern.match(path)), None)
        self._seen.put(path, result)
        return result
