"""Cache keys (RFC 9111 §2 and §4.1): pure, precomputed from config, cheap per request.

The primary key is ``scheme://host[:port]/path?query``: GET and HEAD share it (only they are
served from the cache), the host comes from ``allowed_hosts`` (an unlisted Host gets no key at
all), and the query is normalised (parameters sorted, configured ones such as ``utm_*``
dropped). The secondary key holds the values of the request headers the response's Vary names.

Two requests the app could tell apart never share a key. The app sees the Host as sent, the
decoded path, and each parameter's values in order, so:

- the path is the decoded one servers hand over, with ``%``, ``?``, ``#`` and control characters
  percent-encoded again, so that it cannot run into the query (``/a%3Fb=1`` is not ``/a?b=1``);
- parameters are sorted by their decoded name only, stably: ``a=1&a=2`` and ``a=2&a=1`` differ
  (frameworks read the first), ``b=1&a=2`` and ``a=2&b=1`` do not;
- a Host not in its canonical form (``LOCALHOST``, ``localhost.``, ``localhost:80`` over http)
  gets no key, so such a request is neither served from the cache nor stored: the app may
  reflect the Host as sent, and handing it the canonical one instead would change the request;
- a request carrying a body (:func:`has_request_body`) is answered by the app alone.

>>> keys = KeyBuilder(allowed_hosts=(".example.com",), ignored_query_params=("utm_*",))
>>> keys.primary_key("https", "www.example.com", "/p", "b=2&utm_source=x&a=1")
'https://www.example.com/p?a=1&b=2'
>>> keys.primary_key("https", "www.example.com", "/a?b", "")
'https://www.example.com/a%3Fb'
>>> keys.primary_key("https", "WWW.Example.com:443", "/p", "") is None
True
>>> keys.primary_key("https", "evil.test", "/p", "") is None
True
>>> secondary_key(("accept-language",), {"accept-language": "fr,  en"}.get, max_value_bytes=64)
'accept-language=fr,en'
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import Callable, Iterable
from urllib.parse import unquote, unquote_plus, urljoin, urlsplit

from ..memo import TextMemo
from .vary import normalise_vary_value

__all__ = [
    "BODY_HEADERS",
    "DEFAULT_PORTS",
    "FORWARDED_HEADERS",
    "MAX_KEY_CHARS",
    "ForwardedHeaders",
    "HostAllowlist",
    "KeyBuilder",
    "has_request_body",
    "secondary_key",
    "variant_key",
]

HeaderGetter = Callable[[str], "str | None"]

# Host [":" port] (RFC 9110 §7.2, RFC 3986 §3.2.2): reg-name or IP literal. Anything else (spaces,
# "@", "/", control characters) is not a host and must never become part of a key.
_HOST = re.compile(r"^(?:[a-z0-9_](?:[a-z0-9_.-]*[a-z0-9_])?\.?|\[[0-9a-f:.]+\])(?::(\d{1,5}))?$")
# Separates the parts of a variant key; cannot appear in a URL or a header value.
_SEPARATOR = "\x1f"
# A key longer than this is stored as its first characters and a SHA-256 of the whole (after
# this separator, which no URL-made key contains): every tier, the coalescing maps and the
# invalidation marks then hold a few hundred bytes per key, however long the client's URL.
MAX_KEY_CHARS = 512
_DIGEST_SEPARATOR = "\x1e"
_DIGEST_HEAD_CHARS = MAX_KEY_CHARS - 65
# Memos of client-supplied text: entries, and the longest text worth remembering.
_MEMO_ENTRIES = 4096
_MAX_MEMO_HOST_CHARS = 260  # a DNS name (253) and a port
_MAX_MEMO_QUERY_CHARS = 512
_MAX_MEMO_NAME_CHARS = 64
_REFUSED_HOST: tuple[str, str | None, str] = ("", None, "")
# Characters of a decoded path that are percent-encoded again in the key: they would let the
# path run into the query (?), another encoding (%), or the key separators (control characters);
# "#" too, so that the key reads as a URL. A path with none of the first three is kept as it is.
_PATH_ESCAPES = re.compile(r"[%?#\x00-\x1f\x7f]")
_CONTROLS = re.compile(r"[\x00-\x1f\x7f]")
_VALUE_CONTROLS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # a field value may hold HTAB
# RFC 9112 §6.1-6.3: a request has a body when it carries Transfer-Encoding or a Content-Length
# other than 0. A GET or HEAD with one is answered by the app alone: the body may change what it
# answers, and it is not in the key.
BODY_HEADERS = ("content-length", "transfer-encoding")
# Headers a proxy uses to tell the app what the client asked for: the app (through Werkzeug's
# ProxyFix, Django's USE_X_FORWARDED_HOST, a rewrite module) may answer differently when one is
# present, and none is in the key unless cache.keyed_forwarded_headers names it.
FORWARDED_HEADERS = ("x-forwarded-host", "x-forwarded-proto", "x-forwarded-port", "x-forwarded-prefix",
                     "forwarded", "x-original-url", "x-rewrite-url", "x-http-method-override")
# RFC 9110 §4.2.1, §4.2.2: the port a URL without one means.
DEFAULT_PORTS = {"http": "80", "https": "443"}
# Separates the keyed forwarded headers from the URL in a key; no URL-made key contains it.
_FORWARDED_SEPARATOR = "\x1d"


class HostAllowlist:
    """``allowed_hosts`` compiled: ``*`` any host, ``.example.com`` a domain and its subdomains,
    anything else an exact host name. Ports are not part of the match."""

    def __init__(self, allowed_hosts: Iterable[str]) -> None:
        patterns = [host.strip().lower().rstrip(".") for host in allowed_hosts]
        self.any_host = "*" in patterns
        self.exact = frozenset(p for p in patterns if p and not p.startswith((".", "*.")))
        self.domains = tuple(p.lstrip("*") for p in patterns if p.startswith((".", "*.")) and len(p) > 2)

    def allows(self, hostname: str) -> bool:
        if self.any_host or hostname in self.exact:
            return True
        return any(hostname.endswith(domain) or hostname == domain[1:] for domain in self.domains)


class KeyBuilder:
    """Builds primary keys; every per-request step is a dict lookup once a host/query was seen."""

    def __init__(self, *, allowed_hosts: Iterable[str], ignored_query_params: Iterable[str]) -> None:
        self.hosts = HostAllowlist(allowed_hosts)
        patterns = tuple(ignored_query_params)
        exact = frozenset(p for p in patterns if not any(c in p for c in "*?["))
        globs = [fnmatch.translate(p) for p in patterns if p not in exact]
        self._ignored_exact = exact
        self._ignored_glob = re.compile("|".join(globs)) if globs else None
        # Host -> (name, port, "name:port"), name "" when refused; the scheme's default port is
        # dropped after.
        self._hosts_seen: TextMemo[tuple[str, str | None, str]] = TextMemo(
            max_entries=_MEMO_ENTRIES, max_text_chars=_MAX_MEMO_HOST_CHARS)
        self._queries_seen: TextMemo[str] = TextMemo(max_entries=_MEMO_ENTRIES,
                                                     max_text_chars=_MAX_MEMO_QUERY_CHARS)
        self._names_seen: TextMemo[bool] = TextMemo(max_entries=_MEMO_ENTRIES,
                                                    max_text_chars=_MAX_MEMO_NAME_CHARS)
        # The last key built, with what it was built from: a miss builds its key on the early
        # path, then again on the full path, from the same parts (one tuple: read atomically).
        self._last_key: tuple[tuple[str, str | None, str, str, str], str | None] = (("", None, "", "", ""), None)

    def host(self, scheme: str, host: str | None) -> str | None:
        """The normalised ``host[:port]`` for the key, or None if absent, malformed or not allowed."""
        if not host:
            return None
        parsed = self._hosts_seen.get(host)
        if parsed is None:
            parsed = self._parse_host(host)
            self._hosts_seen.put(host, parsed)
        name, port, with_port = parsed
        if port is None or port == DEFAULT_PORTS.get(scheme):
            return name or None
        return with_port

    def _parse_host(self, host: str) -> tuple[str, str | None, str]:
        text = host.strip().lower()
        match = _HOST.match(text)
        if match is None:
            return _REFUSED_HOST
        port = match.group(1)
        name = text[: -len(port) - 1] if port else text
        name = name.rstrip(".") if not name.startswith("[") else name
        if not name or not self.hosts.allows(name):
            return _REFUSED_HOST
        return name, port, f"{name}:{int(port)}" if port is not None else name

    def normalise_query(self, query: str) -> str:
        """Parameters sorted by decoded name, stably (the values of one name keep their order),
        ignored ones dropped, empty pieces removed, control characters percent-encoded."""
        if not query:
            return ""
        found = self._queries_seen.get(query)
        if found is not None:
            return found
        if "&" not in query:
            result = "" if self._is_ignored(query) else query  # one parameter: nothing to sort
        else:
            kept = [part for part in query.split("&") if part and not self._is_ignored(part)]
            kept.sort(key=_parameter_name)
            result = "&".join(kept)
        if not result.isprintable():
            # A raw control character reads as its %XX form in the app: the same parameter.
            result = _CONTROLS.sub(_percent_encoded, result)
        self._queries_seen.put(query, result)
        return result

    def _is_ignored(self, part: str) -> bool:
        raw = part.partition("=")[0]
        found = self._names_seen.get(raw)
        if found is not None:
            return found
        name = unquote_plus(raw) if "%" in raw or "+" in raw else raw
        ignored = name in self._ignored_exact or (
            self._ignored_glob is not None and self._ignored_glob.match(name) is not None)
        self._names_seen.put(raw, ignored)
        return ignored

    def primary_key(self, scheme: str, host: str | None, path: str, query: str,
                    forwarded: str = "") -> str | None:
        """``scheme://host/path?query``, or None when the Host is not allowed or not in its
        canonical form (then the request never touches the cache). ``path`` is decoded;
        ``forwarded`` is :meth:`ForwardedHeaders.key_part` of the request."""
        parts = (scheme, host, path, query, forwarded)
        last = self._last_key
        if last[0] == parts:
            return last[1]
        key = self._built_key(scheme, host, path, query, forwarded)
        self._last_key = (parts, key)
        return key

    def _built_key(self, scheme: str, host: str | None, path: str, query: str, forwarded: str) -> str | None:
        key_host = self.host(scheme, host)
        if key_host is None or key_host != host:
            return None
        if "%" in path or "?" in path or not path.isprintable():
            # Injective: an escaped path always holds a "%", an unescaped one never does.
            path = _PATH_ESCAPES.sub(_percent_encoded, path)
        query = self.normalise_query(query) if query else ""
        key = f"{scheme}://{key_host}{path or '/'}?{query}" if query else f"{scheme}://{key_host}{path or '/'}"
        if forwarded:
            key += forwarded
        return key if len(key) <= MAX_KEY_CHARS else _digested(key)

    def same_origin_key(self, scheme: str, host: str | None, path: str, url: str | None) -> str | None:
        """The primary key of ``url`` (a Location or Content-Location, maybe relative) when it
        has the request's origin (RFC 9111 §4.4: "only if the host part ... is the same")."""
        if not url:
            return None
        try:
            # RFC 3986 §5.2 reference resolution (dot segments too) against the request URI.
            base = _PATH_ESCAPES.sub(_percent_encoded, path or "/")  # ``path`` is decoded
            parts = urlsplit(urljoin(f"{scheme}://origin.invalid{base}", url.strip()))
        except ValueError:
            return None
        if parts.scheme != scheme:
            return None
        if parts.netloc != "origin.invalid" and self.host(scheme, parts.netloc) != self.host(scheme, host):
            return None
        # Decoded, as servers hand a request's path over.
        target_path = unquote(parts.path) if "%" in parts.path else parts.path
        return self.primary_key(scheme, host, target_path or "/", parts.query)


class ForwardedHeaders:
    """What the :data:`FORWARDED_HEADERS` of a request add to its key, ``keyed`` being the ones a
    trusted proxy sets (``cache.keyed_forwarded_headers``).

    >>> forwarded = ForwardedHeaders(keyed=("x-forwarded-host",))
    >>> forwarded.key_part("GET", "http", "shop.test", {"x-forwarded-host": "shop.test"}.get)
    ''
    >>> forwarded.key_part("GET", "http", "shop.test", {"x-forwarded-host": "a.test"}.get)
    '\\x1dx-forwarded-host=a.test'
    >>> forwarded.key_part("GET", "http", "shop.test", {"x-forwarded-prefix": "/a"}.get) is None
    True
    """

    def __init__(self, keyed: Iterable[str] = ()) -> None:
        names = {name.lower() for name in keyed}
        unknown = names.difference(FORWARDED_HEADERS)
        if unknown:
            raise ValueError(f"not forwarded headers: {sorted(unknown)}; expected some of {FORWARDED_HEADERS}")
        self.keyed = frozenset(names)

    def key_part(self, method: str, scheme: str, host: str | None, header: HeaderGetter) -> str | None:
        """``""`` when none of the headers changes what the app sees beyond the URL (absent, or
        restating it), the keyed values to add to the key, or None: an unkeyed one is present,
        so the request must neither be served from the cache nor stored."""
        part = ""
        # A port restates a portless Host when it is the default of the scheme the app will
        # see: the forwarded one where a proxy fix applies X-Forwarded-Proto.
        scheme_seen = header("x-forwarded-proto") or scheme
        for name in FORWARDED_HEADERS:
            value = header(name)
            if value is None or _restates(name, value, method, scheme, host, scheme_seen):
                continue
            if name not in self.keyed:
                return None
            if not value.isprintable():
                value = _CONTROLS.sub(_percent_encoded, value)
            part += f"{_FORWARDED_SEPARATOR}{name}={value}"
        return part


def _restates(name: str, value: str, method: str, scheme: str, host: str | None,
              scheme_seen: str) -> bool:
    """Whether a proxy fix applying ``name: value`` would leave the request as it is: the same
    Host, the same scheme, the port the Host already names (or, for a portless Host, the
    default port of ``scheme_seen``: URLs are built without it), the same method."""
    if name == "x-forwarded-host":
        return value == host
    if name == "x-forwarded-proto":
        return value == scheme
    if name == "x-forwarded-port":
        if host is None or not value.isdigit():
            return False
        _, colon, port = host.rpartition(":")
        if colon and port.isdigit():  # "[::1]" has no port: its last colon is inside brackets
            return port == value
        return value == DEFAULT_PORTS.get(scheme_seen)
    return name == "x-http-method-override" and value == method


def has_request_body(header: HeaderGetter) -> bool:
    """Whether the request carries a body (RFC 9112 §6.3): Transfer-Encoding, or a
    Content-Length other than 0 (an invalid one counts as a body)."""
    if header("transfer-encoding") is not None:
        return True
    length = header("content-length")
    return length is not None and length.strip() not in ("", "0")


def _parameter_name(part: str) -> str:
    raw = part.partition("=")[0]
    return unquote_plus(raw) if "%" in raw or "+" in raw else raw


def _percent_encoded(match: re.Match[str]) -> str:
    return f"%{ord(match.group()):02X}"


def _digested(key: str) -> str:
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{key[:_DIGEST_HEAD_CHARS]}{_DIGEST_SEPARATOR}{digest}"


def secondary_key(vary: tuple[str, ...], header: HeaderGetter, *, max_value_bytes: int) -> str | None:
    """The request's values for the header names in ``vary`` (lower-case), as one string.

    Values are normalised where the RFCs say spellings are equivalent (:mod:`.vary`). An absent
    header and an empty one differ. None when a value is longer than ``max_value_bytes`` or
    holds a control character: such a variant is not stored.
    """
    if not vary:
        return ""
    parts = []
    for name in vary:
        value = header(name)
        if value is None:
            parts.append(name + "!")
            continue
        if len(value) > max_value_bytes:
            return None
        value = normalise_vary_value(name, value)
        if not value.isprintable() and _VALUE_CONTROLS.search(value):
            return None  # the parts of the key are separated by control characters
        parts.append(f"{name}={value}")
    return "\n".join(parts)


def variant_key(primary: str, variants_id: str, secondary: str) -> str:
    """Where one variant of a Vary'd response lives: under its URL's current variant index."""
    return f"{primary}{_SEPARATOR}{variants_id}{_SEPARATOR}{secondary}"
