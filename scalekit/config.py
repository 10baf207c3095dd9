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
import difflib
import json
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from .cache.config import CacheConfig
from .cdn.config import CDNConfig
from .errors import ConfigError
from .pool.config import PoolConfig

__all__ = [
    "Config",
    "MetricsConfig",
    "RedisConfig",
    "load_config",
]

ENV_PREFIX = "SCALEKIT_"
# Environment variables that steer loading itself rather than name a key.
LOADER_ENV = frozenset({"SCALEKIT_CONFIG"})

DEFAULT_BUCKETS_SECONDS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)


def require(condition: bool, key: str, value: Any, expected: str) -> None:
    """Raise a :class:`ConfigError` for ``key`` unless ``condition`` holds (used in __post_init__)."""
    if not condition:
        raise ConfigError(key=key, value=value, expected=expected)


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

    def __post_init__(self) -> None:
        require(self.path.startswith("/"), "path", self.path, "a path starting with '/'")
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
    cluster: bool = False
    socket_timeout_seconds: float = 0.05
    connect_timeout_seconds: float = 0.1
    circuit_cool_down_seconds: float = 5.0
    key_prefix: str = "scalekit:"

    def __post_init__(self) -> None:
        if self.url is not None:
            require(self.url.startswith(("redis://", "rediss://", "unix://")), "url", self.url,
                    "'redis://host:port/db', 'rediss://…' or 'unix:///path'")
        require(self.socket_timeout_seconds > 0, "socket_timeout_seconds",
                self.socket_timeout_seconds, "a positive number of seconds")
        require(self.connect_timeout_seconds > 0, "connect_timeout_seconds",
                self.connect_timeout_seconds, "a positive number of seconds")
        require(self.circuit_cool_down_seconds >= 0, "circuit_cool_down_seconds",
                self.circuit_cool_down_seconds, "zero or more seconds")


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
) -> Config:
    """Build a :class:`Config` from keyword arguments, ``SCALEKIT_*`` env and toml, in that order.

    ``kwargs`` may hold section dicts (``{"cache": {"ttl_seconds": 60}}``), section objects
    (``MetricsConfig(...)``), ``False`` to switch a section off, or a whole ``config=Config(...)``.
    """
    kwargs = dict(kwargs or {})
    environ = os.environ if environ is None else environ
    base = Path(cwd) if cwd is not None else Path.cwd()
    if "config" in kwargs:
        given = kwargs.pop("config")
        if not isinstance(given, Config):
            raise ConfigError(key="config", value=given, expected="a scalekit.Config instance")
        if kwargs:
            return _build(Config, _merge(_as_dict(given), _normalise_kwargs(kwargs)), "", "arguments")
        return given
    file_path = config_file or kwargs.pop("config_file", None) or environ.get("SCALEKIT_CONFIG")
    layers: list[tuple[dict[str, Any], str]] = []
    file_values, file_name = _read_toml(base, file_path)
    if file_values:
        layers.append((file_values, file_name))
    env_values = _read_environ(environ)
    if env_values:
        layers.append((env_values, "environment"))
    if kwargs:
        layers.append((_normalise_kwargs(kwargs), "arguments"))
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for values, source in layers:
        _check_known(Config, values, "", source)
        merged = _merge(merged, values)
        for top in values:
            sources[top] = source
    return _build(Config, merged, "", sources)


def _normalise_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        if value is False and key in _section_names():
            out[key] = {"enabled": False}
        elif value is True and key in _section_names():
            out[key] = {"enabled": True}
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            out[key] = _as_dict(value)
        else:
            out[key] = value
    return out


def _section_names() -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(Config) if _is_dataclass_type(_hints(Config)[f.name]))


def _as_dict(obj: Any) -> Any:
    """Like dataclasses.asdict but keeps nested dataclasses as mappings of their fields only."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _as_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: _as_dict(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return tuple(_as_dict(v) for v in obj)
    return obj


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def _read_toml(base: Path, explicit: str | os.PathLike[str] | None) -> tuple[dict[str, Any], str]:
    if explicit is not None:
        path = Path(explicit)
        if not path.is_absolute():
            path = base / path
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} (from SCALEKIT_CONFIG or config_file) "
                              "does not exist; create it or unset the setting.")
        return _parse_toml(path), str(path)
    candidate = base / "scalekit.toml"
    if candidate.is_file():
        return _parse_toml(candidate), str(candidate)
    pyproject = base / "pyproject.toml"
    if pyproject.is_file():
        data = _parse_toml(pyproject)
        section = data.get("tool", {}).get("scalekit")
        if isinstance(section, dict):
            return section, f"{pyproject} [tool.scalekit]"
    return {}, ""


def _parse_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}. Fix the file or point "
                          "SCALEKIT_CONFIG at another one.") from exc


# --------------------------------------------------------------------------- environment


def _read_environ(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name in LOADER_ENV:
            continue
        parts = name[len(ENV_PREFIX):].lower().split("_")
        path = _resolve_env_path(Config, parts)
        if path is None:
            candidates = [ENV_PREFIX + "_".join(p).upper() for p in _env_paths(Config, ())]
            nearest = difflib.get_close_matches(name, candidates, n=1)
            raise ConfigError(
                f"unknown environment variable {name}; every SCALEKIT_* variable must name a "
                "config key (SCALEKIT_SECTION_KEY, e.g. SCALEKIT_CACHE_ENABLED)."
                + (f" Did you mean {nearest[0]}?" if nearest else "")
            )
        node = values
        for step in path[:-1]:
            node = node.setdefault(step, {})
        node[path[-1]] = raw
    return values


def _resolve_env_path(cls: type, parts: list[str]) -> list[str] | None:
    """Split env name parts into a key path, matching field names that contain underscores."""
    hints = _hints(cls)
    for end in range(len(parts), 0, -1):
        name = "_".join(parts[:end])
        if name not in hints:
            continue
        rest = parts[end:]
        target = hints[name]
        if not rest:
            return [name]
        if _is_dataclass_type(target):
            sub = _resolve_env_path(target, rest)
            if sub is not None:
                return [name, *sub]
        value_type = _dict_value_type(target)
        if value_type is not None and _is_dataclass_type(value_type):
            for split in range(len(rest) - 1, 0, -1):
                sub = _resolve_env_path(value_type, rest[split:])
                if sub is not None:
                    return [name, "_".join(rest[:split]), *sub]
    return None


def _env_paths(cls: type, prefix: tuple[str, ...]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for name, target in _hints(cls).items():
        if _is_dataclass_type(target):
            out.extend(_env_paths(target, (*prefix, name)))
        else:
            out.append((*prefix, name))
    return out


# --------------------------------------------------------------------------- conversion


def _check_known(cls: type, values: Mapping[str, Any], prefix: str, source: str) -> None:
    hints = _hints(cls)
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if key not in hints:
            nearest = difflib.get_close_matches(key, list(hints), n=1, cutoff=0.5)
            raise ConfigError(
                f"unknown key '{dotted}' in {source or 'configuration'}; accepted keys here: "
                f"{', '.join(sorted(hints))}."
                + (f" Did you mean '{prefix}{nearest[0]}'?" if nearest else "")
            )
        target = hints[key]
        if _is_dataclass_type(target) and isinstance(value, Mapping):
            _check_known(target, value, f"{dotted}.", source)


def _build(cls: type, values: Mapping[str, Any], prefix: str, sources: Mapping[str, str] | str) -> Any:
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for key, raw in values.items():
        source = sources if isinstance(sources, str) else sources.get(key, "")
        if key not in hints:
            _check_known(cls, {key: raw}, prefix, source)
        kwargs[key] = _convert(raw, hints[key], f"{prefix}{key}", source)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        if prefix:
            raise exc.under(prefix.rstrip("."), source=_first_source(sources)) from None
        raise


def _first_source(sources: Mapping[str, str] | str) -> str:
    if isinstance(sources, str):
        return sources
    return next(iter(sources.values()), "")


_BOOL_WORDS = {"1": True, "true": True, "yes": True, "on": True,
               "0": False, "false": False, "no": False, "off": False}


def _convert(raw: Any, target: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(target)
    args = typing.get_args(target)
    if _is_dataclass_type(target):
        if dataclasses.is_dataclass(raw) and isinstance(raw, target):
            return raw
        if isinstance(raw, str) and raw.strip().startswith("{"):
            raw = _json(raw, key, source)
        if not isinstance(raw, Mapping):
            raise ConfigError(key=key, value=raw, expected="a table of settings", source=source)
        return _build(target, raw, f"{key}.", source)
    if origin in (Union, types.UnionType):
        if raw is None or (isinstance(raw, str) and raw.lower() in ("", "none", "null")):
            if type(None) in args:
                return None
        options = [a for a in args if a is not type(None)]
        errors: list[ConfigError] = []
        for option in options:
            try:
                return _convert(raw, option, key, source)
            except ConfigError as exc:
                errors.append(exc)
        raise ConfigError(key=key, value=raw, expected=" or ".join(e.expected for e in errors),
                          source=source)
    if origin is Literal:
        if raw in args:
            return raw
        nearest = difflib.get_close_matches(str(raw), [str(a) for a in args], n=1)
        raise ConfigError(key=key, value=raw, expected="one of " + ", ".join(repr(a) for a in args),
                          source=source, suggestion=None) if not nearest else ConfigError(
            f"Did you mean {nearest[0]!r}?", key=key, value=raw,
            expected="one of " + ", ".join(repr(a) for a in args), source=source)
    if origin is tuple:
        item_type = args[0] if args else Any
        if isinstance(raw, str):
            text = raw.strip()
            raw = _json(text, key, source) if text.startswith("[") else [
                p.strip() for p in text.split(",") if p.strip()]
        if isinstance(raw, Mapping) or not isinstance(raw, (list, tuple)):
            raise ConfigError(key=key, value=raw, expected="a list", source=source)
        return tuple(_convert(item, item_type, f"{key}[{i}]", source) for i, item in enumerate(raw))
    if origin is dict:
        value_type = args[1] if len(args) == 2 else Any
        if isinstance(raw, str) and raw.strip().startswith("{"):
            raw = _json(raw, key, source)
        if not isinstance(raw, Mapping):
            raise ConfigError(key=key, value=raw, expected="a table", source=source)
        return {str(k): _convert(v, value_type, f"{key}.{k}", source) for k, v in raw.items()}
    if target is Any:
        return raw
    if target is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in _BOOL_WORDS:
            return _BOOL_WORDS[raw.strip().lower()]
        raise ConfigError(key=key, value=raw, expected="true or false", source=source)
    if target is int:
        if isinstance(raw, bool):
            raise ConfigError(key=key, value=raw, expected="an integer", source=source)
        if isinstance(raw, int):
            return raw
        if isinstance(raw, str):
            try:
                return int(raw.strip().replace("_", ""))
            except ValueError:
                pass
        raise ConfigError(key=key, value=raw, expected="an integer", source=source)
    if target is float:
        if isinstance(raw, bool):
            raise ConfigError(key=key, value=raw, expected="a number", source=source)
        if isinstance(raw, (int, float)):
            return float(raw)
        if isinstance(raw, str):
            try:
                return float(raw.strip())
            except ValueError:
                pass
        raise ConfigError(key=key, value=raw, expected="a number", source=source)
    if target is str:
        if isinstance(raw, str):
            return raw
        raise ConfigError(key=key, value=raw, expected="a string", source=source)
    return raw


def _json(text: str, key: str, source: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(key=key, value=text, expected=f"valid JSON ({exc.msg})", source=source) from None


_HINTS_CACHE: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS_CACHE.get(cls)
    if hints is None:
        resolved = typing.get_type_hints(cls)
        hints = {f.name: resolved[f.name] for f in dataclasses.fields(cls) if f.init}
        _HINTS_CACHE[cls] = hints
    return hints


def _is_dataclass_type(target: Any) -> bool:
    return isinstance(target, type) and dataclasses.is_dataclass(target)


def _dict_value_type(target: Any) -> Any:
    if typing.get_origin(target) is dict:
        args = typing.get_args(target)
        return args[1] if len(args) == 2 else None
    return None
