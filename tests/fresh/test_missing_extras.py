"""In a virtualenv with only ``scalekit[server,flask]`` (the README's Flask app), a setting or
a demo that needs another extra stops with one line naming the command that installs it, at
``wrap()``, in ``scalekit check``, ``serve`` and ``demo``; and that command is the right one."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from .environments import Checkout, FreshVenv
from .readme import snippet, snippet_extras

FLASK_APP_EXTRAS = snippet_extras("flask")
assert sorted(FLASK_APP_EXTRAS) == ["flask", "server"], "these tests need a venv without redis, psycopg2, servestatic"
pytestmark = [pytest.mark.fresh, pytest.mark.fresh_venv(*FLASK_APP_EXTRAS)]

REDIS_URL = {"SCALEKIT_REDIS_URL": "redis://127.0.0.1:6379/0"}
POSTGRES_URL = {"SCALEKIT_POOL_DATABASES_DEFAULT_URL": "postgresql://postgres@127.0.0.1:5432/test"}


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.count("\n") == 1, result.stderr
    return result.stderr.strip()


def test_wrap_raises_one_clear_error(venv: FreshVenv, user_folder: Path) -> None:
    (user_folder / "app.py").write_text(snippet("flask"))
    result = venv.run(["python", "-c", "import app"], cwd=user_folder, env=REDIS_URL)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        'scalekit.errors.MissingExtraError: redis.url is set, but redis is not installed: '
        'pip install "scalekit[redis]"')
    assert "ModuleNotFoundError" not in result.stderr and "During handling" not in result.stderr


def test_check_and_serve_name_the_extra(venv: FreshVenv, user_folder: Path) -> None:
    (user_folder / "app.py").write_text(snippet("flask"))
    checked = venv.run(["scalekit", "check"], cwd=user_folder, env=POSTGRES_URL)
    assert one_line(checked) == ('scalekit: pool.databases.default.url is a postgresql:// URL, but psycopg2 is '
                                 'not installed: pip install "scalekit[postgres]"')
    served = venv.run(["scalekit", "serve", "app:app"], cwd=user_folder,
                      env={"SCALEKIT_CDN_ASSETS_MANIFEST": str(user_folder / "manifest.json")})
    assert one_line(served) == ('scalekit: cdn.assets_manifest is set, but servestatic is not installed: '
                                'pip install "scalekit[assets]"')


@pytest.mark.parametrize(("framework", "message"), [
    pytest.param("flask", "the flask demo needs servestatic, which is not installed: "
                 'pip install "scalekit[demo,flask]"', id="the demo extra"),
    pytest.param("django", "the django demo needs servestatic, django, asgiref, which are not installed: "
                 'pip install "scalekit[demo,django]"', id="the framework too"),
])
def test_demo_names_what_make_demo_installs(framework: str, message: str, venv: FreshVenv,
                                            checkout: Checkout) -> None:
    result = venv.run(["scalekit", "demo", "--framework", framework], cwd=checkout.root)
    assert one_line(result) == f"scalekit: {message}"


def test_the_named_command_installs_what_was_missing(venv: FreshVenv, user_folder: Path) -> None:
    result = venv.pip("install", "--dry-run", "scalekit[redis]")
    assert "Would install" in result.stdout and "redis-" in result.stdout, result.stdout
