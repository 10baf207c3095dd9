"""Serving a real app with ``scalekit serve`` on a free port, and browsers with their own cookies.

>>> with serving("tests.realapps.live.app:app", "uvicorn") as server:   # doctest: +SKIP
...     httpx.get(server.url + "/")

Each server runs in its own process group (stopping it stops its workers) with a private
temporary directory as ``TMPDIR``, so a test can see what the server left behind there.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.servers import REPO_ROOT, free_port, stop_process_group, wait_for_port

__all__ = ["Served", "browser", "csrf_field", "serving"]

# Under these servers `scalekit serve` serves each app kind.
WSGI_SERVERS = ("gunicorn", "granian")
ASGI_SERVERS = ("uvicorn", "granian")


@dataclass
class Served:
    """A running ``scalekit serve``: its URL, log file and private temporary directory."""

    url: str
    log_path: Path
    tmp_dir: Path
    process: subprocess.Popen[bytes]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def serving(target: str, server: str, *, env: Mapping[str, str] | None = None,
            args: Sequence[str] = (), cwd: str | os.PathLike[str] | None = None,
            tmp_dir: Path | None = None) -> Iterator[Served]:
    """Run ``scalekit serve TARGET --server SERVER``; yield it once it accepts connections.

    ``tmp_dir`` (the server's ``TMPDIR``) is the caller's to inspect and remove; without it a
    fresh one is made and removed when the server has stopped.
    """
    port = free_port()
    own_tmp = tmp_dir is None
    tmp_dir = Path(tempfile.mkdtemp(prefix="scalekit-realapp-")) if tmp_dir is None else tmp_dir
    handle, log_name = tempfile.mkstemp(prefix="scalekit-serve-", suffix=".log")
    os.close(handle)
    log_path = Path(log_name)
    # Its own state directory: one server's disk tier must not answer for the next one.
    full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TMPDIR": str(tmp_dir),
                "SCALEKIT_STATE_DIR": str(tmp_dir / "scalekit-state"), **(env or {})}
    argv = [sys.executable, "-m", "scalekit.cli", "serve", target, "--server", server,
            "--bind", f"127.0.0.1:{port}", *args]
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, cwd=str(cwd or REPO_ROOT), env=full_env, stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    served = Served(f"http://127.0.0.1:{port}", log_path, tmp_dir, process)
    try:
        wait_for_port(port, process=process, log_path=log_path, timeout_seconds=40)
        yield served
    finally:
        stop_process_group(process)
        log_path.unlink(missing_ok=True)
        if own_tmp:
            shutil.rmtree(tmp_dir, ignore_errors=True)


def browser(served: Served) -> httpx.Client:
    """A client with its own cookie jar, as one person's browser."""
    return httpx.Client(base_url=served.url, timeout=20, follow_redirects=False)


_CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


def csrf_field(html: str) -> str:
    """The CSRF token of the first Django form in ``html``."""
    match = _CSRF_INPUT.search(html)
    assert match, f"no csrfmiddlewaretoken in the page:\n{html[:2000]}"
    return match.group(1)
