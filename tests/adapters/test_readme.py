"""The minimal apps of the project README run as written: the Flask and FastAPI ``app.py``
in-process. tests/fresh runs all three (the complete Django project built step by step and
served with ``scalekit serve`` among them) in virtualenvs with only the README's extras:
``tests/fresh/test_snippets.py``."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.fresh.readme import check_snippet_app, snippet


@pytest.fixture
def load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Write a snippet to app.py in an empty folder and import it from there."""
    monkeypatch.chdir(tmp_path)  # the snippets use sqlite:///shop.db, relative to the cwd
    monkeypatch.setenv("SCALEKIT_STATE_DIR", str(tmp_path / "state"))
    def load_snippet(name: str) -> ModuleType:
        path = tmp_path / f"{name}_readme_app.py"
        path.write_text(snippet(name))
        spec = importlib.util.spec_from_file_location(f"{name}_readme_app", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    yield load_snippet
    import scalekit

    for runtime in scalekit.live_runtimes():
        if runtime.config.state_dir == str(tmp_path / "state"):
            runtime.close()


def test_the_flask_snippet(load: Any) -> None:
    client = load("flask").app.test_client()
    check_snippet_app(lambda path: client.get(path, buffered=True), lambda path: client.post(path, buffered=True))


def test_the_fastapi_snippet(load: Any) -> None:
    from starlette.testclient import TestClient

    with TestClient(load("fastapi").app) as client:
        check_snippet_app(client.get, client.post)
