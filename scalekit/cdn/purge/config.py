"""Configuration of edge purges: ``cdn.purge`` and its named ``targets``.

Each target is one edge that caches the app's pages and must forget them when the app
invalidates: a Varnish fleet with vmod_xkey, a Fastly service, a Cloudflare zone or an Akamai
property. Every check runs at start-up and names the key; credentials come from the
environment (``SCALEKIT_CDN_PURGE_TARGETS_<NAME>_TOKEN``) or from files (``token_file``,
``edgerc``, the way Docker and Kubernetes hand secrets over) and never appear in a repr, an
error or ``scalekit check``.

>>> target = PurgeTargetConfig(kind="varnish", urls=("http://varnish:6081",))
>>> PurgeConfig(targets={"edge": target}).targets["edge"].kind
'varnish'
"""

from __future__ import annotations

import configparser
import re
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from ...errors import ConfigError

__all__ = ["PURGE_KINDS", "PurgeConfig", "PurgeKind", "PurgeTargetConfig", "read_secret_file"]

PurgeKind = Literal["varnish", "fastly", "cloudflare", "akamai"]
PURGE_KINDS: tuple[PurgeKind, ...] = ("varnish", "fastly", "cloudflare", "akamai")
HIDDEN = "<hidden>"
# Target names become metric labels and Redis key parts: keep them plain.
_TARGET_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_AKAMAI_FIELDS = ("host", "client_token", "client_secret", "access_token")


def _require(condition: bool, key: str, value: object, expected: str) -> None:
    if not condition:
        raise ConfigError(key=key, value=value, expected=expected)


def read_secret_file(path: str, key: str) -> str:
    """The secret held by the file at ``path`` (less one trailing newline); a missing,
    unreadable or empty file is a :class:`ConfigError` naming ``key`` and the path, never the
    content."""
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or type(error).__name__
        raise ConfigError(key=key, value=path,
                          expected=f"a readable UTF-8 file holding the secret ({reason})") from None
    secret = text.removesuffix("\n").removesuffix("\r")
    _require(bool(secret.strip()), key, path, "a file holding a non-empty secret")
    return secret


def _read_edgerc(path: str, section: str) -> dict[str, str]:
    """host and the three tokens of ``section`` in an Akamai ``.edgerc`` file."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as file:
            parser.read_file(file)
    except (OSError, UnicodeDecodeError, configparser.Error) as error:
        reason = getattr(error, "strerror", None) or type(error).__name__
        raise ConfigError(key="edgerc", value=path,
                          expected=f"a readable .edgerc file ({reason})") from None
    _require(parser.has_section(section), "edgerc_section", section,
             f"a section of {path} (it has: {', '.join(parser.sections()) or 'none'})")
    values = {name: parser.get(section, name, fallback="").strip() for name in _AKAMAI_FIELDS}
    missing = [name for name, value in values.items() if not value]
    _require(not missing, "edgerc", path,
             f"a [{section}] section with {', '.join(_AKAMAI_FIELDS)} (missing: {', '.join(missing)})")
    return values


@dataclass(frozen=True, slots=True)
class PurgeTargetConfig:
    """One edge to purge. Which fields apply depends on ``kind``:

    - ``varnish``: ``urls`` lists the Varnish instances (``http://varnish:6081``); each host
      name is resolved at every purge and every address gets the purge, so a headless
      Kubernetes Service reaches every replica. Tags go as ``xkey-purge`` (``soft``:
      ``xkey-softpurge``) to ``deploy/varnish/default.vcl``; URLs as ``PURGE``.
    - ``fastly``: ``service_id`` and ``token`` (or ``token_file``); ``soft`` sends
      ``Fastly-Soft-Purge: 1`` (marks stale rather than gone).
    - ``cloudflare``: ``zone_id`` and ``token`` (or ``token_file``), an API token with the
      Cache Purge permission.
    - ``akamai``: ``host``, ``client_token``, ``client_secret``, ``access_token`` (or an
      ``edgerc`` file and ``edgerc_section``); ``network`` is ``production`` or ``staging``.
      Purges use Fast Purge's ``invalidate``, which makes the edge revalidate before serving.

    ``urls`` on a vendor target replaces its API's address (a proxy, a test double).
    ``url_purges`` also purges the URLs an unsafe method invalidated (RFC 9111 §4.4).
    ``max_items_per_call`` lowers the vendor's per-call limit (never raises it past it).
    """

    kind: PurgeKind | None = None
    urls: tuple[str, ...] = ()
    soft: bool = False
    url_purges: bool = True
    service_id: str | None = None
    zone_id: str | None = None
    token: str | None = field(default=None, repr=False)
    token_file: str | None = None
    host: str | None = None
    client_token: str | None = field(default=None, repr=False)
    client_secret: str | None = field(default=None, repr=False)
    access_token: str | None = field(default=None, repr=False)
    edgerc: str | None = None
    edgerc_section: str = "default"
    network: Literal["production", "staging"] = "production"
    max_items_per_call: int | None = None
    timeout_seconds: float = 5.0

    def __post_init__(self) -> None:
        _require(self.kind in PURGE_KINDS, "kind", self.kind, "one of " + ", ".join(PURGE_KINDS))
        for url in self.urls:
            parts = urlsplit(url)
            _require(parts.scheme in ("http", "https") and bool(parts.hostname) and not parts.query,
                     "urls", url, "absolute http(s) URLs such as 'http://varnish:6081'")
        _require(self.timeout_seconds > 0, "timeout_seconds", self.timeout_seconds,
                 "a positive number of seconds")
        _require(self.max_items_per_call is None or self.max_items_per_call >= 1,
                 "max_items_per_call", self.max_items_per_call, "1 or more, or unset")
        check = {"varnish": self._check_varnish, "fastly": self._check_fastly,
                 "cloudflare": self._check_cloudflare, "akamai": self._check_akamai}
        check[self.kind or "varnish"]()

    # ----------------------------------------------------------------- per kind
    def _check_varnish(self) -> None:
        _require(bool(self.urls), "urls", self.urls,
                 "the Varnish instances to purge, e.g. ['http://varnish:6081']")
        for url in self.urls:
            # Each address of the name gets the purge, so the connection is made to an address:
            # plain HTTP inside the fleet (TLS ends at the load balancer in front of Varnish).
            _require(url.startswith("http://"), "urls", url,
                     "http:// URLs of the Varnish instances (purges stay inside the fleet)")
        self._unused(("token", "token_file", "service_id", "zone_id", "host", "client_token",
                      "client_secret", "access_token", "edgerc"),
                     "the shipped VCL admits purges by client address (acl purgers)")

    def _check_fastly(self) -> None:
        _require(bool(self.service_id), "service_id", self.service_id,
                 "the Fastly service ID whose cache holds the pages")
        self._check_token("a Fastly API token with purge_select scope")
        self._unused(("zone_id", "host", "client_token", "client_secret", "access_token", "edgerc"),
                     "Fastly targets use service_id and token")
        self._single_api_url()

    def _check_cloudflare(self) -> None:
        _require(bool(self.zone_id), "zone_id", self.zone_id, "the Cloudflare zone ID of the site")
        self._check_token("a Cloudflare API token with the Cache Purge permission")
        _require(not self.soft, "soft", self.soft,
                 "false: Cloudflare has no soft purge (purged content is fetched again)")
        self._unused(("service_id", "host", "client_token", "client_secret", "access_token",
                      "edgerc"), "Cloudflare targets use zone_id and token")
        self._single_api_url()

    def _check_akamai(self) -> None:
        _require(not self.soft, "soft", self.soft,
                 "false: Akamai targets always use Fast Purge 'invalidate', which revalidates "
                 "with the origin before serving")
        inline = [name for name in _AKAMAI_FIELDS if getattr(self, name)]
        if self.edgerc is not None:
            _require(not inline, inline[0] if inline else "edgerc", HIDDEN,
                     "unset when edgerc is set (give the credentials one way)")
            _read_edgerc(self.edgerc, self.edgerc_section)
        else:
            missing = [name for name in _AKAMAI_FIELDS if not getattr(self, name)]
            _require(not missing, missing[0] if missing else "edgerc", None,
                     "set, with the other Akamai API credentials (host, client_token, "
                     "client_secret, access_token), or an edgerc file")
            host = self.host or ""
            _require("/" not in host and ":" not in host, "host", host,
                     "the API host name alone, e.g. 'akab-xxxx.purge.akamaiapis.net'")
        self._unused(("token", "token_file", "service_id", "zone_id"),
                     "Akamai targets use EdgeGrid credentials")
        self._single_api_url()

    def _check_token(self, what: str) -> None:
        if self.token is not None and self.token_file is not None:
            raise ConfigError(key="token_file", value=self.token_file,
                              expected="unset when token is set (give the token one way)")
        if self.token_file is not None:
            read_secret_file(self.token_file, "token_file")
        elif not self.token:
            raise ConfigError(key="token", value=None, expected=f"{what} (or token_file)")

    def _unused(self, names: tuple[str, ...], why: str) -> None:
        for name in names:
            value = getattr(self, name)
            if value:
                shown = HIDDEN if name in ("token", "client_token", "client_secret",
                                           "access_token") else value
                raise ConfigError(key=name, value=shown,
                                  expected=f"unset for a {self.kind} target ({why})")

    def _single_api_url(self) -> None:
        _require(len(self.urls) <= 1, "urls", self.urls,
                 f"at most one URL for a {self.kind} target (its API's address, for a proxy)")

    # ----------------------------------------------------------------- secrets
    def resolved_token(self) -> str:
        """The API token: ``token``, else the content of ``token_file``."""
        if self.token is not None:
            return self.token
        if self.token_file is None:
            raise ConfigError(key="token", value=None, expected="a token or token_file")
        return read_secret_file(self.token_file, "token_file")

    def secrets(self) -> tuple[str, ...]:
        """Every credential value of this target (to scrub from anything shown)."""
        if self.kind in ("fastly", "cloudflare"):
            return (self.resolved_token(),)
        if self.kind == "akamai":
            credentials = self.akamai_credentials()
            return tuple(credentials[name] for name in ("client_token", "client_secret", "access_token"))
        return ()

    def akamai_credentials(self) -> dict[str, str]:
        """host, client_token, client_secret and access_token, from the fields or ``edgerc``."""
        if self.edgerc is not None:
            return _read_edgerc(self.edgerc, self.edgerc_section)
        return {name: str(getattr(self, name)) for name in _AKAMAI_FIELDS}


@dataclass(frozen=True, slots=True)
class PurgeConfig:
    """Edge purges: every invalidation of this app is also sent to each of ``targets``.

    Invalidations are queued durably before ``scalekit.invalidate()`` returns — in a Redis
    stream under ``redis.key_prefix`` + ``queue`` when Redis is configured (one stream per
    target, read by a consumer group with a consumer in every app process, so each purge is
    sent once per fleet), else (or while Redis is unreachable) in ``edge-purges.sqlite3``
    under ``state_dir``, read by the app processes of this host. A purge waits
    ``settle_seconds`` before it is sent, so that every instance has dropped its own copy
    (the edge refetches from them) and purges of the same keys made meanwhile are merged.
    Failures are retried with exponential backoff and jitter between ``retry_min_seconds``
    and ``retry_max_seconds`` (longer when the vendor says so in ``Retry-After``); a purge
    still unsent after ``give_up_after_seconds`` is dropped and counted. A consumer that
    died holding purges has them taken over after ``reclaim_after_seconds``.
    """

    enabled: bool = True
    targets: dict[str, PurgeTargetConfig] = field(default_factory=dict)
    queue: str = "edge-purges"
    settle_seconds: float = 0.1
    retry_min_seconds: float = 1.0
    retry_max_seconds: float = 300.0
    give_up_after_seconds: float = 86400.0
    reclaim_after_seconds: float = 30.0

    def __post_init__(self) -> None:
        for name in self.targets:
            _require(bool(_TARGET_NAME.match(name)), "targets", name,
                     "target names of lower-case letters, digits, '-' and '_' (at most 63)")
        _require(bool(_QUEUE_NAME.match(self.queue)), "queue", self.queue,
                 "a name of letters, digits, '_', '.', ':' or '-' (at most 64)")
        _require(0 <= self.settle_seconds <= 60, "settle_seconds", self.settle_seconds,
                 "0 to 60 seconds")
        _require(0 < self.retry_min_seconds <= self.retry_max_seconds, "retry_min_seconds",
                 self.retry_min_seconds, "a positive number of seconds, at most retry_max_seconds")
        _require(self.give_up_after_seconds > 0, "give_up_after_seconds",
                 self.give_up_after_seconds, "a positive number of seconds")
        _require(self.reclaim_after_seconds >= 1, "reclaim_after_seconds",
                 self.reclaim_after_seconds, "1 second or more (longer than one purge call)")

    @property
    def active(self) -> bool:
        """Whether anything is to be purged at all."""
        return self.enabled and bool(self.targets)
