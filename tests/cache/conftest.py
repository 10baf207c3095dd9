"""Fixtures of the cache-semantics tests: one harness fixture over four transports."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.cache.harness import DIRECT_KINDS, Harness, direct, server


@pytest.fixture(scope="module")
def gunicorn_harness() -> Iterator[Harness]:
    with server("gunicorn") as harness:
        yield harness


@pytest.fixture(scope="module")
def uvicorn_harness() -> Iterator[Harness]:
    with server("uvicorn") as harness:
        yield harness


@pytest.fixture(params=[
    "wsgi",
    "asgi",
    pytest.param("gunicorn", marks=pytest.mark.server),
    pytest.param("uvicorn", marks=pytest.mark.server),
])
def h(request: pytest.FixtureRequest) -> Iterator[Harness]:
    """The cached origin under each transport; default cache config."""
    if request.param in DIRECT_KINDS:
        harness = direct(request.param)
        yield harness
        harness.close()
    else:
        yield request.getfixturevalue(f"{request.param}_harness")


@pytest.fixture(params=DIRECT_KINDS)
def make(request: pytest.FixtureRequest) -> Iterator[Callable[..., Harness]]:
    """In-process WSGI and ASGI harnesses with cache config of the test's choosing."""
    made: list[Harness] = []

    def factory(**cache: Any) -> Harness:
        harness = direct(request.param, **cache)
        made.append(harness)
        return harness

    yield factory
    for harness in made:
        harness.close()


@pytest.fixture
def path(request: pytest.FixtureRequest) -> str:
    """A path of this test's own, so tests sharing a server never share entries."""
    return "/t/" + re.sub(r"[^A-Za-z0-9_-]+", "-", request.node.name).strip("-")
