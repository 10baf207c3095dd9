"""Surrogate keys (cache tags) in each CDN's dialect, within each CDN's limits.

A response's tags come from ``scalekit.tag(...)`` / the pool's ``table:NAME`` tags and from
the app's own ``Surrogate-Key`` / ``Cache-Tag`` / ``Edge-Cache-Tag`` / ``xkey`` headers. They
leave in the one header the configured CDN reads, with characters it does not accept
percent-encoded (the same function encodes tags for purge calls, so both sides agree), and
never beyond its limits: a key too long for the CDN is dropped, keys past the header budget are
dropped (or, where the CDN reads several header lines, moved to another line), with a warning
once per process and reason. An invalid header is never emitted.

=============  ===============  =====  ==========  ============  ========================
dialect        header           sep    key bytes   header bytes  source of the limit
=============  ===============  =====  ==========  ============  ========================
fastly         Surrogate-Key    space  1024        16384         Fastly Surrogate-Key docs
cloudflare     Cache-Tag        comma  1024        16384         Cloudflare purge-by-tags
                                                                 (also 1000 tags at most)
akamai         Edge-Cache-Tag   comma  128         4096          Akamai Fast Purge: 128 chars,
                                                                 128 tags, 8 KB of reply
                                                                 headers in all, first line only
varnish        xkey             space  1024        8000 a line   vmod_xkey; http_resp_hdr_len
=============  ===============  =====  ==========  ============  ========================

>>> emit_surrogate_keys(["product:42", "table:orders"], DIALECTS["akamai"])
(('edge-cache-tag', 'product%3A42,table%3Aorders'),)
>>> emit_surrogate_keys(["product:42"], DIALECTS["fastly"])
(('surrogate-key', 'product:42'),)
"""

from __future__ import annotations

import logging
import re
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

__all__ = [
    "DIALECTS",
    "KEY_HEADERS",
    "Dialect",
    "emit_surrogate_keys",
    "encode_key",
    "parse_key_header",
]

log = logging.getLogger("scalekit.cdn")

# The app may tag a response in any dialect; every one is read and re-emitted in the configured
# one, so an app written for Fastly keeps working behind Cloudflare.
KEY_HEADERS = {
    "surrogate-key": " ",
    "cache-tag": ",",
    "edge-cache-tag": ",",
    "xkey": " ,",  # vmod_xkey splits on spaces and commas
}

_VISIBLE = frozenset(chr(code) for code in range(0x21, 0x7F))
# RFC 9110 §5.6.2 tchar, the set Akamai derives its tag syntax from, minus the '*' it refuses.
_AKAMAI = frozenset(string.ascii_letters + string.digits + "!#$%&'+-.^_`|~")


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one CDN reads tags: header name, separator, allowed characters and limits."""

    name: str
    header: str
    separator: str
    allowed: frozenset[str]
    max_key_bytes: int
    max_line_bytes: int
    max_keys: int | None
    multiple_lines: bool
    max_total_bytes: int
    needs_encoding: Callable[[str], object] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # One regex search tells whether a tag needs encoding at all (the common case: no).
        allowed = "".join(sorted(self.allowed - {"%"}))
        object.__setattr__(self, "needs_encoding", re.compile(f"[^{re.escape(allowed)}]").search)


DIALECTS = {
    "fastly": Dialect("fastly", "surrogate-key", " ", _VISIBLE, 1024, 16384, None, False, 16384),
    "cloudflare": Dialect("cloudflare", "cache-tag", ",", _VISIBLE - {","}, 1024, 16384, 1000, False, 16384),
    "akamai": Dialect("akamai", "edge-cache-tag", ",", _AKAMAI, 128, 4096, 128, False, 4096),
    "varnish": Dialect("varnish", "xkey", " ", _VISIBLE - {","}, 1024, 8000, None, True, 32000),
}

_warned: set[tuple[str, str]] = set()


def encode_key(tag: str, dialect: Dialect) -> str:
    """``tag`` as ``dialect`` accepts it: other characters (and ``%``) percent-encoded as UTF-8.

    Use the same function when purging, so the key purged is the key the CDN stored.
    """
    if dialect.needs_encoding(tag) is None:
        return tag
    out = []
    for char in tag:
        if char in dialect.allowed and char != "%":
            out.append(char)
        else:
            out.extend(f"%{byte:02X}" for byte in char.encode("utf-8"))
    return "".join(out)


def parse_key_header(value: str, separator: str) -> list[str]:
    """The keys of one tag header line split on ``separator`` (any of its characters); empty
    items (``a,,b``) and surrounding whitespace are dropped."""
    if "," in separator:
        value = value.replace(",", " ") if " " in separator else value
        if " " not in separator:
            return [item.strip() for item in value.split(",") if item.strip()]
    return value.split()


def emit_surrogate_keys(tags: Iterable[str], dialect: Dialect) -> tuple[tuple[str, str], ...]:
    """The header lines carrying ``tags`` for ``dialect`` (sorted, deduplicated, within limits)."""
    if not isinstance(tags, (set, frozenset)):
        tags = set(tags)
    plain = dialect.needs_encoding
    # Percent-encoding is injective, so distinct tags stay distinct keys.
    keys = [tag if plain(tag) is None else encode_key(tag, dialect) for tag in tags if tag]
    if not keys:
        return ()
    keys.sort()
    line = dialect.separator.join(keys)
    # The usual case, a few short tags: a line no longer than one key may be is within every
    # limit at once (max_key_bytes <= max_line_bytes <= max_total_bytes).
    if len(line) <= dialect.max_key_bytes and (dialect.max_keys is None or len(keys) <= dialect.max_keys):
        return ((dialect.header, line),)
    fitting = []
    for key in keys:
        if len(key) > dialect.max_key_bytes:
            _warn_once(dialect, "key_too_long",
                       f"surrogate key {key[:40]!r}... is {len(key)} bytes, over {dialect.name}'s "
                       f"limit of {dialect.max_key_bytes}; it is not emitted, so purging it will "
                       "not reach this response. Use shorter tags.")
            continue
        fitting.append(key)
    if dialect.max_keys is not None and len(fitting) > dialect.max_keys:
        _warn_once(dialect, "too_many", f"{len(fitting)} surrogate keys on one response; "
                   f"{dialect.name} reads at most {dialect.max_keys}, the rest are not emitted.")
        fitting = fitting[: dialect.max_keys]
    return _pack_lines(fitting, dialect)


def _pack_lines(keys: list[str], dialect: Dialect) -> tuple[tuple[str, str], ...]:
    lines: list[str] = []
    current: list[str] = []
    current_bytes = 0
    total_bytes = 0
    dropped = 0
    for key in keys:
        added = len(key) + (len(dialect.separator) if current else 0)
        if current and current_bytes + added > dialect.max_line_bytes and dialect.multiple_lines:
            lines.append(dialect.separator.join(current))
            current, current_bytes, added = [], 0, len(key)
        if current_bytes + added > dialect.max_line_bytes or total_bytes + added > dialect.max_total_bytes:
            dropped += 1
            continue
        current.append(key)
        current_bytes += added
        total_bytes += added
    if current:
        lines.append(dialect.separator.join(current))
    if dropped:
        _warn_once(dialect, "header_full",
                   f"{dropped} surrogate keys did not fit in {dialect.name}'s {dialect.header} "
                   f"limit of {dialect.max_total_bytes} bytes and were not emitted; purging them "
                   "will not reach this response. Tag with fewer, broader keys.")
    return tuple((dialect.header, line) for line in lines)


def _warn_once(dialect: Dialect, reason: str, message: str) -> None:
    # Logged, not warnings.warn: it is about traffic, not code, and must never fail a request.
    if (dialect.name, reason) not in _warned:
        _warned.add((dialect.name, reason))
        log.warning(message)
