"""A Varnish of the test's own: deploy/varnish/default.vcl with only the backend's address
adapted, its own working directory (-n), traffic and purge sockets on free ports; stopped at
the end. Skips the test when varnishd or vmod_xkey is not installed."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers import REPO_ROOT, free_port, wait_for_port

__all__ = ["SHIPPED_VCL", "Varnish", "running_varnish", "vcl_for"]

SHIPPED_VCL = REPO_ROOT / "deploy" / "varnish" / "default.vcl"


@dataclass(frozen=True)
class Varnish:
    url: str        # traffic, as the load balancer would send it
    purge_url: str  # the purge socket

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


def vcl_for(backend_host: str, backend_port: int) -> str:
    """The shipped VCL with its backend pointed at ``backend_host:backend_port``."""
    text = SHIPPED_VCL.read_text()
    adapted = text.replace('.host = "nginx";', f'.host = "{backend_host}";').replace(
        '.port = "8080";', f'.port = "{backend_port}";')
    assert adapted != text, "the shipped VCL's backend address changed: adapt tests/edge/varnish.py"
    return adapted


@contextlib.contextmanager
def running_varnish(backend_port: int, *, backend_host: str = "127.0.0.1",
                    purge_port: int | None = None, vcl_text: str | None = None) -> Iterator[Varnish]:
    """Varnish in front of ``backend_host:backend_port``; ``purge_port`` if the app must be
    told it before Varnish starts; ``vcl_text``: another VCL, already pointed at its backend."""
    varnishd = shutil.which("varnishd") or ("/usr/sbin/varnishd" if Path("/usr/sbin/varnishd").exists() else None)
    if varnishd is None:
        pytest.skip("varnishd is not installed (apt-get install -y varnish varnish-modules)")
    if not list(Path("/usr/lib").glob("*/varnish/vmods/libvmod_xkey.so")):
        pytest.skip("vmod_xkey is not installed (apt-get install -y varnish-modules)")
    workdir = Path(tempfile.mkdtemp(prefix="sk-varnish-"))
    vcl = workdir / "default.vcl"
    vcl.write_text(vcl_text if vcl_text is not None else vcl_for(backend_host, backend_port))
    traffic, purge = free_port(), purge_port or free_port()
    log_path = workdir / "varnishd.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [varnishd, "-F", "-j", "none", "-n", str(workdir / "n"), "-f", str(vcl),
             "-a", f"127.0.0.1:{traffic}", "-a", f"purge=127.0.0.1:{purge}", "-T", "none",
             "-s", "malloc,32m", "-p", "vcc_allow_inline_c=off"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_port(traffic, process=process, log_path=log_path, timeout_seconds=30)
        wait_for_port(purge, process=process, log_path=log_path, timeout_seconds=30)
        yield Varnish(url=f"http://127.0.0.1:{traffic}", purge_url=f"http://127.0.0.1:{purge}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)
