"""Plans: one generator per Redis operation, performed alike by run() (sync) and arun() (asyncio).

Pure units with plain callables standing in for Redis commands; the scripts themselves run on a
real Redis in test_fleet*.py.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

from scalekit.cache.tiers.plans import Either, InThread, Pause, Plan, arun, run


def _plan(calls: list[Callable[[], Any]], seen: list[Any]) -> Plan[str]:
    for call in calls:
        try:
            seen.append((yield call))
        except LookupError as error:  # a failed call is thrown back in at its yield
            seen.append(f"caught {error}")
    return "done"


async def _later() -> str:
    await asyncio.sleep(0)
    return "awaited"


def _fails() -> None:
    raise KeyError("gone")


def test_run_and_arun_give_a_plan_the_same_answers() -> None:
    calls: list[Callable[[], Any]] = [lambda: 1, _fails, Pause(0.001), threading.get_ident]
    here: list[Any] = []
    assert run(_plan(calls, here)) == "done"
    on_loop: list[Any] = []
    assert asyncio.run(arun(_plan(calls, on_loop))) == "done"
    assert here[:3] == on_loop[:3] == [1, "caught 'gone'", None]


def test_arun_awaits_what_a_call_returns_and_runs_blocking_calls_in_a_thread() -> None:
    seen: list[Any] = []

    async def scenario() -> str:
        loop_thread = threading.get_ident()
        result = await arun(_plan([_later, InThread(threading.get_ident)], seen))
        assert seen[1] != loop_thread
        return result

    assert asyncio.run(scenario()) == "done"
    assert seen[0] == "awaited"
    here: list[Any] = []
    run(_plan([InThread(threading.get_ident)], here))
    assert here == [threading.get_ident()]  # run() calls it in place


def test_an_error_the_plan_does_not_handle_reaches_the_caller() -> None:
    def boom() -> None:
        raise ConnectionError("refused")

    with pytest.raises(ConnectionError):
        run(_plan([boom], []))
    with pytest.raises(ConnectionError):
        asyncio.run(arun(_plan([boom], [])))


def test_an_either_is_made_in_its_sync_form_by_run_and_awaited_by_arun() -> None:
    async def asynchronous() -> str:
        await asyncio.sleep(0)
        return "async"

    either = Either(lambda: "sync", asynchronous)
    seen: list[Any] = []
    assert run(_plan([either], seen)) == "done"
    assert seen == ["sync"]
    seen.clear()
    asyncio.run(arun(_plan([either], seen)))
    assert seen == ["async"]
