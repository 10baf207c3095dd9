"""Shared pytest set-up for the whole suite.

- Every test process gets its own scalekit state directory (``SCALEKIT_STATE_DIR``), so the
  disk tier and friends never write into the checkout, and stray ``SCALEKIT_*`` variables of
  the developer's shell cannot change what tests see (but for the tools' own knobs,
  ``scalekit.config.TOOLING_ENV``). Servers started by tests inherit both.
- ``promtool`` locates Prometheus' checker, or skips the test that needs it.
- Under xdist, the slowest files are handed out first (``HEAVIEST_FIRST``), so that the last
  files of a run are short ones and the workers finish together.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

from scalekit.config import TOOLING_ENV

_STATE_DIR: str | None = None

# The files that take longest, slowest first (seconds summed over their tests on a loaded
# two-core machine, three workers). scripts/test runs `-n 3 --dist loadfile
# --no-loadscope-reorder` (the option needs pytest-xdist 3.8): each file stays on one worker, and
# files are handed out in collection order, which this puts these first. xdist's own default
# order (files with the most tests first) left these few-test, long files for the end, where
# one of them ran alone for minutes.
# Every other file follows in its usual order; a file missing here is only scheduled later.
HEAVIEST_FIRST = (
    "tests/fresh/test_demos.py",  # 259 s
    "tests/fresh/test_snippets.py",  # 158 s
    "tests/test_code_checks.py",  # 63 s
    "tests/pool/test_soak.py",  # 61 s
    "tests/deploy/test_failover.py",  # 59 s
    "tests/fresh/test_missing_extras.py",  # 59 s
    "tests/cache/tiers/test_fleet_apps.py",  # 48 s
    "tests/realapps/test_settings_disagree.py",  # 44 s
    "tests/status/test_served.py",  # 39 s
    "tests/edge/test_varnish.py",  # 39 s
    "tests/cache/test_memory_bounds_served.py",  # 38 s
    "tests/realapps/test_mysite.py",  # 35 s
    "tests/faults/test_one_host_without_redis.py",  # 35 s
    "tests/pool/test_servers.py",  # 33 s
    "tests/realapps/test_flaskr.py",  # 32 s
    "tests/cache/test_memory_bounds.py",  # 32 s
    "tests/realapps/test_oauth.py",  # 30 s
    "tests/faults/test_fleet_under_faults.py",  # 30 s
    "tests/test_hot_stack.py",  # 26 s
    "tests/deploy/test_example_stack.py",  # 25 s
    "tests/cache/tiers/test_request_garbage.py",  # 24 s
    "tests/adapters/test_servers.py",  # 23 s
    "tests/pool/test_changefeed.py",  # 21 s
    "tests/deploy/test_autoscaling_signal.py",  # 19 s
    "tests/deploy/test_nginx.py",  # 19 s
    "tests/cache/tiers/test_disk_writer.py",  # 18 s
    "tests/cache/tiers/test_stateful.py",  # 18 s
    "tests/faults/test_app.py",  # 18 s
    "tests/test_cli.py",  # 16 s
    "tests/cache/tiers/test_fleet_protocol.py",  # 16 s
    "tests/pool/test_property.py",  # 16 s
    "tests/cache/tiers/test_fleet.py",  # 15 s
    "tests/cache/test_hot.py",  # 14 s
)


def pytest_configure(config: pytest.Config) -> None:
    # At configure time, before test modules (and the apps they wrap at import) are imported.
    global _STATE_DIR
    for name in [n for n in os.environ if n.startswith("SCALEKIT_") and n not in TOOLING_ENV]:
        del os.environ[name]  # the tools' own knobs stay: SCALEKIT_WHEELHOUSE, ..._PROTOCOL_EXAMPLES
    _STATE_DIR = tempfile.mkdtemp(prefix="scalekit-tests-")
    os.environ["SCALEKIT_STATE_DIR"] = _STATE_DIR


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Only on xdist workers: the order they collect is the order files are handed out in. A
    # stable sort, so each file's tests stay together and in their own order.
    if not hasattr(config, "workerinput"):
        return
    rank = {name: index for index, name in enumerate(HEAVIEST_FIRST)}
    root = config.rootpath

    def file_rank(item: pytest.Item) -> int:
        try:
            name = item.path.relative_to(root).as_posix()
        except ValueError:
            return len(rank)
        return rank.get(name, len(rank))

    items.sort(key=file_rank)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _STATE_DIR is not None:
        shutil.rmtree(_STATE_DIR, ignore_errors=True)


@pytest.fixture
def promtool() -> str:
    """Path of ``promtool`` (Debian package ``prometheus``); skips the test if absent."""
    path = shutil.which("promtool") or ("/usr/bin/promtool" if os.path.exists("/usr/bin/promtool") else None)
    if path is None:
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    return path


@pytest.fixture
def no_scalekit_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Remove every SCALEKIT_* variable for one test (the suite sets SCALEKIT_STATE_DIR)."""
    for name in [n for n in os.environ if n.startswith("SCALEKIT_")]:
        monkeypatch.delenv(name)
    yield


@pytest.fixture(autouse=True)
def _process_state_kept() -> Iterator[None]:
    """Fail the test that leaves a ``SCALEKIT_*`` variable or the working directory changed
    for the tests after it in this process (use ``monkeypatch``), and undo what it left."""
    environment, folder = _scalekit_environment(), os.getcwd()
    yield
    left, now_in = _scalekit_environment(), os.getcwd()
    if left == environment and now_in == folder:
        return
    for name in left.keys() - environment.keys():
        del os.environ[name]
    os.environ.update(environment)
    os.chdir(folder)
    changed = sorted(name for name in left.keys() | environment.keys() if left.get(name) != environment.get(name))
    pytest.fail(f"the test left SCALEKIT_* variables {changed} or the working directory "
                f"({folder} -> {now_in}) changed for later tests; set them with monkeypatch")


def _scalekit_environment() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if name.startswith("SCALEKIT_")}
