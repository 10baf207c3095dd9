"""Configuration of the response cache layer: its HTTP semantics, and its tiers (nested).

>>> CacheConfig(rules=(CacheRule(path="/products/*", ttl_seconds=60),)).rules[0].ttl_seconds
60.0

In scalekit.toml::

    [cache]
    ignored_query_params = ["utm_*", "fbclid"]
    [[cache.rules]]
    path = "/products/*"
    ttl_seconds = 60
    tags = ["products"]
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from .keys import FORWARDED_HEADERS
from .tiers.config import DiskConfig, InvalidationConfig, L2Config, MemoryConfig

__all__ = ["DEFAULT_RULE_TTL_SECONDS", "CacheConfig", "CacheRule"]

MIB = 1024 * 1024
# A route rule or ``cache_response()`` that names no TTL caches for this long; responses no
# rule names never get a default lifetime.
DEFAULT_RULE_TTL_SECONDS = 300.0
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# Fields with a syntax of their own: a targeted field is an RFC 8941 Dictionary.
_NOT_TARGETED = frozenset({"cache-control", "surrogate-control"})


def _require(condition: bool, key: str, value: Any, expected: str) -> None:
    # Local twin of scalekit.config.require: scalekit.config imports this module.
    if not condition:
        raise ConfigError(key=key, value=value, expected=expected)


@dataclass(frozen=True, slots=True)
class CacheRule:
    """Make responses on matching paths storable, as ``cache_response()`` would.

    ``path`` is a glob over the request path: ``*`` matches any run of characters (slashes
    included), ``?`` one character; the first matching rule wins. A rule only supplies the
    lifetime a response lacks: explicit ``Cache-Control`` / ``Expires`` / ``Surrogate-Control``
    from the app still win, and private, no-store or Set-Cookie responses are never stored.

    A lifetime given by a rule never stores the answer to a request that carried ``Cookie`` or
    ``Authorization`` (a ``*.css`` rule would otherwise store ``/account/settings-x.css``
    fetched with a session cookie: web cache deception), unless the response itself says
    ``public`` or ``s-maxage``, or the rule says ``public = true``: the operator's word, like
    ``Cache-Control: public``, that every response on these paths is the same for every user.
    """

    path: str
    ttl_seconds: float = DEFAULT_RULE_TTL_SECONDS
    stale_while_revalidate_seconds: float = 0.0
    stale_if_error_seconds: float = 0.0
    tags: tuple[str, ...] = ()
    public: bool = False

    def __post_init__(self) -> None:
        _require(self.path.startswith("/") or self.path.startswith("*"), "path", self.path,
                 "a path glob starting with '/' such as '/products/*'")
        _require(self.ttl_seconds >= 0, "ttl_seconds", self.ttl_seconds, "zero or more seconds")
        _require(self.stale_while_revalidate_seconds >= 0, "stale_while_revalidate_seconds",
                 self.stale_while_revalidate_seconds, "zero or more seconds")
        _require(self.stale_if_error_seconds >= 0, "stale_if_error_seconds",
                 self.stale_if_error_seconds, "zero or more seconds")
        for tag in self.tags:
            _require(bool(tag) and not any(c.isspace() for c in tag), "tags", tag,
                     "non-empty tags without spaces")


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """The response cache: HTTP semantics (this section) and its tiers (nested sections)."""

    enabled: bool = True
    rules: tuple[CacheRule, ...] = ()
    # Query parameters dropped from the cache key (globs: "utm_*"): trackers that do not
    # change the response would otherwise split one page into thousands of entries.
    ignored_query_params: tuple[str, ...] = ("utm_*", "fbclid", "gclid", "msclkid", "mc_cid", "mc_eid")
    # Larger bodies are streamed through untouched and never stored.
    max_body_bytes: int = 8 * MIB
    # RFC 9111 §3 lets a shared cache store any final status that carries explicit freshness
    # (a 503 with max-age=5 shields a struggling origin). False: 5xx responses are never
    # stored, whatever they say.
    store_server_errors: bool = True
    # RFC 9111 §4.2.2 heuristic freshness (a fraction of the time since Last-Modified) for
    # responses without explicit freshness. Off: only explicit freshness and rules cache.
    heuristic_freshness: bool = False
    heuristic_fraction: float = 0.1
    heuristic_max_seconds: float = 86400.0
    # Whether a client's "Cache-Control: no-cache" (or "Pragma: no-cache") makes the cache go
    # to the origin. Off by default: on a public endpoint anyone could otherwise bypass the
    # cache at will and load the origin.
    honour_client_no_cache: bool = False
    # Concurrent misses on one key make one origin call per process; the others wait for its
    # response's headers, at most this long (then a stale entry if there is one, else the
    # origin). A response that will not be stored releases them at once to go to the origin.
    coalesce: bool = True
    coalesce_timeout_seconds: float = 10.0
    # A key whose last response could not be stored is remembered this long (0: never), and
    # concurrent misses on it go straight to the origin instead of waiting for one another.
    hit_for_miss_seconds: float = 60.0
    # Threads that run stale-while-revalidate refreshes under WSGI (ASGI uses tasks).
    refresh_threads: int = 4
    # A response varying on a request header whose value is longer than this is not stored
    # (it would make keys huge and let one client flood the cache with variants).
    max_vary_value_bytes: int = 512
    # The cache's name in Cache-Status (RFC 9211 §2).
    status_name: str = "scalekit"
    # Proxy headers (X-Forwarded-Host/-Proto/-Port/-Prefix, Forwarded, X-Original-URL,
    # X-Rewrite-URL, X-HTTP-Method-Override) that a trusted proxy in front sets: their values
    # become part of the key. A request carrying one not listed here is neither served from the
    # cache nor stored (the app may answer it differently, e.g. through ProxyFix).
    keyed_forwarded_headers: tuple[str, ...] = ()
    # RFC 9213 targeted cache control: response fields, in precedence order, whose directives
    # replace Cache-Control and Expires for this cache when one is present and valid, such as
    # ["CDN-Cache-Control"]. Unset: off (examples/proxy, a CDN-like cache, then obeys
    # CDN-Cache-Control); [] is off too. The fields still reach downstream caches, unless
    # strip_targeted_cache_control removes the ones on this list from what is stored and sent.
    targeted_cache_control: tuple[str, ...] | None = None
    strip_targeted_cache_control: bool = False
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    l2: L2Config = field(default_factory=L2Config)
    disk: DiskConfig = field(default_factory=DiskConfig)
    invalidation: InvalidationConfig = field(default_factory=InvalidationConfig)

    def __post_init__(self) -> None:
        for pattern in self.ignored_query_params:
            _require(bool(pattern) and "&" not in pattern and "=" not in pattern,
                     "ignored_query_params", pattern, "query parameter names or globs such as 'utm_*'")
        _require(self.max_body_bytes >= 0, "max_body_bytes", self.max_body_bytes, "zero or more bytes")
        _require(0 < self.heuristic_fraction <= 1, "heuristic_fraction", self.heuristic_fraction,
                 "a fraction in (0, 1], RFC 9111 suggests 0.1")
        _require(self.heuristic_max_seconds >= 0, "heuristic_max_seconds",
                 self.heuristic_max_seconds, "zero or more seconds")
        _require(self.coalesce_timeout_seconds > 0, "coalesce_timeout_seconds",
                 self.coalesce_timeout_seconds, "a positive number of seconds")
        _require(self.hit_for_miss_seconds >= 0, "hit_for_miss_seconds", self.hit_for_miss_seconds,
                 "zero (off) or more seconds")
        _require(1 <= self.refresh_threads <= 256, "refresh_threads", self.refresh_threads,
                 "between 1 and 256 threads")
        _require(self.max_vary_value_bytes > 0, "max_vary_value_bytes", self.max_vary_value_bytes,
                 "a positive number of bytes")
        _require(bool(_TOKEN.match(self.status_name)), "status_name", self.status_name,
                 "an HTTP token such as 'scalekit' (letters, digits, '-', '_', '.')")
        for name in self.keyed_forwarded_headers:
            _require(isinstance(name, str) and name.lower() in FORWARDED_HEADERS, "keyed_forwarded_headers",
                     name, "names among " + ", ".join(FORWARDED_HEADERS))
        for name in self.targeted_cache_control or ():
            _require(bool(_TOKEN.match(name)) and name.lower() not in _NOT_TARGETED,
                     "targeted_cache_control", name,
                     "response field names such as 'CDN-Cache-Control' (RFC 9213), other than "
                     "Cache-Control and Surrogate-Control")
