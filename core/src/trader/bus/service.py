"""Services: classes with typed handlers, served through the broker by workers.

A service is a class with a ``name`` and async handlers, each taking one message type and
returning a reply message::

    @dataclass(frozen=True)
    class Ping(Message, type_name="echo.ping"):
        text: str

    @dataclass(frozen=True)
    class Pong(Message, type_name="echo.pong"):
        text: str

    class Echo(Service):
        name = "echo"

        @handler
        async def ping(self, request: Ping) -> Pong:
            return Pong(request.text)

Serve it with ``async with ServiceHost(endpoint, [Echo()]): ...`` and call it with
``await client.call("echo", Ping("hi"), expect=Pong)``. A handler that raises makes the caller
raise :class:`~trader.bus.errors.RemoteError`; a request of a type the service has no handler
for is answered "not understood". Requests are deduplicated by message id: a retry of a request
that is running or done here gets the same reply and the handler runs once (within the cache's
``dedupe_size`` and ``dedupe_ttl``). The broker sends retries to the worker that has the request,
so this holds across workers too, unless that worker is lost before the caller has its reply
(then another worker may run the request again: at-least-once).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import typing
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, ClassVar, TypeVar, overload

import zmq

from trader.bus import mdp
from trader.bus.codec import (
    ErrorReply,
    MessageRegistry,
    decode_envelope,
    default_registry,
    encode_envelope,
)
from trader.bus.errors import BusError, MalformedMessage, NotUnderstood
from trader.bus.transport import Security
from trader.bus.worker import Worker
from trader.errors import TraderError

__all__ = ["Handler", "Service", "ServiceDispatcher", "ServiceHost", "handler"]

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
Handler = Callable[[Any], Awaitable[Any]]

_HANDLER_MARK = "__bus_handler__"


@overload
def handler(function: F, /) -> F: ...


@overload
def handler(request_type: type[Any], /) -> Callable[[F], F]: ...


def handler(target: Any, /) -> Any:
    """Mark an async method of a :class:`Service` as the handler of one request type.

    ``@handler`` takes the request type from the annotation of the method's one parameter;
    ``@handler(RequestType)`` names it explicitly (for classes defined where annotations cannot
    be resolved, e.g. inside a function).
    """
    if inspect.iscoroutinefunction(target):
        setattr(target, _HANDLER_MARK, None)
        return typing.cast(Any, target)
    if isinstance(target, type):

        def mark(function: F) -> F:
            is_async = inspect.iscoroutinefunction(function)
            if not is_async:
                raise TypeError(f"handler {function.__qualname__} must be an async function")
            setattr(function, _HANDLER_MARK, target)
            return function

        return mark
    raise TypeError("@handler goes on an async method, or takes the request type")


def _request_type(function: Callable[..., Any]) -> type[Any]:
    explicit = getattr(function, _HANDLER_MARK)
    if explicit is not None:
        return typing.cast(type[Any], explicit)
    parameters = list(inspect.signature(function).parameters)
    if len(parameters) != 2:
        raise TypeError(f"handler {function.__qualname__} must take exactly one request")
    try:
        hints = typing.get_type_hints(function)
    except NameError as error:
        raise TypeError(
            f"handler {function.__qualname__}: cannot resolve its request annotation ({error}); "
            "use @handler(RequestType)"
        ) from None
    request = hints.get(parameters[1])
    if not isinstance(request, type):
        raise TypeError(f"handler {function.__qualname__}: annotate its request with a class")
    return request


class Service:
    """Base of bus services: set ``name`` and mark async methods with :func:`handler`.

    Each handler takes one request message and returns one reply message (registered
    :class:`~trader.bus.codec.Message` subclasses or :mod:`trader.model` objects). Two handlers
    may not take the same request type.
    """

    name: ClassVar[str] = ""

    def handlers(self) -> dict[type[Any], Handler]:
        """Return this service's bound handlers by request type."""
        found: dict[type[Any], Handler] = {}
        for cls in reversed(type(self).__mro__):
            for attribute, value in vars(cls).items():
                if callable(value) and hasattr(value, _HANDLER_MARK):
                    request = _request_type(value)
                    bound = getattr(self, attribute)
                    held = next((t for t, h in found.items() if h.__name__ == attribute), None)
                    if held is not None:
                        del found[held]  # an override replaces the inherited handler
                    if request in found:
                        raise TypeError(
                            f"service {type(self).__name__}: two handlers take {request.__name__}"
                        )
                    found[request] = bound
        return found


class ServiceDispatcher:
    """Turn request frames into reply frames for one service: decode, dedupe, run, encode.

    This is the :data:`~trader.bus.worker.FrameHandler` a :class:`Worker` runs. A malformed
    frame gets no reply (counted in ``malformed``); an unknown type or a type the service has no
    handler for gets a "not understood" error reply; a handler exception a "remote error" one.
    """

    def __init__(
        self,
        service: Service,
        *,
        registry: MessageRegistry | None = None,
        dedupe_size: int = 10_000,
        dedupe_ttl: float = 300.0,
    ) -> None:
        if not service.name:
            raise BusError(f"service {type(service).__name__} has no name; set `name = ...`")
        self.service = service
        self.registry = registry if registry is not None else default_registry
        self.handlers = service.handlers()
        self.dedupe_size = dedupe_size
        self.dedupe_ttl = dedupe_ttl
        self.malformed = 0
        self.duplicates = 0
        self.handled = 0
        self._running: dict[bytes, list[asyncio.Future[bytes | None]] | None] = {}
        self._done: OrderedDict[bytes, tuple[float, bytes | None]] = OrderedDict()
        self._inserts = 0

    async def __call__(self, frame: bytes) -> bytes | None:
        try:
            envelope = decode_envelope(frame)
        except MalformedMessage as error:
            self.malformed += 1
            log.warning(
                "service %r dropped a malformed request (%s); %d dropped so far",
                self.service.name,
                error,
                self.malformed,
            )
            return None
        message_id = envelope.id
        done = self._done.get(message_id)
        if done is not None and done[0] > time.monotonic():
            self.duplicates += 1
            return done[1]
        running = self._running
        if message_id in running:
            # A retry of a request still running: wait for the same reply.
            self.duplicates += 1
            waiters = running[message_id]
            if waiters is None:
                waiters = running[message_id] = []
            waiter: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
            waiters.append(waiter)
            return await waiter
        running[message_id] = None  # waiters are made only when a retry arrives (rare)
        try:
            reply = await self._handle(envelope.type, envelope)
        except BaseException as error:
            for waiter in running.pop(message_id, None) or ():
                if not waiter.done():
                    waiter.set_exception(error)
            raise
        for waiter in running.pop(message_id, None) or ():
            if not waiter.done():
                waiter.set_result(reply)
        self._remember(message_id, reply)
        return reply

    def _remember(self, message_id: bytes, reply: bytes | None) -> None:
        cache = self._done
        cache[message_id] = (time.monotonic() + self.dedupe_ttl, reply)
        if len(cache) > self.dedupe_size:
            cache.popitem(last=False)
        self._inserts += 1
        if self._inserts % 1024 == 0:  # forget expired replies now and then, oldest first
            now = time.monotonic()
            while cache and next(iter(cache.values()))[0] <= now:
                cache.popitem(last=False)

    async def _handle(self, type_name: str, envelope: Any) -> bytes | None:
        registry = self.registry
        try:
            request = registry.decode(envelope)
            function = self.handlers.get(type(request))
            if function is None:
                raise NotUnderstood(type_name, f"service {self.service.name!r} has no handler")
        except NotUnderstood as error:
            return self._error(envelope.id, "not_understood", type_name, _detail(error))
        self.handled += 1
        try:
            reply = await function(request)
            out = registry.envelope(reply, correlation_id=envelope.id)
            return encode_envelope(out)
        except Exception as error:
            if not isinstance(error, TraderError):
                log.exception(
                    "service %r: handler for %s raised", self.service.name, type(request).__name__
                )
            return self._error(envelope.id, "remote_error", type(error).__name__, str(error))

    def _error(self, request_id: bytes, code: str, error_type: str, message: str) -> bytes:
        reply = ErrorReply(code, error_type, message)
        return encode_envelope(self.registry.envelope(reply, correlation_id=request_id))


def _detail(error: NotUnderstood) -> str:
    text = str(error)
    prefix = f"message type {error.type_name!r} not understood: "
    suffix = "; register the type on both sides of the call"
    if text.startswith(prefix):
        text = text[len(prefix) :]
    return text.removesuffix(suffix)


_local_services: dict[
    tuple[str, str], list[tuple[asyncio.AbstractEventLoop, ServiceDispatcher]]
] = {}


def local_dispatcher(endpoint: str, service: str) -> ServiceDispatcher | None:
    """Return a dispatcher of ``service`` hosted on ``endpoint`` in the running loop, or None.

    Several local hosts of one service take turns.
    """
    entries = _local_services.get((endpoint, service))
    if not entries:
        return None
    loop = asyncio.get_running_loop()
    for index, (owner, dispatcher) in enumerate(entries):
        if owner is loop:
            entries.append(entries.pop(index))
            return dispatcher
    return None


class ServiceHost:
    """Run workers for services against one broker endpoint; a context manager.

    ``async with ServiceHost("tcp://broker:5555", [Echo()], security=...):`` keeps the services
    served (reconnecting as needed) until the block ends. The endpoint decides the topology:
    ``inproc://`` for a broker in this process, ``ipc://`` on this host, ``tcp://`` anywhere.
    With ``inproc://``, clients in the same event loop call the services directly (no sockets,
    no broker hop; same replies, errors and timeouts) unless ``local_calls`` is False.
    """

    def __init__(
        self,
        endpoint: str,
        services: Sequence[Service],
        *,
        context: zmq.Context[Any] | None = None,
        security: Security | None = None,
        registry: MessageRegistry | None = None,
        concurrency: int = 16,
        heartbeat_interval: float = mdp.HEARTBEAT_INTERVAL,
        liveness: int = mdp.HEARTBEAT_LIVENESS,
        dedupe_size: int = 10_000,
        dedupe_ttl: float = 300.0,
        local_calls: bool = True,
    ) -> None:
        self.endpoint = endpoint
        self.local_calls = local_calls
        names = [service.name for service in services]
        if len(set(names)) != len(names):
            raise BusError(f"services {names} share a name; each needs its own")
        self.dispatchers = [
            ServiceDispatcher(
                service, registry=registry, dedupe_size=dedupe_size, dedupe_ttl=dedupe_ttl
            )
            for service in services
        ]
        self.workers = [
            Worker(
                endpoint,
                dispatcher.service.name,
                dispatcher,
                context=context,
                security=security,
                heartbeat_interval=heartbeat_interval,
                liveness=liveness,
                concurrency=concurrency,
            )
            for dispatcher in self.dispatchers
        ]

    async def start(self) -> None:
        """Start one worker per service (returns at once; they connect in the background).

        On an ``inproc://`` endpoint the services also become *local*: a :class:`Client` of
        the same endpoint in the same event loop calls them directly, without sockets.
        """
        for worker in self.workers:
            worker.start()
        if self.local_calls and self.endpoint.startswith("inproc://"):
            loop = asyncio.get_running_loop()
            for dispatcher in self.dispatchers:
                key = (self.endpoint, dispatcher.service.name)
                _local_services.setdefault(key, []).append((loop, dispatcher))

    async def stop(self) -> None:
        """Disconnect every worker and wait for them to end."""
        for dispatcher in self.dispatchers:
            entries = _local_services.get((self.endpoint, dispatcher.service.name), [])
            entries[:] = [entry for entry in entries if entry[1] is not dispatcher]
        await asyncio.gather(*(worker.stop() for worker in self.workers))

    async def __aenter__(self) -> ServiceHost:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    async def serve_forever(self) -> None:
        """Start the workers and serve until cancelled."""
        await self.start()
        try:
            await asyncio.gather(*(worker.start() for worker in self.workers))
        finally:
            await self.stop()
