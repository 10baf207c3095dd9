"""What ``scalekit check`` says about the configuration: every setting with its value and the
source it came from, and, where two sources disagree, which one is used.

The sources are those the app itself would use. With a target (``MODULE:APP``) the app is
imported and, unless it wraps itself, wrapped as ``scalekit serve`` would wrap it, so its
framework's settings (Django's ``settings.SCALEKIT``, Flask's ``app.config["SCALEKIT"]``) and
``wrap()`` arguments count. Without one: ``scalekit.toml`` and ``SCALEKIT_*``, and Django's
``settings.SCALEKIT`` when ``DJANGO_SETTINGS_MODULE`` is set (ranked as ``scalekit_django``
ranks it: a framework's settings, above the environment).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .config import Config, iter_settings, load_config_origins
from .provenance import Origin, display_value

__all__ = ["SettingsReport", "load_report", "summary_lines"]

DJANGO_SETTINGS = "settings.SCALEKIT"


@dataclass(frozen=True)
class SettingsReport:
    """A configuration, where each key some source set came from, and notes for the reader."""

    config: Config
    origins: Mapping[str, Origin] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


def load_report(target: str | None = None, *, factory: bool = False, django: bool = True,
                environ: Mapping[str, str] | None = None) -> SettingsReport:
    """The configuration ``target``'s app runs with (or, without one, the working directory's,
    with Django's settings when ``django`` and ``DJANGO_SETTINGS_MODULE`` say so), with the
    origin of every key. Raises ConfigError, MissingExtraError or the app's own error."""
    environ = os.environ if environ is None else environ
    if target is not None:
        return _report_of_app(target, factory)
    if django and environ.get("DJANGO_SETTINGS_MODULE"):
        django_settings = _django_settings()
        if django_settings is not None:
            config, found = load_config_origins(environ=environ,
                                                framework=(DJANGO_SETTINGS, django_settings))
            note = (f"{DJANGO_SETTINGS} read from DJANGO_SETTINGS_MODULE="
                    f"{environ['DJANGO_SETTINGS_MODULE']} (above the environment, as the "
                    "adapter ranks it)")
            return SettingsReport(config=config, origins=found, notes=(note,))
    config, found = load_config_origins(environ=environ)
    return SettingsReport(config=config, origins=found)


def _django_settings() -> dict[str, Any] | None:
    """``settings.SCALEKIT`` as the Django adapter reads it; None without Django installed."""
    try:  # by name, as scalekit.serving loads adapters: the package does not import them
        conf = importlib.import_module("scalekit_django.conf")
    except ImportError:
        return None
    if os.getcwd() not in sys.path:  # the settings module is imported from here, as manage.py does
        sys.path.insert(0, os.getcwd())
    return dict(conf.scalekit_settings())


def _report_of_app(target: str, factory: bool) -> SettingsReport:
    from .runtime import live_runtimes
    from .serving import import_target, is_wrapped, wrap_served_app

    before = {id(runtime) for runtime in live_runtimes()}
    app = import_target(target, factory=factory)
    served_as = "as it wraps itself" if is_wrapped(app) else "wrapped as scalekit serve would"
    if not is_wrapped(app):
        app = wrap_served_app(app)
    built = [runtime for runtime in live_runtimes() if id(runtime) not in before]
    if not built and callable(getattr(app, "build_middleware_stack", None)):
        # Starlette builds its middleware (ours among them) on the first request; build it now.
        app.build_middleware_stack()
        built = [runtime for runtime in live_runtimes() if id(runtime) not in before]
    if not built:
        config, found = load_config_origins()
        note = (f"{target} builds its scalekit pipeline on its first request; showing "
                "scalekit.toml and SCALEKIT_* only")
        return SettingsReport(config=config, origins=found, notes=(note,))
    runtime = built[-1]
    notes = [f"{target}, {served_as}"]
    if len(built) > 1:
        notes.append(f"{target} built {len(built)} scalekit pipelines; showing the last one")
    return SettingsReport(config=runtime.config, origins=runtime.origins, notes=tuple(notes))


def summary_lines(report: SettingsReport) -> list[str]:
    """Each section with its on/off state, then every setting (secrets hidden) and its source;
    a setting that lower sources set to other values says which source is used."""
    lines: list[str] = []
    sections: dict[str, list[tuple[str, Any]]] = {}
    for key, value in iter_settings(report.config):
        section, _, rest = key.partition(".")
        sections.setdefault(section if rest else "", []).append((key, value))
    for section, settings in sections.items():
        enabled_key = f"{section}.enabled"
        enabled = dict(settings).get(enabled_key)
        state = "" if enabled is None else (" on" if enabled else " off")
        source = _source_of(report, enabled_key) if enabled is not None else ""
        lines.append(f"[{section or 'general'}]{state}{source}")
        lines.extend(_conflict_lines(report, enabled_key, "    "))
        for key, value in settings:
            if key != enabled_key:
                lines.append(f"    {key} = {display_value(key, value)}{_source_of(report, key)}")
                lines.extend(_conflict_lines(report, key, "        "))
    return lines


def _source_of(report: SettingsReport, key: str) -> str:
    origin = report.origins.get(key)
    return f"  ({origin.source})" if origin is not None else "  (default)"


def _conflict_lines(report: SettingsReport, key: str, indent: str) -> list[str]:
    origin = report.origins.get(key)
    if origin is None:
        return []
    return [f"{indent}{source} sets {display_value(key, value)}: ignored, {origin.source} is used"
            for source, value in origin.ignored]
