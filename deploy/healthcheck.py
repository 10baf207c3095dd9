"""Container health check: does this instance's scalekit pipeline answer? Exit 0 if so, else 1.

Used by the Dockerfile HEALTHCHECK, the compose healthcheck and the Kubernetes readiness probe.
It asks the instance's own ``/metrics`` on loopback (answered by scalekit's outermost layer, to
loopback clients, without running the app or touching the database): a database outage must
not get every instance restarted, it is the pool's 503s and the alerts that report it.

Reads ``BIND`` (``host:port``, as deploy/gunicorn.conf.py does) and ``SCALEKIT_METRICS_PATH``.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def health_url(environ: dict[str, str] | os._Environ[str]) -> str:
    """The loopback URL to probe, derived from the same settings the server uses."""
    port = environ.get("BIND", "0.0.0.0:8000").rsplit(":", 1)[1]
    path = environ.get("SCALEKIT_METRICS_PATH", "/metrics")
    return f"http://127.0.0.1:{port}{path}"


def main() -> int:
    url = health_url(os.environ)
    timeout_seconds = float(os.environ.get("HEALTHCHECK_TIMEOUT_SECONDS", "2"))
    try:
        with urllib.request.urlopen(url, timeout=timeout_seconds) as response:
            if response.status == 200:
                return 0
            print(f"unhealthy: {url} answered {response.status}", file=sys.stderr)
    except (urllib.error.URLError, OSError) as exc:
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
