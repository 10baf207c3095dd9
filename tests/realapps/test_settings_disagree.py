"""``settings.SCALEKIT`` against the environment under a real ``scalekit serve`` (the README's
middleware-only Django project): the settings win in every server, and the server's own log
says so, naming both values, once per process, not once per request."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import REPO_ROOT

from .support import Served, browser, serving

pytestmark = [pytest.mark.server, pytest.mark.slow]

SERVED = [("tests.realapps.mysite.wsgi:application", "gunicorn"),
          ("tests.realapps.mysite.asgi:application", "uvicorn"),
          ("tests.realapps.mysite.wsgi:application", "granian")]


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mysite-disagree") / "db.sqlite3"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "REALAPPS_MYSITE_DB": str(path)}
    subprocess.run([sys.executable, "-m", "tests.realapps.mysite.setup_db"], env=env, check=True,
                   cwd=REPO_ROOT, timeout=120)
    return path


def said(served: Served) -> list[str]:
    return [line for line in served.log().splitlines() if "cache.status_name" in line]


@pytest.mark.parametrize(("target", "server"), [pytest.param(*case, id=f"{case[1]}") for case in SERVED])
def test_settings_win_over_the_environment_and_the_log_says_so(target: str, server: str, database: Path) -> None:
    env = {"REALAPPS_MYSITE_DB": str(database), "SCALEKIT_CACHE_STATUS_NAME": "from-env"}
    with serving(target, server, env=env) as served, browser(served) as visitor:
        for _ in range(3):
            last = visitor.get("/public/")
        assert last.headers["cache-status"].startswith("mysite; hit"), last.headers.get("cache-status")
        lines = said(served)
    assert len(lines) == 1, lines
    assert "using settings.SCALEKIT = 'mysite'" in lines[0], lines[0]
    assert "SCALEKIT_CACHE_STATUS_NAME = 'from-env'" in lines[0], lines[0]
