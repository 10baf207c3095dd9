"""``ScaleKit(app, **arguments)`` beside ``app.config["SCALEKIT"]``: one configuration merged key
by key, so ``cache={"coalesce": False}`` changes that key alone and keeps the config's
Cache-Status name; where the two set one key differently, start-up says which value is used."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from scalekit import pipeline


def served_config(tmp_path: Path, from_config: dict[str, Any], arguments: dict[str, Any]) -> Any:
    from scalekit_flask import ScaleKit

    app = Flask("scalekit_test_config_arguments")
    app.config["SCALEKIT"] = {"state_dir": str(tmp_path), "pool": False, **from_config}
    extension = ScaleKit(app, **arguments)
    try:
        runtime = extension.runtime
        assert runtime is not None
        runtime.startup()
        return runtime.config
    finally:
        extension.close()


def test_an_argument_changes_its_key_alone(tmp_path: Path) -> None:
    config = served_config(tmp_path, {"cache": {"status_name": "from-config"}}, {"cache": {"coalesce": False}})
    assert config.cache.coalesce is False
    assert config.cache.status_name == "from-config"


def test_config_and_arguments_that_disagree_are_said(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(pipeline, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="scalekit"):
        served_config(tmp_path, {"cache": {"status_name": "from-config"}}, {"cache": {"status_name": "from-arguments"}})
    lines = [record.getMessage() for record in caplog.records if "cache.status_name" in record.getMessage()]
    assert len(lines) == 1 and "from-config" in lines[0] and "from-arguments" in lines[0], lines
