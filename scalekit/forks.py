"""Which process this is, known without a system call.

``os.getpid()`` enters the kernel on every call (about 0.5 µs on a virtual machine with the
usual side-channel mitigations), and the request path asks for it to notice that it runs in a
forked child (a gunicorn worker) whose parent's threads, queues and connections it must not
use. The id is read once and again in every child, by a fork hook (``os.fork`` runs it, as
gunicorn's and multiprocessing's forks do; a child made some other way is a new interpreter).
"""

from __future__ import annotations

import os

__all__ = ["pid"]

_pid = os.getpid()


def pid() -> int:
    """This process's id, as ``os.getpid()`` would say, at the price of a global read."""
    return _pid


def _after_fork_in_child() -> None:
    global _pid
    _pid = os.getpid()


# Registered as this module is imported, which scalekit/__init__.py does first, so before every
# other hook of ours: children's hooks run in registration order, and theirs may ask for the id.
os.register_at_fork(after_in_child=_after_fork_in_child)
