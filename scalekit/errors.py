"""Every exception scalekit raises, rooted at :class:`ScalekitError`.

    ScalekitError
    ├── ConfigError            bad or unknown configuration; raised at start-up, names the key
    ├── WrapError (TypeError)  wrap() was given something that is neither WSGI nor ASGI
    ├── TierError              a cache tier (Redis, disk) failed; caught by the cache, never reaches the app
    └── PoolError
        └── PoolTimeoutError   no pooled connection within pool_timeout; answered as 503 + Retry-After
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ConfigError",
    "PoolError",
    "PoolTimeoutError",
    "ScalekitError",
    "TierError",
    "WrapError",
]


class ScalekitError(Exception):
    """Root of every scalekit exception, so callers can catch ours and nothing else."""


class ConfigError(ScalekitError, ValueError):
    """A configuration key is unknown or its value is invalid.

    Carries ``key`` (dotted, e.g. ``cache.ttl_seconds``), ``value``, ``expected`` and the nearest
    valid key in ``suggestion`` so tools can show them.
    """

    def __init__(
        self,
        message: str = "",
        *,
        key: str = "",
        value: Any = None,
        expected: str = "",
        suggestion: str | None = None,
        source: str = "",
    ) -> None:
        self.key = key
        self.value = value
        self.expected = expected
        self.suggestion = suggestion
        self.source = source
        self.detail = message
        super().__init__(self._render())

    def _render(self) -> str:
        if self.detail and not self.key:
            return self.detail
        where = f" (from {self.source})" if self.source else ""
        if self.expected:
            text = f"{self.key} is {self.value!r}{where}; expected {self.expected}."
        else:
            text = f"{self.key}{where}: {self.detail}"
        if self.detail and self.expected:
            text += f" {self.detail}"
        if self.suggestion:
            text += f" Did you mean '{self.suggestion}'?"
        return text

    def under(self, prefix: str, source: str | None = None) -> ConfigError:
        """The same error with its key placed under ``prefix`` (the section it was found in)."""
        key = f"{prefix}.{self.key}" if self.key else prefix
        return ConfigError(
            self.detail,
            key=key,
            value=self.value,
            expected=self.expected,
            suggestion=(f"{prefix}.{self.suggestion}" if self.suggestion else None),
            source=source if source is not None else self.source,
        )


class WrapError(ScalekitError, TypeError):
    """``wrap()`` received an object that is neither a WSGI nor an ASGI 3 application."""


class TierError(ScalekitError):
    """A cache tier failed; the cache turns this into a miss and never lets it reach the app."""

    def __init__(self, message: str, *, tier: str) -> None:
        super().__init__(message)
        self.tier = tier


class PoolError(ScalekitError):
    """A pooled database connection could not be provided."""


class PoolTimeoutError(PoolError):
    """No connection became free within ``pool_timeout``: the request is shed with a 503."""

    def __init__(self, message: str, *, database: str, retry_after_seconds: int = 1) -> None:
        super().__init__(message)
        self.database = database
        self.retry_after_seconds = retry_after_seconds
        self.status_hint = 503
