"""Optional dependencies: which extra a setting or a command needs, checked before anything
starts, so that a missing one is one line naming the command that installs it.

scalekit's core needs none of them; each extra brings the packages of one feature. A setting
that uses a feature whose packages are absent (``redis.url`` without redis-py) would otherwise
fail deep inside a tier or on the first request, as a traceback or, worse, as a tier that stays
silently off. ``wrap()`` and the ``serve``, ``check`` and ``demo`` commands call
:func:`check_config_extras` first; commands check their own needs with :func:`require_extras`.

>>> from scalekit.config import load_config
>>> needed_extras(load_config({"redis": {"url": "redis://cache:6379/0"}}, environ={}, cwd="/nonexistent"))
[('redis', 'redis.url is set')]
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable

from .config import Config
from .errors import MissingExtraError
from .pool.engines import engine_url

__all__ = ["EXTRA_MODULES", "check_config_extras", "missing_modules", "needed_extras", "require_extras"]

# The modules each extra brings that scalekit (or the example shops, for `demo`) imports.
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "redis": ("redis",),
    "postgres": ("psycopg2",),
    "server": ("gunicorn", "uvicorn"),
    "granian": ("granian",),
    "flask": ("flask",),
    "fastapi": ("fastapi", "starlette"),
    "django": ("django", "asgiref"),
    "assets": ("servestatic",),
    "demo": ("gunicorn", "uvicorn", "servestatic", "jinja2"),
}


def missing_modules(extra: str) -> list[str]:
    """The modules of ``extra`` that cannot be imported here."""
    return [name for name in EXTRA_MODULES[extra] if importlib.util.find_spec(name) is None]


def needed_extras(config: Config) -> list[tuple[str, str]]:
    """``(extra, the setting that needs it)`` for every feature ``config`` turns on."""
    needed: list[tuple[str, str]] = []
    if config.redis.url:
        needed.append(("redis", "redis.url is set"))
    if config.pool.enabled:
        for name, database in config.pool.databases.items():
            if engine_url(database, config.state_dir).get_driver_name() == "psycopg2":
                needed.append(("postgres", f"pool.databases.{name}.url is a postgresql:// URL"))
                break
    if config.cdn.enabled and config.cdn.serve_assets and config.cdn.assets_manifest:
        needed.append(("assets", "cdn.assets_manifest is set"))
    return needed


def require_extras(extras: Iterable[str], *, needed_for: str) -> None:
    """Raise :class:`MissingExtraError` unless every module of ``extras`` can be imported.

    The message names what is missing and the one command that installs all of ``extras``:
    ``the fastapi demo needs fastapi, jinja2, which are not installed: pip install
    "scalekit[demo,fastapi]"``.
    """
    wanted = list(dict.fromkeys(extras))
    missing = list(dict.fromkeys(module for extra in wanted for module in missing_modules(extra)))
    if missing:
        raise MissingExtraError(f"{needed_for} needs {', '.join(missing)}, which "
                                f"{'is' if len(missing) == 1 else 'are'} not installed", extras=tuple(wanted))


def check_config_extras(config: Config) -> None:
    """Raise :class:`MissingExtraError` if a setting of ``config`` needs an absent extra."""
    missing = [(extra, reason) for extra, reason in needed_extras(config) if missing_modules(extra)]
    if missing:
        reasons = "; ".join(f"{reason}, but {', '.join(missing_modules(extra))} is not installed"
                            for extra, reason in missing)
        raise MissingExtraError(reasons, extras=tuple(extra for extra, _ in missing))
