"""One typed configuration, layered: keyword arguments > ``SCALEKIT_*`` env > toml > defaults.

Every section is a frozen dataclass that validates itself in ``__post_init__``; this module
turns raw values from the three sources into those dataclasses, converting by the field types
and failing on the first unknown key or bad value with a :class:`ConfigError` that names the
dotted key, the value, what is accepted and the nearest valid key.

>>> cfg = load_config(kwargs={"metrics": {"path": "/_metrics"}}, environ={}, cwd="/nonexistent")
>>> cfg.metrics.path
'/_metrics'
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from . import loader
from .cache.config import CacheConfig
from .cdn.config import CDNConfig

# errors first: section modules import ``require`` from here while this module is loading.
from .errors import ConfigError, require
from .pool.config import PoolConfig
from .provenance import Origin, Overridden, origins, overridden_of
from .secrets import check_password_source, password_of

__all__ = [
    "Config",
    "MetricsConfig",
    "RedisConfig",
    "TracingConfig",
    "env_name",
    "iter_settings",
    "load_config",
    "load_config_origins",
    "load_config_reporting",
    "require",
]

ENV_PREFIX = "SCALEKIT_"
# Environment variables that steer loading or serving rather than name a key (the serve ones
# tell `scalekit serve`'s server processes what to import; see scalekit.serving).
LOADER_ENV = frozenset({"SCALEKIT_CONFIG", "SCALEKIT_SERVE_APP", "SCALEKIT_SERVE_KIND",
                        "SCALEKIT_SERVE_FACTORY"})
# Variables of scalekit's own test scripts, benchmarks and image build: they name no setting
# and are never read as one, so a contributor who exported one can still start an app (any
# other SCALEKIT_* name that is no setting fails at start-up, catching typos).
TOOLING_ENV = frozenset({"SCALEKIT_BENCH_REDIS_URL", "SCALEKIT_EXTRAS", "SCALEKIT_PROTOCOL_EXAMPLES",
                         "SCALEKIT_REINSTALL", "SCALEKIT_TEST_NGINX_PREFIX", "SCALEKIT_TEST_WORKERS",
                         "SCALEKIT_WHEELHOUSE"})
NOT_SETTINGS_ENV = LOADER_ENV | TOOLING_ENV

DEFAULT_BUCKETS_SECONDS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """Prometheus metrics: the request counters and the protected ``/metrics`` endpoint."""

    enabled: bool = True
    path: str = "/metrics"
    # Client addresses or networks allowed to scrape without a token. Unset: loopback only
    # when no token is configured (a bare wrap() never publishes metrics to the internet),
    # nobody when one is (behind a local reverse proxy every client looks like loopback).
    allow_from: tuple[str, ...] | None = None
    token: str | None = None
    exclude_paths: tuple[str, ...] = ()
    buckets_seconds: tuple[float, ...] = DEFAULT_BUCKETS_SECONDS
    # The live status page (and its JSON, read by `scalekit top`), guarded like the path above.
    status_page: bool = True
    status_path: str = "/_scalekit/"

    def __post_init__(self) -> None:
        require(self.path.startswith("/"), "path", self.path, "a path starting with '/'")
        require(self.status_path.startswith("/") and self.status_path.endswith("/")
                and len(self.status_path) > 1, "status_path", self.status_path,
                "a path starting and ending with '/', such as '/_scalekit/'")
        require(not self.path.startswith(self.status_path), "path", self.path,
                f"a path outside status_path ({self.status_path!r})")
        require(self.token is None or len(self.token) >= 16, "token", "<hidden>",
                "a bearer token of at least 16 characters")
        for address in self.allow_from or ():
            require(_is_network(address), "allow_from", address,
                    "IP addresses or networks such as '10.0.0.0/8' or '::1'")
        for prefix in self.exclude_paths:
            require(prefix.startswith("/"), "exclude_paths", prefix, "paths starting with '/'")
        require(list(self.buckets_seconds) == sorted(self.buckets_seconds)
                and len(self.buckets_seconds) > 0, "buckets_seconds", self.buckets_seconds,
                "a non-empty increasing list of seconds")


def _is_network(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class RedisConfig:
    """The Redis shared by the fleet: L2 cache, tag generations, invalidation channel, leases."""

    url: str | None = None
    # AUTH password apart from the URL (no percent-encoding), or a file holding it (a Docker
    # or Kubernetes secret), read at start-up. Set at most one, and then no password in url.
    password: str | None = field(default=None, repr=False)
    password_file: str | None = None
    cluster: bool = False
    socket_timeout_seconds: float = 0.05
    connect_timeout_seconds: float = 0.1
    circuit_cool_down_seconds: float = 5.0
    key_prefix: str = "scalekit:"

    def __post_init__(self) -> None:
        if self.url is not None:
            require(self.url.startswith(("redis://", "rediss://", "unix://")), "url", self.url,
                    "'redis://host:port/db', 'rediss://…' or 'unix:///path'")
        check_password_source(self.url, password=self.password, password_file=self.password_file)
        require(self.socket_timeout_seconds > 0, "socket_timeout_seconds",
                self.socket_timeout_seconds, "a positive number of seconds")
        require(self.connect_timeout_seconds > 0, "connect_timeout_seconds",
                self.connect_timeout_seconds, "a positive number of seconds")
        require(self.circuit_cool_down_seconds >= 0, "circuit_cool_down_seconds",
                self.circuit_cool_down_seconds, "zero or more seconds")

    def resolved_password(self) -> str | None:
        """``password``, else the content of ``password_file``, else None (the URL's)."""
        return password_of(password=self.password, password_file=self.password_file)


@dataclass(frozen=True, slots=True)
class TracingConfig:
    """OpenTelemetry spans (the ``otel`` extra): a server span per request unless the app's own
    instrumentation already made one, and inside it the cache lookups and stores, tag
    invalidations and pool checkouts. Off: nothing of OpenTelemetry is imported."""

    enabled: bool = False


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration; build it with :func:`load_config`, derive with ``replace``."""

    # Each Host is its own key space, so "*" cannot poison one host with another's
    # responses; production configs should still list their hosts (warned at start-up).
    allowed_hosts: tuple[str, ...] = ("*",)
    state_dir: str = ".scalekit"
    redis: RedisConfig = field(default_factory=RedisConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    cdn: CDNConfig = field(default_factory=CDNConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    pool: PoolConfig = field(default_factory=PoolConfig)
    tracing: TracingConfig = field(default_factory=TracingConfig)

    def __post_init__(self) -> None:
        require(len(self.allowed_hosts) > 0, "allowed_hosts", self.allowed_hosts,
                "a list of host names, '*' for any, or '.example.com' for a domain and its subdomains")
        require(bool(self.state_dir), "state_dir", self.state_dir, "a directory path")


# --------------------------------------------------------------------------- loading


def load_config(
    kwargs: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    config_file: str | os.PathLike[str] | None = None,
    source: str = "arguments",
) -> Config:
    """Build a :class:`Config` from keyword arguments, ``SCALEKIT_*`` env and toml, in that order.

    ``kwargs`` may hold section dicts (``{"cache": {"enabled": False}}``), section objects
    (``MetricsConfig(...)``, taken whole), ``False``/``True`` to switch a section, or a whole
    ``config=Config(...)`` (then the environment and files are not read; other kwargs still
    apply on top). The toml file is ``config_file``, else ``$SCALEKIT_CONFIG``, else
    ``scalekit.toml`` in ``cwd``, else ``[tool.scalekit]`` of ``cwd/pyproject.toml``.
    ``source`` names where ``kwargs`` came from in errors (``"settings.SCALEKIT"``).
    """
    config, _ = load_config_reporting(kwargs, environ=environ, cwd=cwd, config_file=config_file,
                                      source=source)
    return config


def load_config_reporting(
    kwargs: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    config_file: str | os.PathLike[str] | None = None,
    source: str = "arguments",
) -> tuple[Config, list[Overridden]]:
    """:func:`load_config`, and every key that two sources set to different values (the one
    used and the ones ignored), for the start-up log.

    >>> config, overridden = load_config_reporting({"metrics": {"path": "/m"}},
    ...     environ={"SCALEKIT_METRICS_PATH": "/e"}, cwd="/nonexistent")
    >>> overridden[0].used
    ('arguments', '/m')
    """
    config, found = load_config_origins(kwargs, environ=environ, cwd=cwd, config_file=config_file,
                                        source=source)
    return config, overridden_of(found)


def load_config_origins(
    kwargs: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    config_file: str | os.PathLike[str] | None = None,
    source: str = "arguments",
    framework: tuple[str, Mapping[str, Any]] | None = None,
) -> tuple[Config, dict[str, Origin]]:
    """:func:`load_config`, and where each key that a source set came from: the source used
    and the lower ones it overrode (``scalekit check`` shows them; ``wrap()`` logs conflicts).

    ``framework``: a framework's own scalekit settings (``("settings.SCALEKIT", {...})``), a
    source of its own between the environment and ``kwargs``, merged key by key like the others.

    >>> config, found = load_config_origins({"metrics": {"path": "/m"}},
    ...     environ={"SCALEKIT_METRICS_PATH": "/e"}, cwd="/nonexistent")
    >>> found["metrics.path"].source, found["metrics.path"].ignored
    ('arguments', (('environment variable SCALEKIT_METRICS_PATH', '/e'),))
    """
    kwargs = dict(kwargs or {})
    framework_settings = dict(framework[1]) if framework is not None else {}
    # A whole Config or a config file named in the framework's settings is taken as if passed
    # to wrap(), unless wrap() names one itself.
    for special in ("config", "config_file"):
        if special in framework_settings:
            kwargs.setdefault(special, framework_settings.pop(special))
    framework = (framework[0], framework_settings) if framework is not None else None
    environ = os.environ if environ is None else environ
    base = Path(cwd) if cwd is not None else Path.cwd()
    if "config" in kwargs:
        given = kwargs.pop("config")
        if not isinstance(given, Config):
            raise ConfigError(key="config", value=given, expected="a scalekit.Config instance",
                              source="arguments")
        if not kwargs and not (framework is not None and framework[1]):
            return given, {}
        # Arguments over a whole Config are one caller deriving a variant: nothing to report.
        layers: list[loader.Layer] = [(_fields_of(given), "config=Config(...)")]
        if framework is not None and framework[1]:
            layers.append((dict(framework[1]), framework[0]))
        layers.append((kwargs, source))
        return cast(Config, loader.build(Config, layers)), {}
    explicit = config_file or kwargs.pop("config_file", None) or environ.get("SCALEKIT_CONFIG")
    layers = []
    file_path = _find_config_file(base, explicit)
    if file_path is not None:
        layers.append((loader.read_toml(file_path), _file_label(file_path)))
    layers.extend(loader.read_environ(Config, environ, ENV_PREFIX, NOT_SETTINGS_ENV))
    if framework is not None and framework[1]:
        layers.append((dict(framework[1]), framework[0]))
    if kwargs:
        layers.append((kwargs, source))
    config = cast(Config, loader.build(Config, layers))
    return config, origins(Config, layers)


def _find_config_file(base: Path, explicit: str | os.PathLike[str] | None) -> Path | None:
    if explicit is not None and str(explicit) != "":
        path = Path(explicit)
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} (from config_file or SCALEKIT_CONFIG) "
                              "does not exist; create it, fix the path, or unset the setting.")
        return path
    for name in ("scalekit.toml", "pyproject.toml"):
        if (base / name).is_file():
            return base / name
    return None


def _file_label(path: Path) -> str:
    return f"{path} [tool.scalekit]" if path.name == "pyproject.toml" else str(path)


def _fields_of(section: Any) -> dict[str, Any]:
    return {f.name: getattr(section, f.name) for f in dataclasses.fields(section) if f.init}


def env_name(key: str) -> str:
    """The environment variable that sets dotted ``key``: ``cache.memory.enabled`` ->
    ``SCALEKIT_CACHE_MEMORY_ENABLED``."""
    return ENV_PREFIX + key.replace(".", "_").upper()


def iter_settings(config: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every leaf setting of ``config`` (or of one section) as ``(dotted key, value)``.

    >>> dict(iter_settings(Config()))["metrics.path"]
    '/metrics'
    """
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            yield from iter_settings(value, f"{key}.")
        elif isinstance(value, dict) and value and all(
                dataclasses.is_dataclass(v) for v in value.values()):
            for name, entry in value.items():  # named sections (pool.databases.default.url)
                yield from iter_settings(entry, f"{key}.{name}.")
        else:
            yield key, value
