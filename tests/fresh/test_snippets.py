"""The README's complete apps (Flask, FastAPI, and the Django project built step by step),
each in a virtualenv with exactly the extras the README names for it, served with
``scalekit serve`` from the user's own folder."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from .environments import FreshVenv, serving
from .readme import build_django_project, check_snippet_app, snippet, snippet_extras

pytestmark = [pytest.mark.fresh, pytest.mark.server]


def serve_and_check(venv: FreshVenv, folder: Path, serve: str) -> None:
    with serving(["bash", "-c", f"exec {serve} --bind 127.0.0.1:{{port}}"], venv=venv, cwd=folder) as url, \
            httpx.Client(base_url=url, timeout=30) as client:
        check_snippet_app(client.get, client.post)


@pytest.mark.parametrize("framework", [
    pytest.param(framework, marks=pytest.mark.fresh_venv(*snippet_extras(framework)), id=framework)
    for framework in ("flask", "fastapi")
])
def test_the_readme_app_served_with_scalekit_serve(framework: str, venv: FreshVenv, user_folder: Path) -> None:
    (user_folder / "app.py").write_text(snippet(framework))
    serve_and_check(venv, user_folder, "scalekit serve app:app")


@pytest.mark.fresh_venv(*snippet_extras("django"))
def test_the_readme_django_project_built_and_served(venv: FreshVenv, user_folder: Path) -> None:
    def shell(line: str) -> None:
        result = subprocess.run(["bash", "-c", line], cwd=user_folder, env=venv.environ(), capture_output=True,
                                text=True, timeout=120, check=False)
        assert result.returncode == 0, f"{line!r} failed:\n{result.stdout}\n{result.stderr}"

    serve_and_check(venv, user_folder, build_django_project(user_folder, shell))
