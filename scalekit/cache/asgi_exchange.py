"""One origin call under ASGI: :class:`Exchange` wraps the app's ``send``.

The response start is held until the policy has decided (:meth:`~.policy.CachePolicy.decide_response`),
then, by decision:

- pass (not storable): every message goes on at once, and the leader's waiters are released to
  go to the origin themselves (nothing will be stored for them to find);
- buffer (storable): the start waits for the first body message only. A body sent whole in it
  (``more_body`` false, as most frameworks send a complete response) is stored, the waiters are
  released to find it, and the client is answered from it. A body still coming is a stream:
- copy: the start and each chunk go on as the app sends them, never held back; a copy is kept
  while it stays within ``max_body_bytes`` and stored after the last message (with the
  invalidation marks read before the origin was called). Waiters do not wait for a stream's
  end: they are released at once to go to the origin themselves;
- discard (Freshen, ServeStale): the app's messages are dropped and the stored entry answers
  once the app has returned.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, assert_never

from .. import asgi
from .asgi_io import encode_headers, send_whole
from .coalesce import Lead
from .decisions import Buffer, Forward, Freshen, PassThrough, RequestView, ServeStale, pass_outcome
from .entry import CachedEntry
from .rules import rule_of

if TYPE_CHECKING:
    from .asgi import ASGICache

__all__ = ["Exchange"]


class Exchange:
    """One origin call's response messages, on their way to ``downstream``."""

    __slots__ = ("background", "chunks", "ctx", "decision", "downstream", "entry_key", "forward",
                 "index", "key", "lead", "mode", "overflowed", "request_time", "shell", "since",
                 "size", "start_message", "started", "status", "uri_mark", "view")

    def __init__(self, shell: ASGICache, downstream: asgi.Send, view: RequestView, key: str,
                 forward: Forward, index: CachedEntry | None, entry_key: str, since: int,
                 ctx: Any, background: bool, lead: Lead | None = None) -> None:
        self.shell = shell
        self.downstream = downstream
        self.view = view
        self.key = key
        self.forward = forward
        self.index = index
        self.entry_key = entry_key
        self.since = since
        self.uri_mark = shell.core.recent.mark()
        self.ctx = ctx
        self.background = background
        self.lead = lead
        self.request_time = shell.clock()
        self.started = False
        self.mode = "start"
        self.status = 500
        self.decision: Any = None
        self.chunks: list[bytes] | None = None
        self.size = 0
        self.overflowed = False
        self.start_message: asgi.Message = {}

    def count(self, outcome: str) -> None:
        if not self.background:
            self.shell.core.count(outcome)

    def send(self, message: asgi.Message) -> Awaitable[None]:
        """The app's ``send``: a plain function handing on the awaitable of the mode's step."""
        kind = message["type"]
        mode = self.mode
        if kind == "http.response.start":
            return self._start(message)
        if mode == "pass":
            return self.downstream(message)
        if mode == "copy":
            return self._copy(message)
        if mode == "buffer":
            if kind == "http.response.body":
                return self._first_body(message)
            # trailers or an extension message: not a plain body, so it is not stored
            return self._pass_unstored(message)
        return asgi.DONE  # mode "discard" (answered from the stored entry) or "done": dropped

    # The steps below are plain functions where their usual case awaits nothing of its own,
    # handing on the next send's awaitable (or asgi.DONE): a coroutine a step costs a miss
    # about 1,000 instructions.
    def _start(self, message: asgi.Message) -> Awaitable[None]:
        shell = self.shell
        self.status = status = message["status"]
        headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in message.get("headers", ())]
        self.decision = decision = shell.policy.decide_response(
            self.view, self.forward, status, headers, now=shell.clock(),
            request_time=self.request_time, rule=rule_of(self.ctx))
        match decision:
            case PassThrough():
                if decision.delete_stored or self.lead is not None:
                    return self._pass_through(message, decision)
                if self.forward.may_store:  # the answer could not be stored: remember (hit-for-miss)
                    shell.core.pass_marks.add(self.key)
                self.count(pass_outcome(self.forward, self.view.method))
                self.mode = "pass"
                self.started = True
                return self.downstream({**message, "headers": encode_headers(decision.headers)})
            case Buffer():
                self.mode = "buffer"
                self.start_message = message
                if message.get("trailers"):
                    return self._pass_unstored(None)
                return asgi.DONE
            case Freshen() | ServeStale():
                self.mode = "discard"
                return asgi.DONE
            case _:
                assert_never(decision)

    async def _pass_through(self, message: asgi.Message, decision: PassThrough) -> None:
        shell = self.shell
        if decision.delete_stored:
            await shell.store.adelete(self.entry_key)
        if self.forward.may_store:  # the answer could not be stored: remember (hit-for-miss)
            shell.core.pass_marks.add(self.key)
        if self.lead is not None:
            await self._end_lead(alone=True)
        self.count(pass_outcome(self.forward, self.view.method))
        self.mode = "pass"
        self.started = True
        await self.downstream({**message, "headers": encode_headers(decision.headers)})

    async def _end_lead(self, *, alone: bool) -> None:
        """Wake the waiters now (``alone``: to go to the origin), not when the app returns."""
        lease = self._finish_lead(alone)
        if lease is not None:
            await self.shell.release_lease(lease)

    def _finish_lead(self, alone: bool) -> Any:
        """:meth:`_end_lead` but the fleet lease's release: the lease to release, if any."""
        lead, self.lead = self.lead, None
        return lead.finish(alone=alone) if lead is not None else None

    def _first_body(self, message: asgi.Message) -> Awaitable[None]:
        chunk = message.get("body", b"")
        if len(chunk) > self.shell.core.max_body_bytes:
            self.shell.core.pass_marks.add(self.key)
            return self._pass_unstored(message)  # too large to store: streamed on untouched
        if not message.get("more_body", False):
            return self._store_and_answer(chunk)
        return self._start_copy(message)

    async def _pass_unstored(self, message: asgi.Message | None) -> None:
        """Give up storing: the held start (origin's headers), ``message``, then pass the rest."""
        self.count("uncacheable")
        self.mode = "pass"
        self.started = True
        if self.lead is not None:
            await self._end_lead(alone=True)
        await self.downstream({**self.start_message, "headers": encode_headers(self.decision.pass_headers)})
        if message is not None:
            await self.downstream(message)

    async def _store_and_answer(self, body: bytes) -> None:
        shell, core = self.shell, self.shell.core
        self.mode = "done"
        entry = await core.astore_response(self.key, self.view, self.decision.plan, body, self.index,
                                           since=self.since, uri_mark=self.uri_mark, ctx=self.ctx)
        if self.lead is not None:  # after the store: waiters find the entry (no coroutine: hot)
            lease = self._finish_lead(False)
            if lease is not None:
                await self.shell.release_lease(lease)
        self.count("miss")
        status, headers, out = shell.policy.stored_miss_response(
            self.view, self.forward, self.status, entry, self.decision.plan.unsent, self.decision.pass_headers, body,
            now=shell.clock())
        self.started = True
        await send_whole(self.downstream, status, headers, out)

    async def _start_copy(self, message: asgi.Message) -> None:
        chunk = message.get("body", b"")
        self.mode = "copy"
        self.chunks, self.size = [chunk], len(chunk)
        self.started = True
        if self.lead is not None:
            await self._end_lead(alone=True)
        await self.downstream({**self.start_message, "headers": encode_headers(self.decision.pass_headers)})
        await self.downstream(message)

    async def _copy(self, message: asgi.Message) -> None:
        chunks = self.chunks
        if message["type"] != "http.response.body":
            self.chunks = None  # trailers or an extension: not a plain body, not stored
            await self.downstream(message)
            return
        if chunks is not None:
            chunk = message.get("body", b"")
            self.size += len(chunk)
            if self.size > self.shell.core.max_body_bytes:
                self.chunks, self.overflowed = None, True
            else:
                chunks.append(chunk)
        await self.downstream(message)
        if not message.get("more_body", False):
            self.mode = "done"
            await self._store_copy()

    async def _store_copy(self) -> None:
        """The stream ended and reached the client: store its copy if it stayed within bounds."""
        core = self.shell.core
        if self.chunks is not None:
            await core.astore_response(self.key, self.view, self.decision.plan, b"".join(self.chunks),
                                       self.index, since=self.since, uri_mark=self.uri_mark, ctx=self.ctx)
        elif self.overflowed:
            core.pass_marks.add(self.key)
            self.count("uncacheable")
            return
        self.count("miss")

    async def finish(self) -> None:
        """After the app returned: answer from the stored entry if that was the decision."""
        decision = self.decision
        if self.mode == "buffer":  # the app ended without a body message
            await self._pass_unstored({"type": "http.response.body", "body": b"", "more_body": False})
        elif self.mode == "copy":  # it ended without its last body message: not stored
            self.mode = "done"
            self.count("miss")
        elif isinstance(decision, Freshen):
            shell, core = self.shell, self.shell.core
            if decision.entry is not None:
                await core.astore_entry(self.key, decision.entry, self.index, self.uri_mark)
            else:
                await shell.store.adelete(self.entry_key)
            if self.lead is not None:
                await self._end_lead(alone=False)
            self.count("revalidated")
            await send_whole(self.downstream, decision.status, decision.headers, decision.body)
        elif isinstance(decision, ServeStale):
            self.count("stale")
            await send_whole(self.downstream, decision.status, decision.headers, decision.body)
