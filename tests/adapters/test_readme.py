"""The minimal apps of the project README run as written: the Flask and FastAPI ``app.py``
in-process, and the complete Django project built step by step and served with
``scalekit serve``. (tests/fresh runs all three in virtualenvs with only the README's extras.)"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from tests.fresh.readme import build_django_project, check_snippet_app, snippet
from tests.servers import free_port, stop_process_group, wait_for_port


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


@pytest.mark.server
def test_the_complete_django_app(tmp_path: Path) -> None:
    # Django's settings are per process (and this one's are the adapter tests'): build and
    # serve the README's project in processes of its own, with this environment's tools.
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.pop("DJANGO_SETTINGS_MODULE", None)

    def shell(line: str) -> None:
        subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, check=True, capture_output=True, timeout=120)

    serve = build_django_project(tmp_path, shell)
    port = free_port()
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(["bash", "-c", f"exec {serve} --bind 127.0.0.1:{port}"], cwd=tmp_path, env=env,
                                  stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  start_new_session=True)
    try:
        wait_for_port(port, process=server, log_path=log_path)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            check_snippet_app(client.get, client.post)
    finally:
        stop_process_group(server)
