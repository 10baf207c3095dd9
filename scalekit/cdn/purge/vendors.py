"""What each edge is sent: one builder per vendor turns tags or URLs into :class:`Call` values.

Pure apart from the clock and nonce Akamai's signature needs and the name resolution that
finds every Varnish instance (both injected). Each batch stays within the vendor's documented
per-call limits, and tags are encoded exactly as :mod:`scalekit.cdn.surrogate` emitted them,
so the key purged is the key the edge stored:

==========  ==============================================  ===============================
vendor      purge by tag / by URL                           per-call limit (source)
==========  ==============================================  ===============================
varnish     ``PURGE /`` + ``xkey-purge: k1 k2`` / ``PURGE    one header line of 8000 bytes
            path`` with the URL's Host, to every instance    (http_req_hdr_len is 8 KiB)
fastly      ``POST /service/{id}/purge`` ``{"surrogate_      256 keys (Fastly API, "Purge
            keys": [..]}`` / ``POST /purge/{host}{path}``    multiple surrogate key tags")
cloudflare  ``POST /client/v4/zones/{zone}/purge_cache``     100 tags or URLs (Cloudflare
            ``{"tags": [..]}`` / ``{"files": [..]}``         "Purge cache": purge limits)
akamai      ``POST /ccu/v3/invalidate/tag/{network}`` /      50,000-byte body (Fast Purge
            ``.../url/{network}``, ``{"objects": [..]}``     413); 5,000 tags, 10,000 URLs
==========  ==============================================  ===============================
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Protocol
from urllib.parse import quote, urlsplit

from ..surrogate import DIALECTS, encode_key
from .calls import Call, batches
from .config import PurgeTargetConfig
from .edgegrid import edgegrid_authorization, edgegrid_timestamp

__all__ = ["Vendor", "build_vendor", "resolve_addresses"]

JSON = "application/json"
FASTLY_API = "https://api.fastly.com"
FASTLY_MAX_KEYS = 256
CLOUDFLARE_API = "https://api.cloudflare.com"
CLOUDFLARE_MAX_ITEMS = 100
AKAMAI_MAX_BODY_BYTES = 50_000
AKAMAI_MAX_TAGS = 5_000  # the cache-tag bucket: a larger request could never get tokens
AKAMAI_MAX_URLS = 10_000
VARNISH_MAX_LINE_BYTES = 8000
_EMPTY_OBJECTS = len('{"objects": []}')
Resolve = Callable[[str, int], list[str]]


class Vendor(Protocol):
    """Builds the calls that purge tags or URLs at one target."""

    def tag_calls(self, tags: Sequence[str]) -> list[Call]: ...

    def url_calls(self, urls: Sequence[str]) -> list[Call]: ...


def resolve_addresses(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (a headless Service lists each replica); raises
    OSError when it resolves to none."""
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in found))


def _encoded(tags: Sequence[str], dialect_name: str) -> list[tuple[str, str]]:
    """(queue item, key as the edge stored it) for each tag the dialect could carry."""
    dialect = DIALECTS[dialect_name]
    pairs = []
    for tag in tags:
        key = encode_key(tag, dialect)
        if len(key.encode("utf-8")) <= dialect.max_key_bytes:  # longer ones were never emitted
            pairs.append((f"t:{tag}", key))
    return pairs


def _keyed_batches(pairs: list[tuple[str, str]], *, max_count: int, max_bytes: int | None = None,
                   overhead: int = 0, size: Callable[[str], int] = len) -> list[list[tuple[str, str]]]:
    by_key = {key: item for item, key in pairs}
    grouped = batches(by_key, max_count=max_count, max_bytes=max_bytes, overhead=overhead, size=size)
    return [[(by_key[key], key) for key in batch] for batch in grouped]


def _limit(config: PurgeTargetConfig, vendor_limit: int) -> int:
    return min(vendor_limit, config.max_items_per_call or vendor_limit)


def _json_size(text: str) -> int:
    return len(json.dumps(text).encode("utf-8"))


class VarnishVendor:
    """Varnish with vmod_xkey behind ``deploy/varnish/default.vcl``: every instance of every
    configured URL gets every purge."""

    def __init__(self, config: PurgeTargetConfig, *, resolve: Resolve = resolve_addresses) -> None:
        self.nodes = [urlsplit(url) for url in config.urls]
        self.header = "xkey-softpurge" if config.soft else "xkey-purge"
        self.max_keys = _limit(config, 1 << 30)
        self.resolve = resolve

    def _instances(self) -> list[tuple[str, str]]:
        """(base URL, address) of every instance, resolved now (replicas come and go)."""
        out = []
        for node in self.nodes:
            port = node.port or (443 if node.scheme == "https" else 80)
            for address in self.resolve(node.hostname or "", port):
                out.append((f"{node.scheme}://{node.netloc}", address))
        return out

    def tag_calls(self, tags: Sequence[str]) -> list[Call]:
        groups = _keyed_batches(_encoded(tags, "varnish"), max_count=self.max_keys,
                                max_bytes=VARNISH_MAX_LINE_BYTES, overhead=1)
        instances = self._instances()
        return [Call("PURGE", f"{base}/", ((self.header, " ".join(key for _, key in group)),),
                     items=tuple(item for item, _ in group), connect_to=address)
                for group in groups for base, address in instances]

    def url_calls(self, urls: Sequence[str]) -> list[Call]:
        instances = self._instances()
        calls: list[Call] = []
        for url in urls:
            parts = urlsplit(url)
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            # Always a hard purge: the shipped VCL keys on scheme, Host and URL.
            headers = (("host", parts.netloc), ("x-forwarded-proto", parts.scheme))
            calls.extend(Call("PURGE", f"{base}{target}", headers, items=(f"u:{url}",),
                              connect_to=address) for base, address in instances)
        return calls


class FastlyVendor:
    """Fastly's purge API: bulk purge by surrogate key, purge a URL; ``Fastly-Key`` auth."""

    def __init__(self, config: PurgeTargetConfig) -> None:
        self.base = (config.urls[0] if config.urls else FASTLY_API).rstrip("/")
        self.service_id = quote(config.service_id or "", safe="")
        self.headers: tuple[tuple[str, str], ...] = (("fastly-key", config.resolved_token()),
                                                    ("accept", JSON))
        if config.soft:
            self.headers += (("fastly-soft-purge", "1"),)
        self.max_keys = _limit(config, FASTLY_MAX_KEYS)

    def tag_calls(self, tags: Sequence[str]) -> list[Call]:
        return [Call("POST", f"{self.base}/service/{self.service_id}/purge",
                     self.headers + (("content-type", JSON),),
                     json.dumps({"surrogate_keys": [key for _, key in group]}).encode("utf-8"),
                     items=tuple(item for item, _ in group))
                for group in _keyed_batches(_encoded(tags, "fastly"), max_count=self.max_keys)]

    def url_calls(self, urls: Sequence[str]) -> list[Call]:
        calls = []
        for url in urls:
            parts = urlsplit(url)
            cached = parts.netloc + (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            calls.append(Call("POST", f"{self.base}/purge/{cached}", self.headers, items=(f"u:{url}",)))
        return calls


class CloudflareVendor:
    """Cloudflare's purge_cache: by cache tag and by URL ("files"); bearer API token."""

    def __init__(self, config: PurgeTargetConfig) -> None:
        base = (config.urls[0] if config.urls else CLOUDFLARE_API).rstrip("/")
        self.url = f"{base}/client/v4/zones/{quote(config.zone_id or '', safe='')}/purge_cache"
        self.headers = (("authorization", f"Bearer {config.resolved_token()}"),
                        ("content-type", JSON), ("accept", JSON))
        self.max_items = _limit(config, CLOUDFLARE_MAX_ITEMS)

    def tag_calls(self, tags: Sequence[str]) -> list[Call]:
        return [self._call("tags", group)
                for group in _keyed_batches(_encoded(tags, "cloudflare"), max_count=self.max_items)]

    def url_calls(self, urls: Sequence[str]) -> list[Call]:
        pairs = [(f"u:{url}", url) for url in urls]
        return [self._call("files", group)
                for group in _keyed_batches(pairs, max_count=self.max_items)]

    def _call(self, field: str, group: list[tuple[str, str]]) -> Call:
        body = json.dumps({field: [value for _, value in group]}).encode("utf-8")
        return Call("POST", self.url, self.headers, body, items=tuple(item for item, _ in group))


class AkamaiVendor:
    """Akamai Fast Purge v3 ``invalidate`` by cache tag and by URL, EdgeGrid-signed."""

    def __init__(self, config: PurgeTargetConfig, *, clock: Callable[[], float] = time.time,
                 nonce: Callable[[], str] = lambda: str(uuid.uuid4())) -> None:
        self.credentials = config.akamai_credentials()
        base = config.urls[0] if config.urls else f"https://{self.credentials['host']}"
        self.base = base.rstrip("/")
        self.network = config.network
        self.max_tags = _limit(config, AKAMAI_MAX_TAGS)
        self.max_urls = _limit(config, AKAMAI_MAX_URLS)
        self.clock = clock
        self.nonce = nonce

    def tag_calls(self, tags: Sequence[str]) -> list[Call]:
        return self._calls("tag", _encoded(tags, "akamai"), self.max_tags)

    def url_calls(self, urls: Sequence[str]) -> list[Call]:
        return self._calls("url", [(f"u:{url}", url) for url in urls], self.max_urls)

    def _calls(self, kind: str, pairs: list[tuple[str, str]], max_count: int) -> list[Call]:
        url = f"{self.base}/ccu/v3/invalidate/{kind}/{self.network}"
        groups = _keyed_batches(pairs, max_count=max_count, size=_json_size, overhead=2,
                                max_bytes=AKAMAI_MAX_BODY_BYTES - _EMPTY_OBJECTS)
        calls = []
        for group in groups:
            body = json.dumps({"objects": [value for _, value in group]}).encode("utf-8")
            authorization = edgegrid_authorization(
                method="POST", url=url, body=body, timestamp=edgegrid_timestamp(self.clock()),
                nonce=self.nonce(), client_token=self.credentials["client_token"],
                client_secret=self.credentials["client_secret"],
                access_token=self.credentials["access_token"])
            calls.append(Call("POST", url, (("authorization", authorization), ("content-type", JSON),
                                            ("accept", JSON)), body,
                              items=tuple(item for item, _ in group)))
        return calls


def build_vendor(config: PurgeTargetConfig, *, resolve: Resolve = resolve_addresses) -> Vendor:
    """The call builder for one configured target."""
    if config.kind == "varnish":
        return VarnishVendor(config, resolve=resolve)
    if config.kind == "fastly":
        return FastlyVendor(config)
    if config.kind == "cloudflare":
        return CloudflareVendor(config)
    return AkamaiVendor(config)
