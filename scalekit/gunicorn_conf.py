"""Gunicorn hooks for Prometheus multiprocess mode, used by ``scalekit serve`` for WSGI apps.

Use it directly with ``gunicorn -c python:scalekit.gunicorn_conf module:app``. With several
workers, each process writes its metric values to files in ``PROMETHEUS_MULTIPROC_DIR`` and
``/metrics`` merges them (:func:`scalekit.metrics.render_exposition`): counters and histograms
are summed over every worker that ever ran, the in-flight gauge over live workers only. For
that, the directory must start empty (files of an earlier run would be added in) and a dead
worker's live gauges must be dropped, which is what these hooks do.

Workers import the app themselves (no ``preload_app``), after the master has set the
directory, so prometheus_client picks multiprocess mode in every worker.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["child_exit", "on_starting", "prepare_multiprocess_dir"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_multiprocess_dir(directory: str | os.PathLike[str]) -> Path:
    """Create ``directory`` and delete metric files left there by an earlier run.

    Only prometheus_client's ``*.db`` files are removed, so pointing the variable at a folder
    that holds anything else never deletes it.
    """
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)
    return path


def on_starting(server: Any) -> None:
    """Gunicorn hook (master, once): start with an empty metrics directory."""
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        prepare_multiprocess_dir(directory)


def child_exit(server: Any, worker: Any) -> None:
    """Gunicorn hook (master, per dead worker): drop its live gauges from the sums."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
