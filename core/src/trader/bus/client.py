"""The asynchronous Majordomo client (RFC 7/MDP 0.1): call services through the broker.

One DEALER socket carries any number of calls at once; replies are matched to calls by the
envelope's correlation id. A call that gets no reply within ``retry_interval`` is sent again
with the *same* message id until its timeout: the broker routes the retry to the worker that has
(or had) the call and that worker's dedupe answers it, so the handler runs once unless that
worker died or lost its connection meanwhile. A retry that crosses a late reply is harmless:
the first reply wins and later ones are dropped, so a caller sees exactly one reply. Each
request carries how long its caller still waits (``ttl``), and the broker drops a request
nobody waits for any more instead of running it.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from typing import Any, TypeVar, overload

import zmq

from trader.bus import mdp
from trader.bus.codec import (
    Envelope,
    ErrorReply,
    MessageRegistry,
    decode_envelope,
    default_registry,
    encode_envelope,
    new_message_id,
)
from trader.bus.errors import (
    BusError,
    CallTimeout,
    MalformedMessage,
    NotUnderstood,
    RemoteError,
    ServiceUnavailable,
)
from trader.bus.service import ServiceDispatcher, local_dispatcher
from trader.bus.transport import Security, make_socket
from trader.interfaces.base import Component

__all__ = ["Client"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Default seconds a call waits for its reply, retries included.
DEFAULT_TIMEOUT = 5.0
#: Default seconds before a call without reply is sent again.
DEFAULT_RETRY_INTERVAL = 1.0


class _Call:
    __slots__ = (
        "attempts",
        "deadline",
        "frame",
        "future",
        "service",
        "service_frame",
        "timeout",
    )

    def __init__(
        self,
        service: str,
        service_frame: bytes,
        frame: bytes,
        future: asyncio.Future[Envelope],
        deadline: float,
        timeout: float,
    ) -> None:
        self.service = service
        self.service_frame = service_frame
        self.frame = frame
        self.future = future
        self.deadline = deadline
        self.timeout = timeout
        self.attempts = 1


class Client(Component):
    """Call services through the broker at ``endpoint``.

    Use ``async with Client(endpoint) as client:`` (or :meth:`open`/:meth:`close`), then
    ``reply = await client.call("echo", Ping("hi"))``. ``context`` defaults to
    :func:`trader.bus.mdp.shared_context`; ``security`` goes to
    :func:`trader.bus.transport.make_socket`. With an ``inproc://`` endpoint, services hosted
    by a :class:`~trader.bus.service.ServiceHost` in the same event loop are called directly
    (see there) unless ``local_calls`` is False. Calls made to one service in the same turn of
    the event loop travel together, up to ``max_batch`` per message.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        context: zmq.Context[Any] | None = None,
        security: Security | None = None,
        registry: MessageRegistry | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retry_interval: float = DEFAULT_RETRY_INTERVAL,
        heartbeat_interval: float = mdp.HEARTBEAT_INTERVAL,
        local_calls: bool = True,
        max_batch: int = 25,
    ) -> None:
        if timeout <= 0 or retry_interval <= 0 or max_batch < 1:
            raise ValueError("timeout, retry_interval and max_batch must be positive")
        self.endpoint = endpoint
        self.registry = registry if registry is not None else default_registry
        self.timeout = timeout
        self.retry_interval = retry_interval
        self.heartbeat_interval = heartbeat_interval
        self.local_calls = local_calls
        self.malformed = 0
        self.duplicates = 0
        self.retries = 0
        self._base_context = context  # a shadow does not keep its context alive
        self._context = mdp.sync_context(context)
        self._security = security
        self._pump: mdp.SocketPump | None = None
        self._calls: dict[bytes, _Call] = {}
        self._outbox: dict[bytes, list[bytes]] = {}
        #: The deadlines (loop time) of the calls in each service's outbox, for the ttl frame.
        self._outbox_deadlines: dict[bytes, list[float]] = {}
        self._flush_scheduled = False
        self._due: list[tuple[float, int, bytes, int]] = []
        self._order = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = 0.0
        self.max_batch = max_batch
        self._mmi: dict[bytes, asyncio.Future[bytes]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect to the broker. Idempotent."""
        if self._pump is not None:
            return
        self._loop = asyncio.get_running_loop()
        socket = make_socket(
            self._context,
            zmq.DEALER,
            self.endpoint,
            bind=False,
            security=self._security,
            heartbeat_ms=max(1, int(self.heartbeat_interval * 1000)),
            options=mdp.QUEUE_OPTIONS,
        )
        self._pump = mdp.SocketPump(socket, self._on_message, self._loop)

    async def close(self) -> None:
        """Fail calls still waiting with :class:`BusError` and close the socket. Idempotent."""
        for call in list(self._calls.values()):
            if not call.future.done():
                call.future.set_exception(
                    BusError(f"client closed during call to {call.service!r}")
                )
        self._calls.clear()
        self._due.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for future in self._mmi.values():
            if not future.done():
                future.set_exception(BusError("client closed during a service query"))
        self._mmi.clear()
        if self._pump is not None:
            self._pump.close()
            self._pump = None
        self._outbox.clear()
        self._outbox_deadlines.clear()

    # -- calls ---------------------------------------------------------------------------------

    @overload
    async def call(
        self, service: str, request: Any, *, timeout: float | None = None, expect: type[T]
    ) -> T: ...

    @overload
    async def call(self, service: str, request: Any, *, timeout: float | None = None) -> Any: ...

    async def call(
        self,
        service: str,
        request: Any,
        *,
        timeout: float | None = None,
        expect: type[Any] | None = None,
    ) -> Any:
        """Send ``request`` (a registered message or model object) and return the reply message.

        With ``expect`` the reply must be of that type (else :class:`BusError`), and the return
        type follows it. Raises :class:`ServiceUnavailable` when no worker serves ``service``,
        :class:`CallTimeout` when no reply came within ``timeout`` seconds (retries included),
        :class:`RemoteError` when the handler raised and :class:`NotUnderstood` when the worker
        did not know the request's type or the reply's type is unknown here.
        """
        envelope = self.registry.envelope(request)
        frame = encode_envelope(envelope)
        local = local_dispatcher(self.endpoint, service) if self.local_calls else None
        if local is not None:
            reply = await self._call_local(local, service, frame, timeout)
        else:
            reply = await self.request(service, envelope.id, frame, timeout=timeout)
        if reply.type == ErrorReply.type_name:
            raise _error_from(service, self.registry.decode(reply))
        message = self.registry.decode(reply)
        if expect is not None and not isinstance(message, expect):
            raise BusError(
                f"service {service!r} replied with {reply.type}, expected {expect.__name__}"
            )
        return message

    async def request(
        self, service: str, message_id: bytes, frame: bytes, *, timeout: float | None = None
    ) -> Envelope:
        """Send an encoded envelope with id ``message_id``; return the reply envelope.

        The low-level form of :meth:`call`: retries with the same frame, raises
        :class:`CallTimeout`, and leaves error replies to the caller.
        """
        loop = self._loop
        if self._pump is None or loop is None:
            raise BusError("the bus client is not open; use `async with Client(...)` first")
        wait = self.timeout if timeout is None else timeout
        if wait <= 0:
            raise ValueError("timeout must be positive")
        service_frame = service.encode()
        future: asyncio.Future[Envelope] = loop.create_future()
        call = _Call(service, service_frame, frame, future, loop.time() + wait, wait)
        calls = self._calls
        if message_id in calls:
            raise BusError("a call with this message id is already waiting")
        calls[message_id] = call
        self._schedule(loop.time() + min(self.retry_interval, wait), message_id, 1)
        self._enqueue(service_frame, frame, call.deadline)
        try:
            return await future
        finally:
            calls.pop(message_id, None)  # close() may have cleared the table

    async def _call_local(
        self, dispatcher: ServiceDispatcher, service: str, frame: bytes, timeout: float | None
    ) -> Envelope:
        """Run a call on a dispatcher of this event loop, under the same timeout rules."""
        loop = self._loop
        task = asyncio.current_task()
        if loop is None or task is None:
            raise BusError("the bus client is not open; use `async with Client(...)` first")
        wait = self.timeout if timeout is None else timeout
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            task.cancel()

        timer = loop.call_later(wait, expire)
        try:
            reply = await dispatcher(frame)
        except asyncio.CancelledError:
            if not expired:
                raise
            if hasattr(task, "uncancel"):  # Python 3.11+: our own cancel is consumed here
                task.uncancel()
            raise CallTimeout(service, wait, 1) from None
        finally:
            timer.cancel()
        if reply is None:
            raise BusError(f"service {service!r} could not read the request")
        return decode_envelope(reply)

    def _schedule(self, due: float, message_id: bytes, attempt: int) -> None:
        # One loop timer serves every call: a heap of (due, order, id, attempt) in C tuples is
        # much cheaper than a TimerHandle per call. Entries of finished calls are skipped.
        self._order += 1
        heapq.heappush(self._due, (due, self._order, message_id, attempt))
        if self._timer is None or due < self._timer_due:
            if self._timer is not None:
                self._timer.cancel()
            assert self._loop is not None
            self._timer = self._loop.call_at(due, self._on_timers)
            self._timer_due = due

    def _on_timers(self) -> None:
        self._timer = None
        loop = self._loop
        if loop is None:
            return
        now = loop.time()
        due, calls = self._due, self._calls
        while due and due[0][0] <= now:
            _, _, message_id, attempt = heapq.heappop(due)
            call = calls.get(message_id)
            if call is None or call.future.done() or call.attempts != attempt:
                continue
            if now >= call.deadline - 1e-4:
                call.future.set_exception(CallTimeout(call.service, call.timeout, attempt))
                continue
            call.attempts += 1
            self.retries += 1
            self._enqueue(call.service_frame, call.frame, call.deadline)
            self._schedule(
                now + min(self.retry_interval, call.deadline - now), message_id, call.attempts
            )
        if due and self._timer is None:
            self._timer = loop.call_at(due[0][0], self._on_timers)
            self._timer_due = due[0][0]

    def _enqueue(self, service: bytes, frame: bytes, deadline: float) -> None:
        # Calls made in one turn of the loop to one service travel as one multipart message.
        # A lone call (no other call waiting) goes at once, so lockstep callers add no latency;
        # with other calls in flight, replies arrive in batches and wake callers together, so
        # waiting for the end of the turn gathers their next calls into one message.
        # Each message tells the broker how long its callers still wait (the ttl frame), so a
        # request nobody waits for any more is dropped instead of run.
        loop = self._loop
        assert loop is not None
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
            if len(self._calls) <= 1 and self._pump is not None:
                ttl = int((deadline - loop.time()) * 1000) + 1
                self._pump.send(mdp.client_request(service, frame, ttl))
                return
        box = self._outbox.get(service)
        if box is None:
            self._outbox[service] = [frame]
            self._outbox_deadlines[service] = [deadline]
        else:
            box.append(frame)
            self._outbox_deadlines[service].append(deadline)

    def _flush(self) -> None:
        self._flush_scheduled = False
        pump = self._pump
        outbox, self._outbox = self._outbox, {}
        deadlines, self._outbox_deadlines = self._outbox_deadlines, {}
        if pump is None or self._loop is None:
            return
        size = self.max_batch
        now = self._loop.time()
        for service, frames in outbox.items():
            ttls = [int((deadline - now) * 1000) + 1 for deadline in deadlines[service]]
            for start in range(0, len(frames), size):
                # A full queue drops the batch; the calls' retry timers send them again.
                end = start + size
                pump.send(mdp.client_requests(service, frames[start:end], ttls[start:end]))

    async def service_available(self, service: str, timeout: float = 1.0) -> bool:
        """Ask the broker (RFC 8 ``mmi.service``) whether ``service`` has a worker now."""
        pump = self._pump
        if pump is None or self._loop is None:
            raise BusError("the bus client is not open; use `async with Client(...)` first")
        future: asyncio.Future[bytes] = self._loop.create_future()
        query = new_message_id()
        self._mmi[query] = future
        try:
            if not pump.send([*mdp.client_request(mdp.MMI_SERVICE, service.encode()), query]):
                raise BusError("the bus client's send queue is full")
            code = await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise CallTimeout(mdp.MMI_SERVICE.decode(), timeout, 1) from None
        finally:
            self._mmi.pop(query, None)  # close() may have cleared the table
        return code == mdp.MMI_FOUND

    async def wait_for_service(self, service: str, timeout: float = 10.0) -> None:
        """Return once ``service`` has a worker; raise :class:`ServiceUnavailable` after timeout.

        Asks the broker repeatedly with a short backoff (the broker pushes no notifications).
        """
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ServiceUnavailable(service, f"still no worker after {timeout:g} s")
            with contextlib.suppress(CallTimeout):
                if await self.service_available(service, timeout=min(1.0, remaining)):
                    return
            await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 0.1)

    # -- replies -------------------------------------------------------------------------------

    def _on_message(self, frames: list[bytes]) -> None:
        if len(frames) < 4 or frames[0] != b"" or frames[1] != mdp.CLIENT:
            self._malformed(frames, "not an MDP client reply")
            return
        if frames[2].startswith(mdp.MMI_PREFIX):
            # trader's broker echoes the query id; a plain RFC 8 broker answers in order.
            if len(frames) > 4:
                future = self._mmi.get(frames[4])
            else:
                future = next((f for f in self._mmi.values() if not f.done()), None)
            if future is not None and not future.done():
                future.set_result(frames[3])
            return
        calls = self._calls
        for body in frames[3:]:
            if not body:
                continue  # a worker's placeholder for requests it could not decode
            try:
                envelope = decode_envelope(body)
            except MalformedMessage as error:
                self._malformed(frames, str(error))
                continue
            call = calls.get(envelope.correlation_id)
            if call is None or call.future.done():
                self.duplicates += 1
                continue
            call.future.set_result(envelope)

    def _malformed(self, frames: list[bytes], why: str) -> None:
        self.malformed += 1
        log.warning(
            "bus client dropped a malformed reply (%s, %d frames); %d dropped so far",
            why,
            len(frames),
            self.malformed,
        )


def _error_from(service: str, error: ErrorReply) -> BusError:
    if error.code == "service_unavailable":
        return ServiceUnavailable(service, error.message)
    if error.code == "not_understood":
        return NotUnderstood(error.error_type, error.message)
    return RemoteError(service, error.error_type, error.message)
