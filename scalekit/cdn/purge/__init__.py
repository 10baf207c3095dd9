"""Edge purges: every invalidation of the app also reaches the caches in front of it.

Configured under ``cdn.purge`` (:mod:`.config`); built once per runtime by
:func:`attach_edge_purges` when targets are configured. Importing this package imports
nothing heavy: the queue, the worker and the vendors load with the first runtime that needs
them.
"""

from __future__ import annotations

from typing import Any

from .config import PurgeConfig, PurgeTargetConfig

__all__ = ["PurgeConfig", "PurgeTargetConfig", "attach_edge_purges"]


def attach_edge_purges(runtime: Any) -> Any:
    """The runtime's edge purger (built once), or None when ``cdn.purge`` has no targets."""
    if not runtime.config.cdn.purge.active:
        return None
    from .service import edge_purger

    return edge_purger(runtime)
