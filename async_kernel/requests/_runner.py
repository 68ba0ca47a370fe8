"""Running one request on its caller: busy, the handler, always a reply, idle."""

from __future__ import annotations

import contextvars
import inspect
import logging
from typing import TYPE_CHECKING, Any

from async_kernel._enums import MsgType
from async_kernel.wire._job import Job, current_job, error_content

if TYPE_CHECKING:
    from collections.abc import Callable

    from async_kernel.requests._handlers import RequestHandlers
    from async_kernel.wire._outbox import Outbox

__all__ = ("JobRunner",)

log = logging.getLogger("async_kernel")

_QUICK = frozenset({"kernel_info_request", "comm_info_request", "is_complete_request"})
"""Requests whose reply follows their `busy` within microseconds."""


def _announced_at_once(job: Job) -> bool:
    """Whether another message follows the `busy` of `job` at once (and takes it along).

    A quick request's reply does, as does the `execute_input` of an execute that is not
    silent. Any other `busy` is sent soon (`SocketHub.send_soon`): the handler (or a cell)
    may take long, and then it goes out a moment after the request arrived.
    """
    if job.reject is not None or job.msg_type in _QUICK:
        return True
    return job.msg_type == "execute_request" and not job.content.get("silent", False)


class JobRunner:
    """Wraps every request: whatever its handler does, the client gets a reply and `idle`.

    Args:
        outbox: Publishes the status messages and sends the replies.
        handlers: The object whose methods, named like the message types, handle requests.
    """

    def __init__(self, outbox: Outbox, handlers: RequestHandlers) -> None:
        self.outbox = outbox
        self.handlers = handlers
        self._sync_handlers = frozenset(
            t.value
            for t in MsgType
            if callable(h := getattr(handlers, t.value, None))
            and not inspect.iscoroutinefunction(h)
        )

    async def run(self, job: Job) -> None:
        """Run one request: busy, handler, reply (always), idle."""
        token = self._begin(job)
        content: dict[str, Any] | None = None
        try:
            try:
                content = await self.handle(job)
            except (Exception, KeyboardInterrupt) as e:
                content = self._failed(job, e)
        finally:
            self._end(job, token, content)

    def run_now(self, job: Job) -> None:
        """Run a request whose handler is synchronous, inside the caller's scheduler.

        The same as `run` without creating a task: the fast path of `blocking` requests.
        """
        token = self._begin(job)
        content: dict[str, Any] | None = None
        try:
            try:
                content = self._handler(job)(job)
            except (Exception, KeyboardInterrupt) as e:
                content = self._failed(job, e)
        finally:
            self._end(job, token, content)

    def is_sync(self, job: Job) -> bool:
        """Whether the handler of `job` is a plain function (so `run_now` can run it)."""
        return job.reject is not None or job.msg_type in self._sync_handlers

    async def handle(self, job: Job) -> dict[str, Any] | None:
        """Call the handler named like the request's msg_type and return its reply content."""
        result = self._handler(job)(job)
        if inspect.isawaitable(result):
            result = await result
        return result

    def _handler(self, job: Job) -> Callable[[Job], Any]:
        if job.reject is not None:
            error = {"status": "error", **job.reject}
            return lambda _: error
        return getattr(self.handlers, MsgType(job.msg_type).value)

    def _begin(self, job: Job) -> contextvars.Token[Job | None]:
        token = current_job.set(job)
        held = _announced_at_once(job)
        self.outbox.status(job, "busy", held=held, soon=not held)
        return token

    @staticmethod
    def _failed(job: Job, e: BaseException) -> dict[str, Any]:
        """The error reply of a handler that raised (an interrupt that landed late, too)."""
        if isinstance(e, KeyboardInterrupt):
            # An interrupt that arrived after the cell's code returned: still this request's.
            log.info("%r was interrupted outside its cell's code", job)
            state = job.execute
            if state is not None:
                state.interrupted = True
                state.metadata["status"] = "error"
                return {
                    "status": "error",
                    "execution_count": state.count,
                    **state.interrupt_error(),
                }
            return {"status": "error", **error_content("KeyboardInterrupt")}
        log.exception("%r failed", job)
        return {"status": "error", **error_content(type(e).__name__, str(e))}

    def _end(
        self, job: Job, token: contextvars.Token[Job | None], content: dict[str, Any] | None
    ) -> None:
        """Reply (when the request is one and has content), publish idle, run `after_reply`."""
        try:
            msg_type = job.msg_type
            if content is not None and msg_type.endswith("_request"):
                reply_type = msg_type.removesuffix("_request") + "_reply"
                metadata = job.execute.metadata if job.execute is not None else None
                try:
                    self.outbox.reply(job, reply_type, content, metadata, held=True)
                except Exception as e:  # the content could not be encoded: say so instead
                    log.exception("could not send the reply to %r", job)
                    failed = error_content(type(e).__name__, f"the reply could not be sent: {e}")
                    self.outbox.reply(job, reply_type, {"status": "error", **failed})
        finally:
            self.outbox.status(job, "idle")
            current_job.reset(token)
            if job.after_reply is not None:
                job.after_reply()
