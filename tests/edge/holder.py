"""An app instance that queues a purge, takes it as the consumer about to send it, says
"held" and waits to be killed (tests/edge/test_fleet.py kills it with SIGKILL).

Configured by SK_EDGE_CONFIG (JSON keyword arguments for scalekit.wrap) and SK_EDGE_TAGS.
"""

from __future__ import annotations

import json
import os
import sys
import time

import scalekit

from .harness import hello

app = scalekit.wrap(hello, **json.loads(os.environ["SK_EDGE_CONFIG"]))
app.runtime.startup()
app.runtime.invalidate(os.environ["SK_EDGE_TAGS"].split())
workers = app.runtime.services["cdn.purge"].workers.values()
deadline = time.monotonic() + 30
while not all(worker.held for worker in workers) and time.monotonic() < deadline:
    time.sleep(0.01)
print("held" if all(worker.held for worker in workers) else "not held", flush=True)
sys.stdout.close()
time.sleep(120)
