"""gunicorn settings for one scalekit app instance (container, VM or this machine's tests).

Run: ``gunicorn -c deploy/gunicorn.conf.py`` (the Dockerfile's command). Everything that differs
between environments comes from the environment:

==========================  ===============================  ====================================
variable                    default                          meaning
==========================  ===============================  ====================================
APP_MODULE                  examples.flask_shop.app:app      the wrapped app, ``module:attribute``
BIND                        0.0.0.0:8000                     listen address
WEB_CONCURRENCY             2                                worker processes (about one per CPU)
THREADS                     8                                threads per worker (gthread)
WORKER_CLASS                gthread                          ``uvicorn.workers.UvicornWorker`` for
                                                             an ASGI app
FORWARDED_ALLOW_IPS         127.0.0.1,::1                    the proxy (nginx) allowed to set
                                                             X-Forwarded-For / -Proto
GRACEFUL_TIMEOUT            25                               seconds to finish requests on SIGTERM
PROMETHEUS_MULTIPROC_DIR    /tmp/scalekit-metrics            (several workers) metric files
==========================  ===============================  ====================================

Capacity: each worker process has its own pool per database, so one instance may hold up to
WEB_CONCURRENCY x (pool_size + max_overflow) Postgres connections; see deploy/README.md.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Iterable
from typing import Any

wsgi_app = os.environ.get("APP_MODULE", "examples.flask_shop.app:app")
bind = [os.environ.get("BIND", "0.0.0.0:8000")]
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("THREADS", "8"))
worker_class = os.environ.get("WORKER_CLASS", "gthread")
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")

# nginx keeps idle connections to the app for 60 s (deploy/nginx/nginx.conf keepalive_timeout);
# the app must keep them longer, or nginx may send a request on a connection being closed.
keepalive = 75
timeout = 60
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT", "25"))
# Heartbeat files on tmpfs: a disk-backed /tmp in a container can stall workers.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
accesslog = None          # nginx logs every request; the app logs errors
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info")

# Several worker processes: prometheus_client writes metric files here and /metrics merges them
# (scalekit.metrics.render_exposition), so one scrape sees the whole instance. Set before any
# worker imports prometheus_client (the app is loaded in each worker, not in the master).
if workers > 1:
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", "/tmp/scalekit-metrics")


# Empty the metrics directory at start (files of an earlier run would be summed) and drop a dead
# worker's live gauges (in-flight requests, pool connections) from the sums.


def post_worker_init(worker: Any) -> None:
    """Give a WSGI app the client's address from X-Forwarded-For, when nginx sent it.

    gunicorn applies ``forwarded_allow_ips`` to the scheme headers only; REMOTE_ADDR stays the
    proxy's. ASGI workers (uvicorn) do this themselves from the same setting.
    """
    app = getattr(worker, "wsgi", None)
    if app is not None and "asgi" not in type(worker).__name__.lower() and "uvicorn" not in type(worker).__module__:
        worker.wsgi = TrustedForwardedFor(app, worker.cfg.forwarded_allow_ips)


class TrustedForwardedFor:
    """Set REMOTE_ADDR from X-Forwarded-For, only for requests whose peer is a trusted proxy.

    The proxy (deploy/nginx/scalekit.conf) sends exactly one address, the client it has
    established; the last entry is taken in case another proxy appended to it. Anything that
    does not parse as an IP address is ignored, and a direct client's header never counts.
    """

    def __init__(self, app: Callable[..., Iterable[bytes]], trusted: Iterable[str]) -> None:
        self.app = app
        entries = [entry.strip() for entry in trusted if entry.strip()]
        self.trust_all = "*" in entries
        self.networks = tuple(ipaddress.ip_network(entry, strict=False) for entry in entries if entry != "*")

    def is_trusted(self, address: str | None) -> bool:
        if self.trust_all:
            return True
        try:
            ip = ipaddress.ip_address(address or "")
        except ValueError:
            return False
        return any(ip.version == net.version and ip in net for net in self.networks)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        forwarded = environ.get("HTTP_X_FORWARDED_FOR")
        if forwarded and self.is_trusted(environ.get("REMOTE_ADDR")):
            candidate = forwarded.rsplit(",", 1)[-1].strip()
            try:
                ipaddress.ip_address(candidate)
            except ValueError:
                pass
            else:
                environ["REMOTE_ADDR"] = candidate
        return self.app(environ, start_response)
