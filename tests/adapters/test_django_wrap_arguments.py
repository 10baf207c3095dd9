"""``scalekit_django.wrap(application, **arguments)`` beside ``settings.SCALEKIT`` (the "both"
install form): the two are one configuration merged key by key, so an argument such as
``cache={"enabled": True}`` changes that key alone and keeps the settings' Cache-Status name
and rules; where the two set one key differently, start-up says which value is used."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from scalekit import pipeline

from .django_support import configure_django


@pytest.fixture(scope="module")
def django_database(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, object]]:
    return configure_django(str(tmp_path_factory.mktemp("django-wrap-arguments") / "items.sqlite3"))


def served_config(tmp_path: Path, overlay: dict[str, object], scalekit: dict[str, Any],
                  arguments: dict[str, Any]) -> Any:
    from django.core.wsgi import get_wsgi_application
    from django.test.utils import override_settings
    from scalekit_django import wrap

    with override_settings(**{**overlay, "SCALEKIT": {"state_dir": str(tmp_path), **scalekit}}):
        app = wrap(get_wsgi_application(), **arguments)
        try:
            app.runtime.startup()
            return app.runtime.config
        finally:
            app.runtime.close()


def test_an_argument_changes_its_key_alone(tmp_path: Path, django_database: tuple[str, dict[str, object]]) -> None:
    _, overlay = django_database
    config = served_config(tmp_path, overlay, {"cache": {"status_name": "from-settings"}},
                           {"cache": {"coalesce": False}})
    assert config.cache.coalesce is False
    assert config.cache.status_name == "from-settings"


def test_settings_and_arguments_that_disagree_are_said(tmp_path: Path, django_database: tuple[str, dict[str, object]],
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    _, overlay = django_database
    monkeypatch.setattr(pipeline, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="scalekit"):
        served_config(tmp_path, overlay, {"cache": {"status_name": "from-settings"}},
                      {"cache": {"status_name": "from-arguments"}})
    lines = [record.getMessage() for record in caplog.records if "cache.status_name" in record.getMessage()]
    assert len(lines) == 1 and "from-settings" in lines[0] and "from-arguments" in lines[0], lines
