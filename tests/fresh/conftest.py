"""Session-wide pieces of the fresh-environment checks: the wheelhouse, one copy of the
checkout, and, once for the whole run (shared by the xdist workers), the checkout's wheel and
one virtualenv per set of extras.

A test names its venv with ``@pytest.mark.fresh_venv(*extras)`` and takes the ``venv``
fixture; every venv the selected tests name starts building when the first is asked for. Under
xdist, every worker collects the whole session but runs only its share (``--dist loadfile``:
whole files), so a worker builds only the venvs of the modules it runs, when it starts each:
building every one on every worker tripled the builds (18 for 7) on two cores.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import REPO_ROOT

from .environments import Checkout, FreshVenv, Venvs, Wheelhouse, build_once, build_wheel, copy_checkout

_WHEELHOUSE = pytest.StashKey[Wheelhouse]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A cold wheelhouse (a new CI machine) is a download of every extra's wheels, minutes on a
    # slow or loaded machine: done here, before any test runs, and not inside the first fresh
    # test's setup, where the suite's per-test timeout cut it off every time.
    here = Path(__file__).parent
    if any(here in Path(str(item.path)).parents for item in items):
        config.stash[_WHEELHOUSE] = Wheelhouse.for_checkout(REPO_ROOT)


@pytest.fixture(scope="session")
def wheelhouse(pytestconfig: pytest.Config) -> Wheelhouse:
    return pytestconfig.stash.get(_WHEELHOUSE, None) or Wheelhouse.for_checkout(REPO_ROOT)


@pytest.fixture(scope="session")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Checkout:
    return copy_checkout(tmp_path_factory.mktemp("checkout"))


@pytest.fixture(scope="session")
def run_folder(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder shared by every process of this run: an xdist worker's base temporary folder
    is ``popen-gw<n>`` in the run's own one."""
    if hasattr(request.config, "workerinput"):
        return tmp_path_factory.getbasetemp().parent / "fresh-shared"
    return tmp_path_factory.mktemp("fresh-shared")


@pytest.fixture(scope="session")
def venvs(request: pytest.FixtureRequest, run_folder: Path, wheelhouse: Wheelhouse,
          checkout: Checkout) -> Iterator[Venvs]:
    # The wheel is built once per run, not once per worker (each build is 5 to 15 s of CPU).
    built = build_once(run_folder / "wheel", lambda folder: build_wheel(checkout, wheelhouse, folder))
    (wheel,) = built.glob("scalekit-*.whl")
    pool = Venvs(run_folder / "venvs", wheel=wheel, wheelhouse=wheelhouse)
    if not hasattr(request.config, "workerinput"):  # not an xdist worker: this process runs them all
        prepare_venvs(pool, request.session.items)
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def module_venvs(request: pytest.FixtureRequest, venvs: Venvs) -> Venvs:
    """``venvs``, with every venv this module's tests name being built."""
    prepare_venvs(venvs, [item for item in request.session.items if item.path == request.path])
    return venvs


def prepare_venvs(pool: Venvs, items: list[pytest.Item]) -> None:
    for item in items:
        marker = item.get_closest_marker("fresh_venv")
        if marker is not None:
            pool.prepare(marker.args)


@pytest.fixture
def venv(request: pytest.FixtureRequest, module_venvs: Venvs) -> FreshVenv:
    """The venv with exactly the extras of the test's ``fresh_venv`` marker."""
    marker = request.node.get_closest_marker("fresh_venv")
    assert marker is not None, "mark the test with @pytest.mark.fresh_venv(*extras)"
    return module_venvs.get(marker.args)


@pytest.fixture
def user_folder(tmp_path: Path) -> Path:
    """An empty folder outside the checkout, where a user writes their own app."""
    return tmp_path
