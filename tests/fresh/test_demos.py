"""``make demo`` as the README describes it, for every framework, each in a new virtualenv
holding only what the Makefile installs: the README's walkthrough works on every shop (GET
miss, GET hit, a form POST changing the price, the new price shown), a second run starts from
an empty state again, and nothing is written into the checkout.

``make demo`` itself (pip install, then ``scalekit demo``) runs for the default Flask shop; for
the others the venv gets the extras ``make -n demo FRAMEWORK=...`` would install, and
``scalekit demo --framework ...`` runs in it, which is the rest of that target.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.servers import REPO_ROOT

from .environments import Checkout, FreshVenv, Wheelhouse, serving
from .readme import walkthrough

pytestmark = [pytest.mark.fresh, pytest.mark.server]


def walk(url: str) -> None:
    port = int(url.rsplit(":", 1)[1])
    for step in walkthrough():
        step.run(port)


def make_demo_extras(framework: str) -> list[str]:
    """The extras ``make demo FRAMEWORK=framework`` installs (from the Makefile, dry-run)."""
    dry_run = subprocess.run(["make", "-n", "demo", f"FRAMEWORK={framework}"], cwd=REPO_ROOT, check=True,
                             capture_output=True, text=True).stdout
    match = re.search(r'pip install -q -e "\.\[([a-z,]+)\]"', dry_run)
    assert match, dry_run
    assert f"scalekit.cli demo --framework {framework} " in dry_run
    return match.group(1).split(",")


# Two `make demo`s, each a pip install into the venv and a server start: 64 to 119 s on two
# loaded cores, against the suite's 120 s per test (which cut it off once, waiting for a start).
@pytest.mark.timeout(300)
def test_make_demo_twice_in_a_new_virtualenv(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Wheelhouse,
                                             checkout: Checkout) -> None:
    venv = FreshVenv(tmp_path_factory.mktemp("make-demo") / "venv", wheelhouse=wheelhouse, with_pip=True)
    for _ in range(2):  # the second run starts with the README's miss and seeded prices again
        with serving(["make", "demo", "PORT={port}"], venv=venv, cwd=checkout.root) as url:
            walk(url)
    assert checkout.state_dirs() == [], "the demo wrote its state into the checkout"


@pytest.mark.parametrize("framework", [
    pytest.param(framework, marks=pytest.mark.fresh_venv(*make_demo_extras(framework)), id=framework)
    for framework in ("builtin", "fastapi", "django")
])
def test_every_demo_walks_through_in_a_venv_with_what_make_demo_installs(
        framework: str, venv: FreshVenv, checkout: Checkout) -> None:
    with serving(["scalekit", "demo", "--framework", framework, "--port", "{port}"], venv=venv,
                 cwd=checkout.root) as url:
        walk(url)
    assert checkout.state_dirs() == [], "the demo wrote its state into the checkout"
