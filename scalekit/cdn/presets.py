"""The built-in caching policies, named so a rule can say ``policy = "page"``.

=================  ==========================================================================
preset             headers (CDN-Cache-Control when enabled)
=================  ==========================================================================
immutable-asset    ``Cache-Control: public, max-age=31536000, immutable``: fingerprinted files
                   whose URL changes with their content; every cache keeps them a year.
page               ``Cache-Control: public, max-age=0, s-maxage=60`` and
                   ``CDN-Cache-Control: max-age=60, stale-while-revalidate=30, stale-if-error=300``:
                   browsers revalidate on every use (cheap with the ETag, answered 304), shared
                   caches keep the page a minute and CDNs refresh it in the background.
api                ``Cache-Control: public, max-age=0, s-maxage=10`` and
                   ``CDN-Cache-Control: max-age=10, stale-while-revalidate=10, stale-if-error=60``:
                   like ``page`` with a shorter shared lifetime for data that moves faster.
private            ``Cache-Control: private, no-cache``: only the user's browser stores it and
                   revalidates before each use; no shared cache ever stores it.
no-store           ``Cache-Control: no-store``: nobody stores it (secrets, one-time answers).
=================  ==========================================================================

``page`` deliberately avoids ``no-cache`` for the browser: RFC 9111 §5.2.2.4 ``no-cache``
binds shared caches as well, so it would stop nginx and CDNs from serving the page.
``max-age=0`` makes the browser's copy stale at once (so it revalidates) while ``s-maxage``
(RFC 9111 §5.2.2.10) gives shared caches their own lifetime.

>>> resolve_policy("page", {}).shared_max_age_seconds
60
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import ConfigError
from .config import PolicyConfig

__all__ = ["BUILTIN_PRESETS", "ONE_YEAR_SECONDS", "preset_names", "resolve_policy"]

# RFC 9111 gives no upper bound; one year is the value every CDN and browser accepts
# as "forever" (older caches cap max-age at a year, RFC 2616 §14.21 said not to exceed it).
ONE_YEAR_SECONDS = 31_536_000

BUILTIN_PRESETS: Mapping[str, PolicyConfig] = {
    "immutable-asset": PolicyConfig(
        max_age_seconds=ONE_YEAR_SECONDS, public=True, immutable=True,
    ),
    "page": PolicyConfig(
        max_age_seconds=0, shared_max_age_seconds=60, public=True,
        stale_while_revalidate_seconds=30, stale_if_error_seconds=300,
    ),
    "api": PolicyConfig(
        max_age_seconds=0, shared_max_age_seconds=10, public=True,
        stale_while_revalidate_seconds=10, stale_if_error_seconds=60,
    ),
    "private": PolicyConfig(private=True, no_cache=True),
    "no-store": PolicyConfig(no_store=True),
}


def preset_names(custom: Mapping[str, PolicyConfig]) -> frozenset[str]:
    """Every policy name a rule may use: the built-ins and the configured ``presets``."""
    return frozenset(BUILTIN_PRESETS) | frozenset(custom)


def resolve_policy(policy: str | PolicyConfig, custom: Mapping[str, PolicyConfig]) -> PolicyConfig:
    """The :class:`PolicyConfig` a rule names: custom presets shadow the built-ins."""
    if isinstance(policy, PolicyConfig):
        return policy
    found = custom.get(policy) or BUILTIN_PRESETS.get(policy)
    if found is None:
        raise ConfigError(key="policy", value=policy,
                          expected="one of " + ", ".join(sorted(preset_names(custom))))
    return found
