"""Every exception scalekit raises, rooted at :class:`ScalekitError`.

    ScalekitError
    ├── ConfigError (ValueError)   a bad configuration value; raised at start-up, names the key
    │   └── UnknownKeyError        a key or SCALEKIT_* variable that names no setting
    ├── WrapError (TypeError)  wrap() was given something that is neither WSGI nor ASGI
    ├── MissingExtraError (ImportError)  a setting or command needs an extra that is not installed
    ├── TierError              a cache tier (Redis, disk) failed; caught by the cache, never reaches the app
    └── PoolError
        └── PoolTimeoutError   no pooled connection within pool_timeout; answered as 503 + Retry-After
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ConfigError",
    "MissingExtraError",
    "PoolError",
    "PoolTimeoutError",
    "ScalekitError",
    "TierError",
    "UnknownKeyError",
    "WrapError",
    "require",
]


class ScalekitError(Exception):
    """Root of every scalekit exception, so callers can catch ours and nothing else."""


class ConfigError(ScalekitError, ValueError):
    """A configuration value is invalid (or, as :class:`UnknownKeyError`, its key is unknown).

    Carries ``key`` (dotted, e.g. ``cache.ttl_seconds``), ``value``, ``expected`` (what is
    accepted), ``source`` (the file, variable or argument it came from) and, for unknown keys,
    the nearest valid key in ``suggestion``, so tools can show them.

    >>> str(ConfigError(key="metrics.path", value="metrics", expected="a path starting with '/'"))
    "metrics.path is 'metrics'; expected a path starting with '/'."
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
        where = f" (from {self.source})" if self.source else ""
        if self.expected:
            text = f"{self.key} is {_shown(self.value)}{where}; expected {self.expected}."
            if self.detail:
                text += f" {self.detail}"
        elif self.key:
            text = f"{self.key}{where}: {self.detail}"
        else:
            text = f"{self.detail}{where}"
        if self.suggestion:
            text += f" Did you mean '{self.suggestion}'?"
        return text

    def under(self, prefix: str, source: str | None = None) -> ConfigError:
        """The same error with its key placed under ``prefix`` (the section it was found in)."""
        return type(self)(
            self.detail,
            key=f"{prefix}.{self.key}" if self.key else prefix,
            value=self.value,
            expected=self.expected,
            suggestion=(f"{prefix}.{self.suggestion}" if self.suggestion else None),
            source=self.source or (source or ""),
        )


class UnknownKeyError(ConfigError):
    """A key in a file or argument, or a ``SCALEKIT_*`` variable, that names no setting.

    ``expected`` lists the keys accepted at that level; ``suggestion`` is the nearest one.
    """

    def _render(self) -> str:
        where = f" in {self.source}" if self.source else ""
        if self.expected:
            text = f"unknown key '{self.key}'{where}; accepted here: {self.expected}."
            if self.detail:
                text += f" {self.detail}"
        else:
            text = self.detail or f"unknown key '{self.key}'{where}."
        if self.suggestion:
            text += f" Did you mean '{self.suggestion}'?"
        return text


def require(condition: bool, key: str, value: Any, expected: str) -> None:
    """Raise a :class:`ConfigError` for ``key`` unless ``condition`` holds.

    For section dataclasses' ``__post_init__``; ``key`` is relative to the section, the loader
    adds the section's prefix and the source. Also importable as ``scalekit.config.require``.

    >>> require(5 > 0, "pool_size", 5, "a positive number")
    """
    if not condition:
        raise ConfigError(key=key, value=value, expected=expected)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


class WrapError(ScalekitError, TypeError):
    """``wrap()`` received an object that is neither a WSGI nor an ASGI 3 application."""


class MissingExtraError(ScalekitError, ImportError):
    """A setting or command needs packages of an extra that is not installed.

    Raised before anything starts (``wrap()``, ``scalekit serve``, ``check``, ``demo``), with
    a one-line message ending in the command that installs ``extras``; no import traceback.

    >>> str(MissingExtraError("redis.url is set, but redis is not installed", extras=("redis",)))
    'redis.url is set, but redis is not installed: pip install "scalekit[redis]"'
    """

    def __init__(self, message: str, *, extras: tuple[str, ...]) -> None:
        self.extras = extras
        self.install_command = f'pip install "scalekit[{",".join(extras)}]"'
        super().__init__(f"{message}: {self.install_command}")


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
