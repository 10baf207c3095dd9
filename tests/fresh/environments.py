"""Fresh environments as a new user has them: a copy of the checkout, virtualenvs with only the
extras the README names for a step, and the servers those steps start.

The wheels come from a wheelhouse downloaded once per version of pyproject.toml's dependencies
(under ``~/.cache/scalekit/wheelhouse/``, or ``$SCALEKIT_WHEELHOUSE``) and every install is
``--no-index`` from it: a run with a warm wheelhouse touches no index, and a venv costs a few
seconds. Nothing of the test process leaks in: no system site-packages, no PYTHONPATH, no
``SCALEKIT_*`` variable (the suite's own state directory included).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tests.servers import REPO_ROOT, free_port, stop_process_group, wait_for_port

__all__ = ["Checkout", "FreshVenv", "Venvs", "Wheelhouse", "build_once", "build_wheel", "copy_checkout", "serving"]

# hatchling builds the editable install (pip's isolated build environment needs it and its
# `editables` from the wheelhouse too, since installs are --no-index).
BUILD_REQUIREMENTS = ("hatchling>=1.21", "editables~=0.3")
SERVER_START_TIMEOUT_SECONDS = 120.0  # `make demo` installs first; two loaded cores
COMMAND_TIMEOUT_SECONDS = 300.0


def clean_environ(**extra: str) -> dict[str, str]:
    """This process's environment without anything that would reach into the test's own venv."""
    dropped = ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PIP_REQUIRE_VIRTUALENV", "DJANGO_SETTINGS_MODULE",
               "PROMETHEUS_MULTIPROC_DIR")
    environ = {name: value for name, value in os.environ.items()
               if name not in dropped and not name.startswith("SCALEKIT_")}
    environ.update(extra)
    return environ


@dataclass(frozen=True)
class Wheelhouse:
    """A folder of wheels covering every extra, ``pip download``-ed once per dependency set."""

    path: Path

    @classmethod
    def for_checkout(cls, root: Path) -> Wheelhouse:
        base = Path(os.environ.get("SCALEKIT_WHEELHOUSE") or Path.home() / ".cache" / "scalekit" / "wheelhouse")
        project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
        key = repr((sys.version_info[:2], project["dependencies"], project["optional-dependencies"],
                    BUILD_REQUIREMENTS))
        path = base / hashlib.sha256(key.encode()).hexdigest()[:16]
        if not path.is_dir():
            base.mkdir(parents=True, exist_ok=True)
            partial = Path(tempfile.mkdtemp(prefix=".download-", dir=base))
            try:
                extras = ",".join(project["optional-dependencies"])
                run([sys.executable, "-m", "pip", "download", "-q", "-d", str(partial),
                     f"{root}[{extras}]", *BUILD_REQUIREMENTS], cwd=root, env=clean_environ())
                for stray in partial.glob("scalekit-*"):  # the project itself is never a wheel here
                    stray.unlink()
                with contextlib.suppress(OSError):  # another session got there first: use theirs
                    partial.rename(path)
            finally:
                shutil.rmtree(partial, ignore_errors=True)
        return cls(path)

    def pip_environ(self) -> dict[str, str]:
        """Variables that make a plain ``pip install`` (such as ``make demo``'s) use only this.

        Also no bytecode compiled at install (half of an install's time; the modules a test
        imports are compiled then). pip reads a ``--no-...`` option from the environment
        inverted: ``PIP_NO_COMPILE=0`` is what means ``--no-compile``.
        """
        return {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(self.path), "PIP_DISABLE_PIP_VERSION_CHECK": "1",
                "PIP_NO_COMPILE": "0"}


@dataclass(frozen=True)
class Checkout:
    """A copy of the repository's files as a fresh clone has them (tracked and new, not ignored)."""

    root: Path

    def state_dirs(self) -> list[Path]:
        """Every ``.scalekit`` state folder written into the checkout (a demo should write none)."""
        return sorted(self.root.rglob(".scalekit"))


def copy_checkout(destination: Path) -> Checkout:
    listed = subprocess.run(["git", "-C", str(REPO_ROOT), "ls-files", "-z", "-co", "--exclude-standard"],
                            check=True, capture_output=True).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO_ROOT / name
        if source.is_file():  # a file deleted but not yet committed is listed and absent
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return Checkout(destination)


class FreshVenv:
    """A virtualenv of the base interpreter (no system site-packages), pip-less unless asked."""

    def __init__(self, path: Path, *, wheelhouse: Wheelhouse, with_pip: bool = False, create: bool = True) -> None:
        self.path = path
        self.wheelhouse = wheelhouse
        self.bin = path / "bin"
        if create:  # else: one that build_once made earlier in this run
            run([sys.executable, "-m", "venv", *([] if with_pip else ["--without-pip"]), str(path)],
                cwd=path.parent, env=clean_environ())

    @property
    def python(self) -> str:
        return str(self.bin / "python")

    def environ(self, **extra: str) -> dict[str, str]:
        """A user's shell with this venv activated (its bin first on PATH)."""
        return clean_environ(PATH=f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
                             VIRTUAL_ENV=str(self.path), **self.wheelhouse.pip_environ(), **extra)

    def pip(self, *args: str) -> subprocess.CompletedProcess[str]:
        """This process's pip driving the venv's python, offline, from the wheelhouse."""
        return subprocess.run([sys.executable, "-m", "pip", "--python", self.python, *args, "--no-index",
                               "--find-links", str(self.wheelhouse.path)], env=self.environ(), capture_output=True,
                              text=True, stdin=subprocess.DEVNULL, timeout=COMMAND_TIMEOUT_SECONDS, check=True)

    def install(self, wheel: Path, extras: Sequence[str]) -> FreshVenv:
        """``pip install "scalekit[extras]"`` (from the checkout's wheel), bytecode left to imports."""
        self.pip("install", "-q", "--no-compile", f"{wheel}[{','.join(extras)}]" if extras else str(wheel))
        return self

    def run(self, args: Sequence[str], *, cwd: Path, env: Mapping[str, str] | None = None,
            check: bool = False) -> subprocess.CompletedProcess[str]:
        """Run a command of the venv (``scalekit``, ``python``) as a user would, output captured."""
        return subprocess.run([str(self.bin / args[0]), *args[1:]], cwd=cwd, env=self.environ(**(env or {})),
                              capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=COMMAND_TIMEOUT_SECONDS, check=check)


def build_wheel(checkout: Checkout, wheelhouse: Wheelhouse, destination: Path) -> Path:
    """The checkout's wheel, built once for every venv (an editable install would build it in
    each; ``make demo``'s own ``pip install -e`` is run as it is)."""
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-index", "--find-links",
         str(wheelhouse.path), "-w", str(destination), str(checkout.root)], cwd=checkout.root, env=clean_environ())
    (wheel,) = destination.glob("scalekit-*.whl")
    return wheel


def build_once(folder: Path, build: Callable[[Path], object]) -> Path:
    """``folder``, made by ``build(folder)`` unless a process of this run (another xdist worker)
    has made it already; if one is making it now, wait for it (a file lock beside the folder)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    done = folder.with_name(folder.name + ".done")
    with folder.with_name(folder.name + ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)  # a build that failed half way
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


class Venvs:
    """One venv per set of extras, built in the background (two at a time, for two cores)
    as soon as the session knows which its tests need, and handed out when ready.

    ``folder`` may be shared by every worker of the run: each venv is then built once, by the
    first worker that needs it, and the others use it (tests run in a venv, never install
    into it)."""

    def __init__(self, folder: Path, *, wheel: Path, wheelhouse: Wheelhouse) -> None:
        self.folder = folder
        self.wheel = wheel
        self.wheelhouse = wheelhouse
        self._builds: dict[tuple[str, ...], Future[FreshVenv]] = {}
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="fresh-venv")

    def prepare(self, extras: Sequence[str]) -> Future[FreshVenv]:
        key = tuple(sorted(extras))
        if key not in self._builds:
            path = self.folder / ("-".join(key) or "bare")
            self._builds[key] = self._executor.submit(lambda: self._build(path, key))
        return self._builds[key]

    def _build(self, path: Path, extras: tuple[str, ...]) -> FreshVenv:
        build_once(path, lambda folder: FreshVenv(folder, wheelhouse=self.wheelhouse).install(self.wheel, extras))
        return FreshVenv(path, wheelhouse=self.wheelhouse, create=False)

    def get(self, extras: Sequence[str]) -> FreshVenv:
        return self.prepare(extras).result(timeout=COMMAND_TIMEOUT_SECONDS)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


def run(args: Sequence[str], *, cwd: Path, env: Mapping[str, str]) -> None:
    result = subprocess.run(list(args), cwd=cwd, env=dict(env), capture_output=True, text=True,
                            stdin=subprocess.DEVNULL, timeout=COMMAND_TIMEOUT_SECONDS, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")


@contextlib.contextmanager
def serving(args: Sequence[str], *, venv: FreshVenv, cwd: Path, port: int | None = None,
            env: Mapping[str, str] | None = None) -> Iterator[str]:
    """Run a command that serves on ``port`` (``make demo PORT=...``, ``scalekit serve``) in its
    own process group; yield its base URL once it listens, and stop the whole group after."""
    port = port or free_port()
    command = [arg.replace("{port}", str(port)) for arg in args]
    descriptor, name = tempfile.mkstemp(prefix="scalekit-fresh-", suffix=".log")
    os.close(descriptor)
    log_path = Path(name)
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=cwd, env=venv.environ(**(env or {})), stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_port(port, process=process, log_path=log_path, timeout_seconds=SERVER_START_TIMEOUT_SECONDS)
        yield f"http://127.0.0.1:{port}"
    except AssertionError as failed:
        lines = log_path.read_text(errors="replace").splitlines()[-40:]
        failed.add_note("the server's output:\n" + "\n".join(lines))
        raise
    finally:
        stop_process_group(process)
        log_path.unlink(missing_ok=True)
