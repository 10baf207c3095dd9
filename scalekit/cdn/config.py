"""Configuration of the CDN layer: caching rules and presets, surrogate keys, ETags, assets.

Everything here is a frozen dataclass validated at start-up; :mod:`scalekit.cdn.policy`
compiles it once into header tuples and patterns, so a request only looks things up.

>>> config = CDNConfig(rules=(RuleConfig(path="/static/**", policy="immutable-asset"),
...                           RuleConfig(path="/account/**", policy="private")))
>>> config.rules[0].policy
'immutable-asset'
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from ..errors import ConfigError
from .purge.config import PurgeConfig

__all__ = ["CDNConfig", "PolicyConfig", "RuleConfig", "SurrogateDialect"]

SurrogateDialect = Literal["fastly", "cloudflare", "akamai", "varnish", "none"]
_METHOD = re.compile(r"^[A-Z]+$")


def _require(condition: bool, key: str, value: object, expected: str) -> None:
    # scalekit.config.require, repeated: importing scalekit.config from here would be circular
    # (scalekit.config imports this module to build Config).
    if not condition:
        raise ConfigError(key=key, value=value, expected=expected)


def _seconds(value: int | None, key: str) -> None:
    _require(value is None or (isinstance(value, int) and 0 <= value <= 2**31 - 1), key, value,
             "a whole number of seconds between 0 and 2147483647, or unset")


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """What a response may be cached for, by whom: the values behind one set of stamped headers.

    ``max_age_seconds`` is the browser's freshness (``Cache-Control: max-age``);
    ``shared_max_age_seconds`` the freshness for shared caches and CDNs (``s-maxage``, and
    ``max-age`` in ``CDN-Cache-Control`` (RFC 9213) and ``Surrogate-Control``). Stale
    directives (RFC 5861) go to the CDN headers, and to ``Cache-Control`` only when browsers get
    freshness of their own: a browser told ``max-age=0`` must revalidate, not serve stale.
    Contradictions resolve to the safer side: ``no_store`` wins over everything, ``private``
    drops every shared freshness.
    """

    max_age_seconds: int | None = None
    shared_max_age_seconds: int | None = None
    stale_while_revalidate_seconds: int | None = None
    stale_if_error_seconds: int | None = None
    immutable: bool = False
    public: bool = False
    private: bool = False
    no_cache: bool = False
    no_store: bool = False
    must_revalidate: bool = False

    def __post_init__(self) -> None:
        for name in ("max_age_seconds", "shared_max_age_seconds", "stale_while_revalidate_seconds",
                     "stale_if_error_seconds"):
            _seconds(getattr(self, name), name)
        for name in ("immutable", "public", "private", "no_cache", "no_store", "must_revalidate"):
            _require(isinstance(getattr(self, name), bool), name, getattr(self, name), "true or false")


def _policy_from_table(table: Mapping[str, Any]) -> PolicyConfig:
    known = [f.name for f in fields(PolicyConfig)]
    for key in table:
        if key not in known:
            nearest = difflib.get_close_matches(str(key), known, n=1)
            raise ConfigError(key=f"policy.{key}", value=table[key],
                              expected="one of the policy settings " + ", ".join(known),
                              suggestion=f"policy.{nearest[0]}" if nearest else None)
    return PolicyConfig(**table)


@dataclass(frozen=True, slots=True)
class RuleConfig:
    """One ordered rule: the first rule whose conditions all match picks the response's policy.

    ``path`` is a glob over the request path (``*`` within one segment, ``**`` across
    segments, ``?`` one character) or, prefixed with ``re:``, a regular expression searched
    from the start (``re:^/api/v[0-9]+/``). Empty ``methods`` means GET and HEAD (responses to
    other methods are not reused by caches unless a rule names the method); empty
    ``content_types`` matches any; empty ``statuses`` means 2xx and 3xx only, so a
    ``/static/**`` rule never makes a 404 immutable for a year. ``content_types`` match
    the response's media type exactly or by ``type/*``. ``policy`` names a preset
    (built-in or from ``presets``) or is an inline table of :class:`PolicyConfig` fields.

    The app's own caching headers win unless ``override`` is set. ``allow_set_cookie`` and
    ``allow_authorization`` let this rule's responses be shared-cacheable even when they set a
    cookie or answer a request carrying credentials; without them such responses are made
    ``private`` whatever the rule or the app said. ``allow_cookie`` lets the rule's lifetime
    stand for an answer to a request that carried a Cookie (for paths whose answers never
    depend on cookies); without it such an answer is made ``private`` unless the app's own
    headers gave it a shared lifetime.
    """

    path: str = "/**"
    policy: str | PolicyConfig = "no-store"
    methods: tuple[str, ...] = ()
    content_types: tuple[str, ...] = ()
    statuses: tuple[int, ...] = ()
    override: bool = False
    allow_set_cookie: bool = False
    allow_authorization: bool = False
    allow_cookie: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.policy, Mapping):
            # An inline table from TOML / JSON: the loader hands `str | PolicyConfig` over as is.
            object.__setattr__(self, "policy", _policy_from_table(self.policy))
        _require(isinstance(self.policy, (str, PolicyConfig)), "policy", self.policy,
                 "a preset name or a table of policy settings")
        if self.path.startswith("re:"):
            try:
                re.compile(self.path[3:])
            except re.error as exc:
                raise ConfigError(key="path", value=self.path,
                                  expected=f"a valid regular expression after 're:' ({exc})") from None
        else:
            _require(self.path.startswith("/"), "path", self.path,
                     "a glob starting with '/' (e.g. '/static/**') or 're:<regex>'")
        for method in self.methods:
            _require(bool(_METHOD.match(method)), "methods", method, "upper-case method names such as 'GET'")
        for media_type in self.content_types:
            _require(media_type.count("/") == 1 and ";" not in media_type, "content_types", media_type,
                     "media types such as 'text/html' or 'image/*', without parameters")
        for status in self.statuses:
            _require(100 <= status <= 599, "statuses", status, "HTTP status codes between 100 and 599")


@dataclass(frozen=True, slots=True)
class CDNConfig:
    """Cache-Control / CDN-Cache-Control / Surrogate-Control / surrogate keys, ETag and 304.

    With no rules and no ``default_policy`` a bare ``wrap()`` stamps no freshness the app did
    not ask for; it still generates ETags, answers conditional requests, keeps responses with
    cookies or credentials out of shared caches and limits shared freshness of 5xx responses.
    """

    enabled: bool = True
    rules: tuple[RuleConfig, ...] = ()
    # Extra named policies, also overriding a built-in of the same name ("page", "api", ...).
    presets: dict[str, PolicyConfig] = field(default_factory=dict)
    # Policy for responses no rule matched (2xx/3xx only); None leaves them as the app sent them.
    default_policy: str | None = None
    # Emit CDN-Cache-Control (RFC 9213), read by Cloudflare, Fastly and Akamai before Cache-Control.
    cdn_cache_control: bool = True
    # Emit Surrogate-Control (Fastly, Akamai, Varnish; the CDN strips it before the browser).
    surrogate_control: bool = False
    # Which CDN's header carries the request's tags; "none" leaves the app's headers untouched.
    surrogate_keys: SurrogateDialect = "none"
    # Shared freshness allowed on 5xx responses (0: none, they are never served from a CDN).
    server_error_shared_max_age_seconds: int = 0
    # Generate a strong ETag from the body when the app set none (bodies up to the limit).
    etag: bool = True
    etag_max_body_bytes: int = 1_048_576
    # Answer If-None-Match / If-Modified-Since / If-Match / If-Unmodified-Since on GET and HEAD.
    conditional_requests: bool = True
    # Something in front compresses responses (nginx gzip, a CDN): add Vary: Accept-Encoding to
    # compressible types so caches keep the encodings apart. Responses the app compressed itself
    # (Content-Encoding) always get it.
    compression: bool = False
    # Fingerprinted static assets built by `scalekit assets build SRC DEST`.
    assets_manifest: str | None = None
    assets_prefix: str = "/static/"
    assets_base_url: str | None = None
    # Serve the built assets in-app (servestatic) when a manifest is configured; nginx or the
    # CDN serves them in deploy, so this can be switched off there.
    serve_assets: bool = True
    # Edges to purge on every invalidation (Varnish, Fastly, Cloudflare, Akamai).
    purge: PurgeConfig = field(default_factory=PurgeConfig)

    def __post_init__(self) -> None:
        _require(self.etag_max_body_bytes >= 0, "etag_max_body_bytes", self.etag_max_body_bytes,
                 "zero or more bytes")
        _seconds(self.server_error_shared_max_age_seconds, "server_error_shared_max_age_seconds")
        _require(self.assets_prefix.startswith("/") and self.assets_prefix.endswith("/"),
                 "assets_prefix", self.assets_prefix, "a path starting and ending with '/'")
        if self.assets_base_url is not None:
            _require(self.assets_base_url.startswith(("https://", "http://", "//")), "assets_base_url",
                     self.assets_base_url, "an absolute URL such as 'https://cdn.example.com'")
        for name in self.presets:
            _require(bool(re.match(r"^[a-z0-9][a-z0-9_-]*$", name)), "presets", name,
                     "preset names of lower-case letters, digits, '-' and '_'")
        # Imported here: presets.py needs PolicyConfig from this module.
        from .presets import preset_names

        known = preset_names(self.presets)
        for index, rule in enumerate(self.rules):
            if isinstance(rule.policy, str):
                _require(rule.policy in known, f"rules[{index}].policy", rule.policy,
                         "one of " + ", ".join(sorted(known)) + " or an inline policy table")
        if self.default_policy is not None:
            _require(self.default_policy in known, "default_policy", self.default_policy,
                     "one of " + ", ".join(sorted(known)))
        for name, target in self.purge.targets.items():
            # Purging tags the edge never received would silently purge nothing.
            _require(target.kind == self.surrogate_keys, "surrogate_keys", self.surrogate_keys,
                     f"{target.kind!r}, the dialect of purge target {name!r} (the edge must "
                     "receive the tags it is asked to purge)")
