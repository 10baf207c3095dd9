"""Run the shipped deploy/ artefacts on this machine: nginx with a test copy of the config, app
instances under the shipped gunicorn settings, the compose file's Redis command, and Prometheus
(Varnish with the shipped VCL runs through tests/edge/varnish.py).

Everything listens on 127.0.0.0/8 on free ports, runs in its own process group and is stopped
by the context manager that started it. The test copy of the nginx config changes only what
cannot work here (upstream host names or the resolver's address, ports, absolute paths, the
user, the trusted load balancer's address, the edge cache's address, the balancing server's
listen address and the one address it admits, Varnish's); every rewrite must match, so a change
to the shipped config that the harness does not understand fails loudly.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import httpx

from tests.servers import REPO_ROOT, free_port, stop_process_group, wait_for_port

DEPLOY = REPO_ROOT / "deploy"
NGINX_DIR = DEPLOY / "nginx"
GUNICORN_CONF = DEPLOY / "gunicorn.conf.py"
FLEET_WSGI = "tests.deploy.fleet_app:wsgi_app"
TRUSTED_LOAD_BALANCER = "127.0.0.2"   # the test's stand-in for a load balancer in front of nginx


# Where tests/deploy/fetch_nginx.sh puts an nginx new enough for "resolve".
FETCHED_NGINX = Path(os.environ.get("SCALEKIT_TEST_NGINX_PREFIX", "/opt/scalekit-test-nginx")) / "nginx"
RESOLVE_SINCE = (1, 27, 3)   # OSS nginx: "resolve" on upstream servers


def nginx_binary() -> str | None:
    """The nginx executable, or None when the Debian package is not installed."""
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.path.exists(p)), None)


def nginx_version(binary: str) -> tuple[int, ...]:
    """``(1, 22, 1)`` from ``nginx -v`` (which prints to stderr)."""
    output = subprocess.run([binary, "-v"], check=False, capture_output=True, text=True, timeout=30).stderr
    found = re.search(r"nginx/(\d+(?:\.\d+)+)", output)
    return tuple(int(part) for part in found.group(1).split(".")) if found else ()


def resolving_nginx_binary() -> str | None:
    """An nginx whose upstream servers take "resolve": the machine's if new enough, else the
    one tests/deploy/fetch_nginx.sh fetched, else None."""
    for candidate in (nginx_binary(), str(FETCHED_NGINX)):
        if candidate and os.access(candidate, os.X_OK) and nginx_version(candidate) >= RESOLVE_SINCE:
            return candidate
    return None


def _replace(text: str, pattern: str, replacement: str | Callable[[re.Match[str]], str], *, where: str) -> str:
    new, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    if count == 0:
        raise AssertionError(f"the test harness expected {pattern!r} in {where}; update tests/deploy/harness.py")
    return new


def render_nginx_config(
    workdir: Path, *, listen_port: int, upstream_ports: Sequence[int] = (), static_root: Path,
    resolver: str | None = None, upstream_port: int | None = None, cache_port: int = 9,
    fleet_port: int | None = None,
) -> Path:
    """Write the test copy of deploy/nginx/ into ``workdir``; return the main config's path.

    By default the upstream name is replaced by ``upstream_ports`` on 127.0.0.1 (nginx 1.22 has
    no "resolve"). With ``resolver`` (``127.0.0.1:PORT``) the upstream server stays as shipped,
    looked up through that DNS server, with only its port changed to ``upstream_port``, and the
    lookups repeat every second instead of every 10 s. The edge cache (Varnish) is
    127.0.0.1:``cache_port``; the server Varnish fetches from listens on 127.0.0.1:``fleet_port``
    and admits 127.0.0.1 (Varnish's address here).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    main = (NGINX_DIR / "nginx.conf").read_text()
    site = (NGINX_DIR / "scalekit.conf").read_text()

    user = "user root;" if os.geteuid() == 0 else ""   # workers must read the test's temp files
    main = _replace(main, r"^user \S+;", user, where="nginx.conf")
    main = _replace(main, r"^pid \S+;", f"pid {workdir}/nginx.pid;", where="nginx.conf")
    main = _replace(main, r"^error_log \S+", f"error_log {workdir}/error.log", where="nginx.conf")
    main = _replace(main, r"access_log /var/log/nginx/access.log", f"access_log {workdir}/access.log",
                    where="nginx.conf")
    main = _replace(main, r"^(\s*)set_real_ip_from .*$", rf"\1set_real_ip_from {TRUSTED_LOAD_BALANCER};",
                    where="nginx.conf")

    def servers(match: re.Match[str]) -> str:
        indent, params = match.group(1), match.group(2).replace(" resolve", "")   # addresses: nothing to resolve
        return "\n".join(f"{indent}server 127.0.0.1:{port}{params};" for port in upstream_ports)

    if resolver is None:
        main = _replace(main, r"^(\s*)server app:8000([^;]*);", servers, where="nginx.conf upstream")
    else:
        main = _replace(main, r"^(\s*)server app:8000(\s[^;]* resolve;)", rf"\1server app:{upstream_port}\2",
                        where="nginx.conf upstream")
        main = _replace(main, r"^(\s*)resolver 127\.0\.0\.11 valid=10s", rf"\1resolver {resolver} valid=1s",
                        where="nginx.conf resolver")
    temp_paths = "".join(f"    {name}_temp_path {workdir}/{name}_temp;\n"
                         for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    main = _replace(main, r"^(\s*)server varnish:6081([^;]*) resolve;", rf"\1server 127.0.0.1:{cache_port}\2;",
                    where="nginx.conf edge cache upstream")
    main = _replace(main, r"^\s*include /etc/nginx/conf.d/scalekit.conf;",
                    f"{temp_paths}    include {workdir}/scalekit.conf;", where="nginx.conf")

    site = _replace(site, r"listen 80 default_server;", f"listen 127.0.0.1:{listen_port} default_server;",
                    where="scalekit.conf")
    site = _replace(site, r"^\s*listen \[::\]:80 default_server;\n", "", where="scalekit.conf")
    site = _replace(site, r"root /srv/scalekit;", f"root {static_root};", where="scalekit.conf")
    site = _replace(site, r"^(\s*)listen 8080;", rf"\1listen 127.0.0.1:{fleet_port or free_port()};",
                    where="scalekit.conf fleet server")
    site = _replace(site, r"^(\s*)allow 172\.30\.0\.11;", r"\1allow 127.0.0.1;", where="scalekit.conf fleet server")

    (workdir / "scalekit.conf").write_text(site)
    (workdir / "nginx.conf").write_text(main)
    return workdir / "nginx.conf"


def nginx_test(binary: str, config: Path) -> subprocess.CompletedProcess[str]:
    """``nginx -t`` on a config; returns the completed process (output in stderr)."""
    return subprocess.run([binary, "-t", "-p", str(config.parent), "-c", str(config)],
                          check=False, capture_output=True, text=True, timeout=30)


@contextlib.contextmanager
def run_nginx(binary: str, config: Path, port: int) -> Iterator[str]:
    """Run nginx in the foreground on ``config``; yield its base URL; stop it on exit."""
    log = (config.parent / "nginx.out").open("wb")
    process = subprocess.Popen([binary, "-p", str(config.parent), "-c", str(config), "-g", "daemon off;"],
                               stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        wait_for_port(port, process=process, log_path=config.parent / "nginx.out")
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process_group(process)
        log.close()


class AppInstance:
    """One app instance under ``gunicorn -c deploy/gunicorn.conf.py``, restartable on its port."""

    def __init__(self, instance_id: str, workdir: Path, *, target: str | None = FLEET_WSGI, workers: int = 1,
                 threads: int = 8, env: Mapping[str, str] | None = None,
                 ready_path: str = "/_test/counts", address: str = "127.0.0.1", port: int | None = None) -> None:
        self.instance_id = instance_id
        self.address = address
        self.port = port or free_port()
        self.workdir = workdir
        self.target = target
        self.workers = workers
        self.threads = threads
        self.extra_env = dict(env or {})
        self.ready_path = ready_path
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"{instance_id}.log"

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("APP_MODULE", None)   # target None: gunicorn.conf.py's default, the example shop
        env.update({
            "BIND": f"{self.address}:{self.port}",
            "WEB_CONCURRENCY": str(self.workers),
            "THREADS": str(self.threads),
            "GRACEFUL_TIMEOUT": "5",
            "INSTANCE_ID": self.instance_id,
            "FORWARDED_ALLOW_IPS": "127.0.0.1",
            "SCALEKIT_STATE_DIR": str(self.workdir / f"{self.instance_id}-state"),
            "PROMETHEUS_MULTIPROC_DIR": str(self.workdir / f"{self.instance_id}-metrics"),
            "LOG_LEVEL": "warning",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        })
        if self.target is not None:
            env["APP_MODULE"] = self.target
        env.update(self.extra_env)
        return env

    def start(self) -> None:
        """Start the instance and wait until it accepts connections."""
        self.spawn()
        self.wait_ready()

    def spawn(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF)],
                cwd=str(REPO_ROOT), env=self.environment(), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )

    def wait_ready(self) -> None:
        """Until a worker answers (gunicorn binds before its workers have imported the app)."""
        assert self.process is not None
        if self.address == "127.0.0.1":   # (another address: the loop below waits for it alone)
            wait_for_port(self.port, process=self.process, log_path=self.log_path)
        deadline = time.monotonic() + (20.0 if self.address == "127.0.0.1" else 60.0)
        while True:
            try:
                if httpx.get(self.url + self.ready_path, timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise TimeoutError(f"{self.instance_id} did not answer:\n{self.log_path.read_text()[-3000:]}")
            time.sleep(0.1)

    def stop(self, *, kill: bool = False) -> None:
        """SIGTERM (graceful: in-flight requests finish) or SIGKILL (a crash) the whole group."""
        if self.process is None:
            return
        if kill and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        stop_process_group(self.process)
        self.process = None
        _wait_until_closed(self.port, self.address)


def _wait_until_closed(port: int, address: str = "127.0.0.1", timeout_seconds: float = 20.0) -> None:
    import socket

    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection((address, port), timeout=0.5).close()
        except OSError:
            return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} still accepts connections after the instance stopped")


@contextlib.contextmanager
def run_fleet(workdir: Path, count: int = 3, **kwargs: object) -> Iterator[list[AppInstance]]:
    """Start ``count`` instances; stop every one that is still running on exit."""
    instances = [AppInstance(f"app{i + 1}", workdir, **kwargs) for i in range(count)]  # type: ignore[arg-type]
    try:
        for instance in instances:   # start together: each takes a second or two to import
            instance.spawn()
        for instance in instances:
            instance.wait_ready()
        yield instances
    finally:
        for instance in instances:   # stop together too: SIGTERM all, then wait for each
            if instance.process is not None and instance.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(instance.process.pid, signal.SIGTERM)
        for instance in instances:
            instance.stop()


def shipped_redis_script() -> str:
    """The shell script the compose file's redis service runs (``$$`` is compose's ``$``)."""
    import yaml  # type: ignore[import-untyped]

    command = yaml.safe_load((DEPLOY / "docker-compose.prod.yml").read_text())["services"]["redis"]["command"]
    if command[:2] != ["sh", "-c"]:
        raise AssertionError("the test harness expected the compose redis command to be sh -c SCRIPT; "
                             "update tests/deploy/harness.py")
    return str(command[2]).replace("$$", "$")


@contextlib.contextmanager
def run_shipped_redis(workdir: Path, password: str) -> Iterator[int]:
    """Run the compose file's redis command here, on 127.0.0.1 and a free port; yield the port."""
    port = free_port()
    script = _replace(shipped_redis_script(), r"exec redis-server - ",
                      f"exec redis-server - --port {port} --bind 127.0.0.1 --dir {workdir} ",
                      where="the compose redis command")
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "redis.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(["sh", "-c", script], env={**os.environ, "REDIS_PASSWORD": password},
                                   stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    try:
        wait_for_port(port, process=process, log_path=log_path)
        yield port
    finally:
        stop_process_group(process)
