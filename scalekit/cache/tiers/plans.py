"""Written once, performed twice: an operation that does I/O is a *plan*, a generator that
yields the calls to make and receives their answers (a call that raised is thrown back in at its
yield). :func:`run` performs a plan in this thread, :func:`arun` on the running event loop, so
the sync and asyncio faces of a tier, of the fleet's scripts and of the leases share every line
of their logic and differ only in how a call is made.

>>> def double(read):
...     value = yield read
...     return 2 * value
>>> run(double(lambda: 21))
42
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["Either", "InThread", "Pause", "Plan", "arun", "run"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Either:
    """Yielded by a plan: one call in its two forms, ``sync`` (what :func:`run` makes) and
    ``asynchronous`` (what :func:`arun` awaits), e.g. a tier's ``get`` and ``aget``."""

    sync: Callable[[], Any]
    asynchronous: Callable[[], Awaitable[Any]]

    def __call__(self) -> Any:
        return self.sync()


@dataclass(frozen=True, slots=True)
class Pause:
    """Yielded by a plan: wait ``seconds`` (called here it sleeps; :func:`arun` awaits instead)."""

    seconds: float

    def __call__(self) -> None:
        time.sleep(self.seconds)


class InThread(functools.partial[Any]):
    """Yielded by a plan: a blocking local call (:func:`arun` runs it in a worker thread)."""


# A plan yields zero-argument calls (a Redis command, an Either, a Pause, an InThread) and
# receives each one's answer; a call that raised is thrown back into the plan at its yield.
Plan = Generator[Callable[[], Any], Any, T]


async def _drive(plan: Plan[T], perform: Callable[[Callable[[], Any]], Any]) -> T:
    answer: Any = None
    error: BaseException | None = None
    while True:
        try:
            call = plan.send(answer) if error is None else plan.throw(error)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        try:
            answer, error = await perform(call), None
        except Exception as raised:  # noqa: BLE001 - the plan decides what a failure means
            answer, error = None, raised


async def _perform_here(call: Callable[[], Any]) -> Any:
    return call()


async def _perform_on_loop(call: Callable[[], Any]) -> Any:
    if isinstance(call, Either):
        return await call.asynchronous()
    if isinstance(call, Pause):
        return await asyncio.sleep(call.seconds)
    if isinstance(call, InThread):
        return await asyncio.to_thread(call)
    answer = call()
    return await answer if inspect.isawaitable(answer) else answer


def run(plan: Plan[T]) -> T:
    """Perform ``plan`` in this thread (sync clients, sync forms). The driver is the coroutine of
    :func:`arun`, which never suspends here: every call it awaits completes at once."""
    driver = _drive(plan, _perform_here)
    try:
        driver.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    driver.close()
    raise RuntimeError("a plan run by run() awaited something: use arun()")


async def arun(plan: Plan[T]) -> T:
    """Perform ``plan`` on the running event loop (asyncio clients, asynchronous forms)."""
    return await _drive(plan, _perform_on_loop)
