"""The minimal apps of the project README run as written."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from .support import assert_hit, assert_not_hit

README = Path(__file__).resolve().parents[2] / "README.md"


def snippet(name: str) -> str:
    match = re.search(rf"<!-- snippet: {name} -->\n```python\n(.*?)```", README.read_text(), re.DOTALL)
    assert match, f"README.md has no snippet {name!r}"
    return match.group(1)


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


def body(response: Any) -> Any:
    return response.get_json() if hasattr(response, "get_json") else response.json()


def check(get: Any, post: Any) -> None:
    first, second = get("/products/1"), get("/products/1")
    assert first.status_code == 200 and body(first) == {"id": 1, "name": "Teapot", "price_cents": 4900}
    assert_not_hit(first.headers)
    assert_hit(second.headers)
    assert post("/products/1/price/3900").status_code == 200
    after = get("/products/1")
    assert_not_hit(after.headers)
    assert body(after)["price_cents"] == 3900


def test_the_flask_snippet(load: Any) -> None:
    client = load("flask").app.test_client()
    check(lambda path: client.get(path, buffered=True), lambda path: client.post(path, buffered=True))


def test_the_fastapi_snippet(load: Any) -> None:
    from starlette.testclient import TestClient

    with TestClient(load("fastapi").app) as client:
        check(client.get, client.post)
