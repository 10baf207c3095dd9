"""The CDN layer's decisions, pure: which caching headers a response leaves with.

:class:`Stamper` is built once from :class:`~scalekit.cdn.config.CDNConfig`: rules become
compiled patterns, each policy becomes ready-made header lines in four variants (normal, made
private for cookies/credentials, clamped for 5xx, both). Per response, :meth:`Stamper.stamp`
finds the first matching rule, decides whose caching headers win, applies the safety rules and
adds surrogate keys, ``Vary`` and the ETag decision. No I/O, no clock.

Whose headers win: the app's own caching fields (Cache-Control, CDN-Cache-Control,
Surrogate-Control, Expires) are taken as a whole, so a rule never adds a CDN lifetime to a
response the app marked ``private``; a rule with ``override`` replaces them all. Then safety,
which no rule or app header can undo unless the rule allows it explicitly:

* ``Set-Cookie`` on the response, or ``Authorization`` on the request: never shared-cacheable
  (``private`` added, ``public``/``s-maxage`` and the CDN-targeted fields removed). RFC 9111
  §3.5 lets ``public`` share an authenticated answer; one forgotten decorator would publish a
  user's page to everyone, so here only a rule's ``allow_authorization`` does.
* ``Cookie`` on the request, when the shared lifetime would come from a rule or the default
  policy rather than from the app's own headers: ``private`` too, unless the rule says
  ``allow_cookie``. A rule matches by path, and a path can be made to look like an asset
  (``/account/settings-x.css``): the answer built for alice's session must not reach an edge
  that caches by path (web cache deception). The app cache holds the same line.
* ``text/event-stream`` (server-sent events, live): a rule or the default policy gives it
  ``no-store`` rather than its lifetime, or an edge would replay old events to the next client.
* 5xx: shared freshness at most ``server_error_shared_max_age_seconds`` (default 0: no-store),
  so a CDN never pins an outage.

>>> from scalekit.cdn.config import CDNConfig, RuleConfig
>>> stamper = Stamper(CDNConfig(rules=(RuleConfig(path="/blog/**", policy="page"),)))
>>> outcome = stamper.stamp("GET", "/blog/1", False, 200, [("content-type", "text/html")], ())
>>> dict(outcome.headers)["cache-control"]
'public, max-age=0, s-maxage=60'
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import NamedTuple

from .cachecontrol import (
    TARGETED_FIELDS,
    CacheControl,
    format_cache_control,
    is_shared_storable,
    joined_field,
    parse_cache_control,
    shared_max_age,
)
from .config import CDNConfig, PolicyConfig, RuleConfig
from .presets import resolve_policy
from .surrogate import DIALECTS, KEY_HEADERS, Dialect, emit_surrogate_keys, parse_key_header

__all__ = ["CompiledPolicy", "Outcome", "Stamper", "compile_path", "format_policy"]

Headers = list[tuple[str, str]]
Lines = tuple[tuple[str, str], ...]

SAFE_METHODS = frozenset({"GET", "HEAD"})  # RFC 9110 §9.2.1 (OPTIONS/TRACE are never cached)
# The app's caching intent: if it set any of these, it said how the response may be cached.
CACHING_FIELDS = frozenset({"cache-control", "cdn-cache-control", "surrogate-control", "expires"})
# Responses that are live (server-sent events): no rule or default policy makes them storable.
LIVE_MEDIA_TYPES = frozenset({"text/event-stream"})
_COMPRESSIBLE = re.compile(r"^(text/|application/(json|javascript|xml|wasm)|image/svg\+xml|.*\+(json|xml)$)")


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    """One policy's header lines, precomputed for each safety situation."""

    normal: Lines
    private: Lines
    server_error: Lines
    server_error_private: Lines


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """A rule with its pattern compiled and its policy formatted."""

    path: re.Pattern[str]
    # The glob's literal beginning (``/static/`` of ``/static/**``): a startswith() test
    # rejects most paths before the regex runs. Empty for ``re:`` rules.
    path_prefix: str
    methods: frozenset[str]
    content_types: frozenset[str]
    statuses: frozenset[int] | None
    policy: CompiledPolicy
    override: bool
    allow_set_cookie: bool
    allow_authorization: bool
    allow_cookie: bool


_new_tuple = tuple.__new__


class Outcome(NamedTuple):
    """What leaves: the stamped headers, and whether to add an ETag computed from the body.

    A NamedTuple rather than a frozen dataclass: one is built per response, and a tuple is
    several times cheaper to create (by ``tuple.__new__``: 1,100 instructions, against 2,400
    through the NamedTuple's own ``__new__``, a Python function).
    """

    headers: Headers
    generate_etag: bool
    # The app's Content-Length (None when absent or unreadable), so the shell need not rescan.
    content_length: int | None = None


def compile_path(pattern: str) -> re.Pattern[str]:
    """A rule's path as a regex: ``re:`` prefix verbatim, else a glob (``*``, ``**``, ``?``)."""
    if pattern.startswith("re:"):
        return re.compile(pattern[3:])
    out = []
    index = 0
    while index < len(pattern):
        if pattern.startswith("**", index):
            out.append(".*")
            index += 2
        elif pattern[index] == "*":
            out.append("[^/]*")
            index += 1
        elif pattern[index] == "?":
            out.append("[^/]")
            index += 1
        else:
            out.append(re.escape(pattern[index]))
            index += 1
    return re.compile("".join(out) + r"\Z")


def format_policy(policy: PolicyConfig, *, cdn_cache_control: bool, surrogate_control: bool) -> Lines:
    """The caching header lines for ``policy`` (lower-case names, canonical directive order)."""
    lines: list[tuple[str, str]] = []
    if policy.no_store or policy.private:
        # RFC 9111 §5.2.2.7: "private" keeps every shared cache out; shared lifetimes are moot.
        directives = (CacheControl(no_store=True) if policy.no_store else CacheControl(
            private=True, no_cache=policy.no_cache, max_age=policy.max_age_seconds,
            must_revalidate=policy.must_revalidate, immutable=policy.immutable))
        lines.append(("cache-control", format_cache_control(directives)))
        if surrogate_control:
            lines.append(("surrogate-control", "no-store"))
        return tuple(lines)
    shared_lifetime = policy.shared_max_age_seconds
    swr, sie = policy.stale_while_revalidate_seconds or None, policy.stale_if_error_seconds or None
    # Stale directives reach browsers only when they have freshness of their own: a browser
    # told max-age=0 is meant to revalidate every time, not to serve stale (RFC 5861 §3).
    browser_fresh = bool(policy.max_age_seconds)
    directives = CacheControl(
        public=policy.public or shared_lifetime is not None, no_cache=policy.no_cache,
        max_age=policy.max_age_seconds, s_maxage=shared_lifetime,
        must_revalidate=policy.must_revalidate, immutable=policy.immutable,
        stale_while_revalidate=swr if browser_fresh else None,
        stale_if_error=sie if browser_fresh else None)
    value = format_cache_control(directives)
    if value:
        lines.append(("cache-control", value))
    targeted_lifetime = shared_lifetime if shared_lifetime is not None else policy.max_age_seconds
    if targeted_lifetime is not None and not policy.no_cache:
        targeted = format_cache_control(CacheControl(
            max_age=targeted_lifetime, stale_while_revalidate=swr, stale_if_error=sie))
        if cdn_cache_control and (shared_lifetime is not None or ((swr or sie) and not browser_fresh)):
            lines.append(("cdn-cache-control", targeted))
        if surrogate_control:
            lines.append(("surrogate-control", targeted))
    return tuple(lines)


def _private_variant(policy: PolicyConfig) -> PolicyConfig:
    if policy.no_store:
        return policy
    return PolicyConfig(private=True, max_age_seconds=policy.max_age_seconds, no_cache=policy.no_cache,
                        must_revalidate=policy.must_revalidate, immutable=policy.immutable)


def _server_error_variant(policy: PolicyConfig, limit_seconds: int) -> PolicyConfig:
    if policy.no_store or policy.private:
        return policy
    if limit_seconds == 0:
        return PolicyConfig(no_store=True)

    def clamp(value: int | None) -> int | None:
        return None if value is None else min(value, limit_seconds)

    return replace(policy, max_age_seconds=clamp(policy.max_age_seconds), immutable=False,
                   shared_max_age_seconds=clamp(policy.shared_max_age_seconds))


def compile_policy(policy: PolicyConfig, config: CDNConfig) -> CompiledPolicy:
    """All four variants of ``policy`` as header lines."""
    limit = config.server_error_shared_max_age_seconds

    def lines(value: PolicyConfig) -> Lines:
        return format_policy(value, cdn_cache_control=config.cdn_cache_control,
                             surrogate_control=config.surrogate_control)

    error = _server_error_variant(policy, limit)
    return CompiledPolicy(lines(policy), lines(_private_variant(policy)), lines(error),
                          lines(_private_variant(error)))


def compile_rule(rule: RuleConfig, config: CDNConfig) -> CompiledRule:
    """``rule`` ready for matching; empty ``methods`` means GET and HEAD."""
    return CompiledRule(
        path=compile_path(rule.path),
        path_prefix="" if rule.path.startswith("re:") else re.split(r"[*?]", rule.path, maxsplit=1)[0],
        methods=frozenset(rule.methods) if rule.methods else SAFE_METHODS,
        content_types=frozenset(media.lower() for media in rule.content_types),
        statuses=frozenset(rule.statuses) if rule.statuses else None,
        policy=compile_policy(resolve_policy(rule.policy, config.presets), config),
        override=rule.override,
        allow_set_cookie=rule.allow_set_cookie,
        allow_authorization=rule.allow_authorization,
        allow_cookie=rule.allow_cookie,
    )


class Stamper:
    """Every stamping decision of one configured CDN layer; build once, call per response."""

    def __init__(self, config: CDNConfig) -> None:
        self.config = config
        self.rules = tuple(compile_rule(rule, config) for rule in config.rules)
        self.default = (compile_policy(resolve_policy(config.default_policy, config.presets), config)
                        if config.default_policy is not None else None)
        # What a rule or the default policy gives a live stream instead of their lifetime.
        self.no_store = compile_policy(PolicyConfig(no_store=True), config)
        self.dialect: Dialect | None = DIALECTS.get(config.surrogate_keys)
        self.error_limit_seconds = config.server_error_shared_max_age_seconds
        by_method: dict[str, list[CompiledRule]] = {}
        for rule in self.rules:
            for method in rule.methods:
                by_method.setdefault(method, []).append(rule)  # keeps the rules' order
        self._by_method = {method: tuple(rules) for method, rules in by_method.items()}
        # The methods some rule matches: for them the path can change a stamp.
        self.rule_methods = frozenset(self._by_method)
        self.etag = config.etag
        self.compression = config.compression
        # Whether a response's media type can change anything: read by rules with content types,
        # by the live-stream rule (only with a rule or default policy) and by compression. When
        # it cannot, a response's Content-Type is never parsed.
        self.reads_media_type = bool(self.rules) or self.default is not None or config.compression

    def match(self, method: str, path: str, status: int, media_type: str) -> CompiledRule | None:
        """The first rule matching the request and response, or None.

        Rules are pre-grouped by method; the loop is inlined rather than calling
        :meth:`CompiledRule.matches` per rule, because it runs for every response.
        """
        family = None
        for rule in self._by_method.get(method, ()):
            statuses = rule.statuses
            if statuses is None:
                if not 200 <= status < 400:
                    continue
            elif status not in statuses:
                continue
            types = rule.content_types
            if types and media_type not in types:
                if family is None:
                    family = media_type.split("/", 1)[0] + "/*"
                if family not in types:
                    continue
            if path.startswith(rule.path_prefix) and rule.path.match(path) is not None:
                return rule
        return None

    def stamp(self, method: str, path: str, has_authorization: bool, status: int,
              headers: Headers, tags: Iterable[str], *, has_cookie: bool = False) -> Outcome:
        """Stamp ``headers`` (lower-case names, as the app sent them) for this request.

        ``has_authorization`` / ``has_cookie``: the request carried an Authorization header /
        a non-empty Cookie. ``tags``: the request context's tags. Returns new header lines;
        ``headers`` is not modified.
        """
        # The fields' names (and last values) in one pass in C. The first Content-Type is parsed
        # only when something reads the media type; the last readable Content-Length is looked
        # for only when the last one is not readable.
        names = dict(headers)
        media_type = _media_type(headers) if self.reads_media_type and "content-type" in names else ""
        length = names.get("content-length")
        declared_length = None if length is None else int(length) if length.isdigit() else _content_length(headers)
        rule = self.match(method, path, status, media_type) if method in self._by_method else None
        policy = rule.policy if rule is not None else (
            self.default if self.default is not None and 200 <= status < 400 and method in SAFE_METHODS
            else None)
        if policy is not None and media_type in LIVE_MEDIA_TYPES:
            policy = self.no_store  # a stored copy would replay old events to the next client
        app_decides = not CACHING_FIELDS.isdisjoint(names) and not (rule is not None and rule.override)
        credentials = ("set-cookie" in names and not (rule is not None and rule.allow_set_cookie)) or (
            has_authorization and not (rule is not None and rule.allow_authorization))
        server_error = status >= 500
        if policy is not None and not app_decides:
            # The lifetime is the rule's word alone: an answer to a request with cookies is private.
            credentials = credentials or (has_cookie and not (rule is not None and rule.allow_cookie))
            if server_error:
                lines = policy.server_error_private if credentials else policy.server_error
            else:
                lines = policy.private if credentials else policy.normal
            out = [(name, value) for name, value in headers if name not in CACHING_FIELDS]
            out.extend(lines)
        else:
            out = list(headers)
            if credentials:
                out = _make_private(out)
            if server_error:
                out = _limit_server_error(out, self.error_limit_seconds)
        if self.dialect is not None:
            out = _surrogate_keys(out, names, tags, self.dialect)
        if "content-encoding" in names or (self.compression and _COMPRESSIBLE.match(media_type)):
            out = _vary_accept_encoding(out)
        generate_etag = (self.etag and status == 200 and method in SAFE_METHODS
                         and "etag" not in names and not _says_no_store(out))
        # tuple.__new__ itself, as NamedTuple._make does: Outcome(...) runs a Python __new__.
        return _new_tuple(Outcome, (out, generate_etag, declared_length))


def _media_type(headers: Headers) -> str:
    """The first Content-Type's media type, lower-case without parameters (``""`` if none)."""
    for name, value in headers:
        if name == "content-type":
            return value.split(";", 1)[0].strip().lower()
    return ""


def _content_length(headers: Headers) -> int | None:
    """The last Content-Length made of digits only, or None (only called when the last one is not)."""
    length = None
    for name, value in headers:
        if name == "content-length" and value.isdigit():
            length = int(value)
    return length


def _surrogate_keys(headers: Headers, names: Mapping[str, str], tags: Iterable[str], dialect: Dialect) -> Headers:
    """The app's tag headers and the context's tags, re-emitted in ``dialect`` only."""
    keys: Iterable[str] = tags
    if not KEY_HEADERS.keys().isdisjoint(names):
        merged = set(tags)
        for name, value in headers:
            separator = KEY_HEADERS.get(name)
            if separator is not None:
                merged.update(parse_key_header(value, separator))
        keys = merged
        headers = [(name, value) for name, value in headers if name not in KEY_HEADERS]
    if keys:
        headers.extend(emit_surrogate_keys(keys, dialect))
    return headers




def _make_private(headers: Headers) -> Headers:
    """The app's caching fields made non-shareable: ``private`` in, shared permissions out."""
    value = joined_field(headers, "cache-control")
    out = [(name, value) for name, value in headers
           if name not in TARGETED_FIELDS and name != "cache-control"]
    if value is None:
        out.append(("cache-control", "private"))
        return out
    directives = parse_cache_control(value)
    if is_shared_storable(directives):
        directives = replace(directives, public=False, private=True, private_fields=(), s_maxage=None,
                             proxy_revalidate=False)
        out.append(("cache-control", format_cache_control(directives)))
    else:
        out.append(("cache-control", value))
    return out


def _limit_server_error(headers: Headers, limit_seconds: int) -> Headers:
    """A 5xx's caching fields with shared freshness at most ``limit_seconds`` (0: no-store)."""
    value = joined_field(headers, "cache-control")
    directives = parse_cache_control(value)
    targeted = [name for name, _ in headers if name in TARGETED_FIELDS]
    if value is not None and not is_shared_storable(directives) and not targeted:
        return headers
    if limit_seconds == 0:
        out = [(name, v) for name, v in headers if name not in CACHING_FIELDS]
        out.append(("cache-control", "no-store"))
        return out
    out = []
    for name, field_value in headers:
        if name in TARGETED_FIELDS:
            lifetime = shared_max_age(parse_cache_control(field_value))
            if lifetime is None or lifetime > limit_seconds:
                continue  # the CDN falls back to the clamped Cache-Control
        elif name == "cache-control" or name == "expires":
            continue
        out.append((name, field_value))
    if value is not None:
        lifetime = shared_max_age(directives)
        if is_shared_storable(directives) and (lifetime is None or lifetime > limit_seconds):
            directives = replace(directives, s_maxage=limit_seconds)
        out.append(("cache-control", format_cache_control(directives)))
    return out


def _vary_accept_encoding(headers: Headers) -> Headers:
    """``headers`` with Accept-Encoding in Vary (RFC 9110 §12.5.5), merged into the first line."""
    first = None
    for index, (name, value) in enumerate(headers):
        if name == "vary":
            tokens = [token.strip().lower() for token in value.split(",")]
            if "*" in tokens or "accept-encoding" in tokens:
                return headers
            if first is None:
                first = index
    if first is None:
        headers.append(("vary", "Accept-Encoding"))
    else:
        name, value = headers[first]
        headers[first] = (name, f"{value}, Accept-Encoding" if value.strip() else "Accept-Encoding")
    return headers


def _says_no_store(headers: Headers) -> bool:
    for name, value in headers:
        if name == "cache-control" and "no-store" in value.lower():
            return True
    return False
