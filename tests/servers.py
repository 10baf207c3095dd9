"""Real servers for integration tests: uvicorn or gunicorn on 127.0.0.1, on a free port.

>>> with run_server("uvicorn", "tests.apps.plain:asgi_app") as base_url:   # doctest: +SKIP
...     httpx.get(base_url + "/")

The server runs in its own process group, so stopping it also stops gunicorn's workers; the
context manager waits until the port accepts connections (generously: the CI machine has two
shared cores) and always stops what it started, killing the group if it will not terminate.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

__all__ = ["REPO_ROOT", "free_port", "run_server", "wait_for_port"]

REPO_ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_SECONDS = 20.0
STOP_TIMEOUT_SECONDS = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, *, process: subprocess.Popen[bytes] | None = None,
                  timeout_seconds: float = START_TIMEOUT_SECONDS, log_path: Path | None = None) -> None:
    """Poll until 127.0.0.1:``port`` accepts a connection; fail early if ``process`` exits."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before listening on "
                               f"port {port}:\n{_tail(log_path)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {timeout_seconds} s:\n{_tail(log_path)}")


def wait_for_fleet_log(app: Any, timeout_seconds: float = 20.0) -> None:
    """Wait until a started app with Redis has heard its fleet's invalidation log: no entry is
    served before (about 20 ms after start-up, longer on a loaded machine), so a test expecting
    a hit on its first requests waits here, as a server's readiness would."""
    generations = app.runtime.services["cache.generations"]
    deadline = time.monotonic() + timeout_seconds
    while not generations.is_current(()):
        assert time.monotonic() < deadline, "the fleet's invalidation log was never heard"
        time.sleep(0.005)


def _tail(log_path: Path | None, lines: int = 40) -> str:
    if log_path is None or not log_path.exists():
        return ""
    return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])


def _command(kind: str, target: str, port: int, workers: int, extra_args: Sequence[str]) -> list[str]:
    if kind == "uvicorn":
        return [sys.executable, "-m", "uvicorn", target, "--host", "127.0.0.1", "--port", str(port),
                "--workers", str(workers), "--log-level", "warning", *extra_args]
    if kind == "gunicorn":
        return [sys.executable, "-m", "gunicorn", target, "--bind", f"127.0.0.1:{port}",
                "--workers", str(workers), "--log-level", "warning", "--graceful-timeout", "5",
                *extra_args]
    if kind == "granian":  # extra_args name the interface: ("--interface", "wsgi")
        return [sys.executable, "-m", "granian", target, "--host", "127.0.0.1", "--port", str(port),
                "--workers", str(workers), "--log-level", "warning", "--no-ws", *extra_args]
    raise ValueError(f"kind must be 'uvicorn', 'gunicorn' or 'granian'; got {kind!r}")


@contextlib.contextmanager
def run_server(
    kind: Literal["uvicorn", "gunicorn", "granian"],
    target: str,
    *,
    env: Mapping[str, str] | None = None,
    workers: int = 1,
    cwd: str | os.PathLike[str] | None = None,
    extra_args: Sequence[str] = (),
) -> Iterator[str]:
    """Run ``target`` ("module:attr") under uvicorn, gunicorn or granian; yield ``http://127.0.0.1:PORT``.

    ``env`` is added to this process's environment; the repository root is put on PYTHONPATH so
    ``tests.apps...`` targets import from any ``cwd``.
    """
    port = free_port()
    full_env = dict(os.environ)
    full_env.update(env or {})
    python_path = [str(REPO_ROOT)] + ([full_env["PYTHONPATH"]] if full_env.get("PYTHONPATH") else [])
    full_env["PYTHONPATH"] = os.pathsep.join(python_path)
    with tempfile.NamedTemporaryFile(prefix=f"scalekit-{kind}-", suffix=".log", delete=False) as log:
        log_path = Path(log.name)
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            _command(kind, target, port, workers, extra_args),
            cwd=str(cwd) if cwd is not None else str(REPO_ROOT),
            env=full_env, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # own process group: stopping it stops every worker
        )
    try:
        wait_for_port(port, process=process, log_path=log_path)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process_group(process)
        with contextlib.suppress(OSError):
            log_path.unlink()


def stop_process_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process's group, then SIGKILL it if it has not exited in time."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
    # Workers that outlived the master (they should not) still belong to the group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def has_httptools() -> bool:
    """Whether uvicorn has its C HTTP stack here (httptools and uvloop: ``uvicorn[standard]``)."""
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("httptools", "uvloop"))
