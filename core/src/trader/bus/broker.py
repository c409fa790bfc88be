"""The Majordomo broker (RFC 7/MDP 0.1 with RFC 8/MMI): routes client requests to workers.

One ROUTER socket serves clients and workers alike. Workers announce a service with READY and
are handed requests least-recently-used first; a worker that announced a capacity above 1 (the
pipelining extension of :mod:`trader.bus.mdp`) holds that many slots in the queue. Broker and
workers heartbeat each other; a worker silent for ``liveness`` intervals is forgotten, and one
the broker does not know is told to DISCONNECT (it then reconnects and sends READY again).

Requests for a service wait for a worker, but not for ever: once a request has waited
``unavailable_after`` seconds while the service has no worker at all, the broker answers each of
its calls with a ``service_unavailable`` error reply, so a caller fails in bounded time instead
of hanging. A call whose caller has stopped waiting (the request's ``ttl`` frame) is dropped
unrun, and a service queues at most ``max_queue`` calls (more are refused ``service_busy``).

Retries reach the worker that has the call: the broker reads the message id of each body frame
and remembers where it went. A retry of a call still queued is dropped; a retry of a call sent
to a worker still connected goes to that worker (whose dedupe answers it), splitting a batch if
its calls went to different workers; only when that worker is gone does it go to another.

The loop is synchronous (a tight ``zmq.Poller`` loop is much faster than asyncio here): run it
in a thread with :meth:`Broker.start`, in the current thread with :meth:`Broker.run`, or as a
process with ``python -m trader.bus.broker``. Malformed messages are counted and dropped.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import zmq

from trader.bus import mdp
from trader.bus.codec import ErrorReply, default_registry, encode_envelope
from trader.bus.liveness import Liveness
from trader.bus.streams import StreamForwarder
from trader.bus.transport import Security, bound_endpoint, make_socket

__all__ = ["Broker", "BrokerStats", "main"]

log = logging.getLogger(__name__)

_MAX_DRAIN = 2000
#: Seconds the loop keeps polling without blocking after it last handled a message. In
#: lockstep traffic the next message (a worker's reply, a client's next call) usually comes
#: within this window, and catching it by polling skips waking a thread that slept on an idle
#: core (tens of microseconds on a VM). Each empty poll yields the core, so peers on it run
#: first; an idle broker stops polling after this window and blocks as before.
_BUSY_POLL = 0.0002
#: Give up the core to other runnable threads (a no-op where the OS has no sched_yield).
_sched_yield: Callable[[], None] = getattr(os, "sched_yield", lambda: None)


@dataclass
class BrokerStats:
    """Counters of what the broker did, for tests and monitoring."""

    requests: int = 0
    replies: int = 0
    malformed: int = 0
    #: Calls answered ``service_unavailable`` because no worker came in time.
    expired_requests: int = 0
    #: Queued calls dropped because their caller stopped waiting (their ``ttl`` passed).
    late_requests: int = 0
    #: Calls refused because the service's queue was full.
    refused_requests: int = 0
    #: Retries of a call still queued here, dropped (the queued copy stands for them).
    duplicates: int = 0
    #: Retries routed to the worker that has (or had) the call, for its dedupe to answer.
    sticky_retries: int = 0
    workers_expired: int = 0
    disconnects_sent: int = 0


@dataclass(eq=False)
class _Worker:
    identity: bytes
    service: _Service
    capacity: int
    liveness: Liveness
    #: Requests sent for free slots and not answered yet.
    busy: int = 0
    #: Retries sent beyond the free slots (to the worker that has the call) not answered yet.
    extra: int = 0
    alive: bool = True


@dataclass(eq=False)
class _Request:
    client: bytes
    body: list[bytes]
    ids: list[bytes | None]
    queued_at: float
    deadline: float


@dataclass(eq=False)
class _Service:
    name: bytes
    workers: dict[bytes, _Worker] = field(default_factory=dict)
    #: Free worker slots, least recently used first.
    slots: deque[_Worker] = field(default_factory=deque)
    #: Waiting requests, oldest first.
    requests: deque[_Request] = field(default_factory=deque)
    #: Calls (body frames) in ``requests``.
    waiting: int = 0


#: Where a call went: the identity of its worker and when. Tuples of bytes and a float are not
#: tracked by the garbage collector, so a full table costs collections nothing.
_Route = tuple[bytes, float]


class Broker:
    """A Majordomo broker bound to ``endpoint`` (``inproc://``, ``ipc://`` or ``tcp://``).

    ``forwarder`` is an optional stream hub (:class:`~trader.bus.streams.StreamForwarder`) the
    broker hosts: it is started and stopped with the broker and forwards on a thread of its own.

    ``context`` defaults to :func:`trader.bus.mdp.shared_context` so ``inproc://`` reaches
    workers and clients of the same process. ``security`` is handed to
    :func:`trader.bus.transport.make_socket` (CURVE for TCP, or an explicit plaintext opt-in).

    The broker remembers where each call id went (at most ``route_memory`` ids, each for
    ``route_ttl`` seconds), so a client's retry reaches the worker that has or had the call and
    its dedupe answers it; ``max_queue`` bounds the calls waiting for a worker per service.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        context: zmq.Context[Any] | None = None,
        security: Security | None = None,
        heartbeat_interval: float = mdp.HEARTBEAT_INTERVAL,
        liveness: int = mdp.HEARTBEAT_LIVENESS,
        unavailable_after: float | None = None,
        forwarder: StreamForwarder | None = None,
        max_queue: int = 100_000,
        route_memory: int = 100_000,
        route_ttl: float = 60.0,
    ) -> None:
        if heartbeat_interval <= 0 or liveness < 1:
            raise ValueError("heartbeat_interval must be positive and liveness at least 1")
        if max_queue < 1 or route_memory < 1 or route_ttl <= 0:
            raise ValueError("max_queue, route_memory and route_ttl must be positive")
        self.requested_endpoint = endpoint
        base = context if context is not None else mdp.shared_context()
        self._base_context = base  # a shadow does not keep its context alive
        self._context: zmq.Context[Any] = zmq.Context.shadow(base.underlying)
        self._security = security
        self.heartbeat_interval = heartbeat_interval
        self.liveness = liveness
        self.unavailable_after = (
            unavailable_after if unavailable_after is not None else heartbeat_interval * liveness
        )
        self.max_queue = max_queue
        self.route_memory = route_memory
        self.route_ttl = route_ttl
        self.stats = BrokerStats()
        self.forwarder = forwarder
        self._socket: zmq.Socket[bytes] | None = None
        self._endpoint: str | None = None
        self._services: dict[bytes, _Service] = {}
        self._workers: dict[bytes, _Worker] = {}
        self._routes: OrderedDict[bytes, _Route] = OrderedDict()
        #: Calls waiting in a service queue, by id.
        self._queued: dict[bytes, _Request] = {}
        self._now = time.monotonic()
        #: When the loop must next look at the timers (lowered by handlers as needed).
        self._next_tick = 0.0
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._wake_address = f"inproc://trader-broker-wake-{id(self):x}"
        self._wake_in: zmq.Socket[bytes] | None = None
        self._wake_out: zmq.Socket[bytes] | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """The address the broker listens on (with the real port for ``tcp://host:0``)."""
        if self._endpoint is None:
            raise RuntimeError("the broker is not bound yet; call bind() or start() first")
        return self._endpoint

    def bind(self) -> str:
        """Create and bind the ROUTER socket; return the bound address. Idempotent."""
        if self._socket is None:
            socket = make_socket(
                self._context,
                zmq.ROUTER,
                self.requested_endpoint,
                bind=True,
                security=self._security,
                heartbeat_ms=max(1, int(self.heartbeat_interval * 1000)),
                options=mdp.QUEUE_OPTIONS,
            )
            self._socket = socket
            self._endpoint = bound_endpoint(socket)
            self._wake_in = self._context.socket(zmq.PAIR)
            self._wake_in.bind(self._wake_address)
            self._wake_out = self._context.socket(zmq.PAIR)
            self._wake_out.connect(self._wake_address)
            if self.forwarder is not None:
                self.forwarder.start()
        return self.endpoint

    def start(self) -> str:
        """Bind and run the broker in a daemon thread; return the bound address."""
        if self._thread is not None:
            return self.endpoint
        endpoint = self.bind()
        self._thread = threading.Thread(target=self.run, name="trader-bus-broker", daemon=True)
        self._thread.start()
        return endpoint

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop (wherever it runs) and close the sockets. Idempotent."""
        self._stopping = True
        if self._wake_out is not None and not self._wake_out.closed:
            with contextlib.suppress(zmq.ZMQError):
                self._wake_out.send(b"", zmq.NOBLOCK)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        elif self._socket is not None and not self._running:
            self._close()
        if self.forwarder is not None:
            self.forwarder.stop()

    _running = False

    def _close(self) -> None:
        for socket in (self._socket, self._wake_in, self._wake_out):
            if socket is not None and not socket.closed:
                socket.close(linger=0)

    def run(self) -> None:
        """Serve until :meth:`stop` is called (from another thread or a signal handler).

        The loop sleeps until a message arrives or the next timer is due (a worker's expiry, a
        heartbeat owed to an idle worker, a queued request's deadline), not on a fixed tick.
        Run in a process's main thread, for a short while after each message it polls without
        blocking (yielding the core between polls), so the next message of a call is caught
        without a cold wake-up.
        """
        self.bind()
        socket = self._socket
        wake = self._wake_in
        assert socket is not None and wake is not None
        poller = zmq.Poller()
        poller.register(socket, zmq.POLLIN)
        poller.register(wake, zmq.POLLIN)
        recv = mdp.recv_frames
        has_input = mdp.has_input
        handle = self._handle
        monotonic = time.monotonic
        sched_yield = _sched_yield
        self._next_tick = monotonic()
        self._running = True
        # Only a broker that has its process to itself polls: in a thread it would contend for
        # the GIL with the application it shares the process with.
        busy_poll = _BUSY_POLL if threading.current_thread() is threading.main_thread() else 0.0
        spin_until = 0.0
        try:
            while not self._stopping:
                now = monotonic()
                if now < spin_until:
                    events = poller.poll(0)
                    if not events:
                        sched_yield()  # let a peer on this core run meanwhile
                        if now >= self._next_tick:
                            self._now = now
                            self._tick(now)
                        continue
                else:
                    wait_ms = max(0, int((self._next_tick - now) * 1000) + 1)
                    events = poller.poll(wait_ms)
                ready = dict(events)
                if socket in ready:
                    now = self._now = monotonic()
                    spin_until = now + busy_poll
                    # Ask whether more is waiting rather than receive until zmq.Again: raising
                    # and catching pyzmq's error costs twice as much, once per wake-up.
                    for _ in range(_MAX_DRAIN):
                        try:
                            frames = recv(socket)
                        except zmq.Again:
                            break
                        handle(frames, now)
                        if not has_input(socket):
                            break
                if wake in ready:
                    while wake.poll(0):
                        wake.recv()
                now = self._now = monotonic()
                if now >= self._next_tick:
                    self._tick(now)
        finally:
            self._running = False
            self._close()

    def worker_count(self, service: str) -> int:
        """Return how many workers serve ``service`` now (safe to call from any thread)."""
        record = self._services.get(service.encode())
        return len(record.workers) if record is not None else 0

    # -- message handling ----------------------------------------------------------------------

    def _malformed(self, frames: list[bytes], why: str) -> None:
        self.stats.malformed += 1
        log.warning(
            "bus broker dropped a malformed message (%s, %d frames); %d dropped so far",
            why,
            len(frames),
            self.stats.malformed,
        )

    def _send(self, frames: list[bytes]) -> None:
        assert self._socket is not None
        try:
            mdp.send_frames(self._socket, frames)
        except zmq.ZMQError as error:  # a full or vanished peer: the client will retry
            log.debug("bus broker could not send to a peer: %s", error)

    def _send_worker(self, worker: _Worker, frames: list[bytes]) -> None:
        self._send(frames)
        worker.liveness.last_sent = self._now

    def _handle(self, frames: list[bytes], now: float) -> None:
        if len(frames) < 3 or frames[1] != b"":
            self._malformed(frames, "no address and empty delimiter")
            return
        header = frames[2]
        if header == mdp.CLIENT:
            self._handle_client(frames, now)
        elif header == mdp.WORKER:
            self._handle_worker(frames, now)
        else:
            self._malformed(frames, "unknown protocol header")

    def _handle_client(self, frames: list[bytes], now: float) -> None:
        # [client, "", MDPC01, service, [ttl=MS], body...]
        if len(frames) < 5:
            self._malformed(frames, "client request without service or body")
            return
        client, service_name = frames[0], frames[3]
        body = frames[4:]
        if service_name.startswith(mdp.MMI_PREFIX):
            self._handle_mmi(client, service_name, body)
            return
        deadlines: list[float] | None = None
        if body[0].startswith(mdp.TTL_PREFIX):
            ttls = mdp.parse_ttl(body[0])
            body = body[1:]
            if ttls is None or not body or len(ttls) not in (1, len(body)):
                self._malformed(frames, "client request with an invalid ttl frame or no body")
                return
            if len(ttls) == 1:
                deadlines = [now + ttls[0] / 1000] * len(body)
            else:
                deadlines = [now + ttl / 1000 for ttl in ttls]
        self.stats.requests += 1
        service = self._services.get(service_name)
        if service is None:
            service = self._services[service_name] = _Service(service_name)
        routes, queued, workers = self._routes, self._queued, self._workers
        envelope_id = mdp.envelope_id
        # Split the body: calls seen before go where their first copy is; the rest are new.
        fresh: list[bytes] = []
        fresh_ids: list[bytes | None] = []
        deadline = -_FOREVER if deadlines is not None else _FOREVER
        sticky: dict[_Worker, list[bytes]] | None = None
        for index, frame in enumerate(body):
            message_id = envelope_id(frame)
            if message_id is not None:
                waiting = queued.get(message_id)
                if waiting is not None:  # still queued: the queued copy will be answered
                    if deadlines is None:
                        waiting.deadline = _FOREVER
                    elif deadlines[index] > waiting.deadline:
                        waiting.deadline = deadlines[index]
                    self.stats.duplicates += 1
                    continue
                route = routes.get(message_id)
                if route is not None:
                    target = workers.get(route[0])
                    if target is not None and target.service is service:
                        if sticky is None:
                            sticky = {}
                        sticky.setdefault(target, []).append(frame)
                        continue
                    del routes[message_id]  # its worker is gone: the call starts again
            fresh.append(frame)
            fresh_ids.append(message_id)
            if deadlines is not None and deadlines[index] > deadline:
                deadline = deadlines[index]
        if sticky is not None:
            for worker, frames_for in sticky.items():
                # The worker has or had these calls: its dedupe answers without running them
                # again. Sent beyond its free slots, so the retry never waits behind new work.
                self.stats.sticky_retries += len(frames_for)
                worker.extra += 1
                self._send_worker(worker, mdp.worker_request(worker.identity, client, frames_for))
        if not fresh:
            return
        if service.waiting + len(fresh) > self.max_queue:
            self._refuse(service, client, fresh_ids)
            return
        slots = service.slots
        if slots and not service.requests:
            while slots:
                worker = slots.popleft()
                if worker.alive:
                    worker.busy += 1
                    self._send_worker(worker, mdp.worker_request(worker.identity, client, fresh))
                    self._remember(fresh_ids, worker.identity, now)
                    return
        request = _Request(client, fresh, fresh_ids, now, deadline)
        service.requests.append(request)
        service.waiting += len(fresh)
        for message_id in fresh_ids:
            if message_id is not None:
                queued[message_id] = request
        self._dispatch(service)

    def _remember(self, ids: list[bytes | None], identity: bytes, now: float) -> None:
        routes = self._routes
        for message_id in ids:
            if message_id is not None:
                routes[message_id] = (identity, now)
        if len(routes) > self.route_memory:
            for _ in range(len(routes) - self.route_memory):
                routes.popitem(last=False)

    def _forget(self, request: _Request) -> None:
        """Forget the ids of a request leaving the queue (sent, dropped or expired)."""
        queued = self._queued
        for message_id in request.ids:
            if message_id is not None and queued.get(message_id) is request:
                del queued[message_id]

    def _refuse(self, service: _Service, client: bytes, ids: list[bytes | None]) -> None:
        self.stats.refused_requests += len(ids)
        name = service.name.decode(errors="replace")
        self._error_replies(
            service,
            client,
            ids,
            ErrorReply(
                "service_busy",
                "ServiceBusy",
                f"service {name!r} already has {service.waiting} calls waiting for a worker "
                f"(the broker's max_queue is {self.max_queue}); retry later or add workers",
            ),
        )

    def _error_replies(
        self, service: _Service, client: bytes, ids: list[bytes | None], error: ErrorReply
    ) -> None:
        """Answer every call of a request (one reply envelope per body frame) with ``error``."""
        replies = [
            encode_envelope(default_registry.envelope(error, correlation_id=message_id))
            for message_id in ids
            if message_id is not None
        ]
        if replies:
            self._send(mdp.client_reply(client, service.name, replies))

    def _handle_mmi(self, client: bytes, service_name: bytes, body: list[bytes]) -> None:
        if service_name == mdp.MMI_SERVICE:
            asked = self._services.get(body[0])
            code = mdp.MMI_FOUND if asked is not None and asked.workers else mdp.MMI_NOT_FOUND
        else:
            code = mdp.MMI_NOT_IMPLEMENTED
        # Frames after the service name (trader's query id) are echoed after the code.
        self._send(mdp.client_reply(client, service_name, [code, *body[1:]]))

    def _handle_worker(self, frames: list[bytes], now: float) -> None:
        # [worker, "", MDPW01, command, ...]
        if len(frames) < 4:
            self._malformed(frames, "worker message without command")
            return
        identity, command = frames[0], frames[3]
        worker = self._workers.get(identity)
        if command == mdp.REPLY:
            # [worker, "", MDPW01, REPLY, client, "", body...]
            if worker is None:
                self._disconnect(identity)
                return
            if len(frames) < 7 or frames[5] != b"":
                self._malformed(frames, "REPLY without client address and body")
                return
            worker.liveness.last_heard = now
            service = worker.service
            self.stats.replies += 1
            self._send(mdp.client_reply(frames[4], service.name, frames[6:]))
            if worker.extra > 0:
                worker.extra -= 1
            elif worker.busy > 0:
                worker.busy -= 1
                service.slots.append(worker)
                if service.requests:
                    self._dispatch(service)
        elif command == mdp.HEARTBEAT:
            if worker is None:
                self._disconnect(identity)
                return
            worker.liveness.last_heard = now
            if len(frames) >= 5:
                busy = mdp.parse_count(frames[4])
                if busy is None:
                    self._malformed(frames, "HEARTBEAT with an invalid busy count")
                elif busy != worker.busy + worker.extra:
                    self._reconcile(worker, busy)
        elif command == mdp.READY:
            self._handle_ready(identity, worker, frames, now)
        elif command == mdp.DISCONNECT:
            if worker is not None:
                self._remove_worker(worker)
        elif command in mdp.COMMANDS:
            # RFC 7: a valid command the broker does not expect from a worker (REQUEST) is a
            # protocol error: forget the worker and tell it to DISCONNECT.
            log.warning("bus broker: a worker sent command %r; disconnecting it", command)
            self.stats.malformed += 1
            if worker is not None:
                self._remove_worker(worker)
            self._disconnect(identity)
        else:
            self._malformed(frames, f"unknown worker command {command!r}")

    def _handle_ready(
        self, identity: bytes, worker: _Worker | None, frames: list[bytes], now: float
    ) -> None:
        if worker is not None:
            # RFC 7: a second READY is a protocol error; forget the worker and disconnect it.
            log.warning("bus broker: worker sent READY twice; disconnecting it")
            self._remove_worker(worker)
            self._disconnect(identity)
            return
        if len(frames) < 5 or not frames[4] or frames[4].startswith(mdp.MMI_PREFIX):
            self._malformed(frames, "READY without a valid service name")
            self._disconnect(identity)
            return
        capacity = 1
        if len(frames) >= 6:
            parsed = mdp.parse_count(frames[5], minimum=1)
            if parsed is None:
                self._malformed(frames, "READY with an invalid capacity")
                self._disconnect(identity)
                return
            capacity = parsed
        service_name = frames[4]
        service = self._services.get(service_name)
        if service is None:
            service = self._services[service_name] = _Service(service_name)
        liveness = Liveness(self.heartbeat_interval, self.liveness)
        liveness.last_heard = liveness.last_sent = now
        worker = _Worker(identity, service, capacity, liveness)
        self._workers[identity] = worker
        service.workers[identity] = worker
        service.slots.extend([worker] * capacity)
        self._next_tick = min(self._next_tick, liveness.next_wakeup(now) + now)
        log.info(
            "bus broker: worker ready for %r (capacity %d)",
            service_name.decode(errors="replace"),
            capacity,
        )
        self._dispatch(service)

    def _dispatch(self, service: _Service) -> None:
        slots, requests = service.slots, service.requests
        now = self._now
        while slots and requests:
            request = requests[0]
            if request.deadline <= now:  # the caller stopped waiting: do not run it
                self._drop_late(service, requests.popleft())
                continue
            worker = slots.popleft()
            if not worker.alive:
                continue
            requests.popleft()
            service.waiting -= len(request.body)
            worker.busy += 1
            frames = mdp.worker_request(worker.identity, request.client, request.body)
            self._send_worker(worker, frames)
            self._forget(request)
            self._remember(request.ids, worker.identity, now)

    def _drop_late(self, service: _Service, request: _Request) -> None:
        service.waiting -= len(request.body)
        self.stats.late_requests += len(request.body)
        self._forget(request)

    def _reconcile(self, worker: _Worker, running: int) -> None:
        """Trust the worker's own count of running requests (lost messages leak slots)."""
        worker.busy = min(running, worker.capacity)
        worker.extra = running - worker.busy
        service = worker.service
        free = worker.capacity - worker.busy
        held = sum(1 for slot in service.slots if slot is worker)
        if held > free:
            extra = held - free
            kept: deque[_Worker] = deque()
            for slot in reversed(service.slots):
                if slot is worker and extra:
                    extra -= 1
                    continue
                kept.appendleft(slot)
            service.slots = kept
        elif held < free:
            service.slots.extend([worker] * (free - held))
            self._dispatch(service)

    def _disconnect(self, identity: bytes) -> None:
        self.stats.disconnects_sent += 1
        self._send(mdp.broker_command(identity, mdp.DISCONNECT))

    def _remove_worker(self, worker: _Worker) -> None:
        worker.alive = False
        self._workers.pop(worker.identity, None)
        service = worker.service
        service.workers.pop(worker.identity, None)
        service.slots = deque(slot for slot in service.slots if slot is not worker)

    # -- timers --------------------------------------------------------------------------------

    def _tick(self, now: float) -> None:
        """Expire silent workers, heartbeat idle ones, expire queued requests; set the next tick.

        Each deadline is checked when it falls due: a worker is forgotten ``liveness``
        intervals after it was last heard, and gets a HEARTBEAT only after an interval in which
        the broker sent it nothing else (RFC 7).
        """
        self._now = now
        interval = self.heartbeat_interval
        # Queues are looked at every so often; workers' deadlines exactly.
        next_tick = now + min(interval, self.unavailable_after / 4)
        for worker in list(self._workers.values()):
            liveness = worker.liveness
            if liveness.expired(now):
                log.warning(
                    "bus broker: worker for %r missed %d heartbeats; forgetting it",
                    worker.service.name.decode(errors="replace"),
                    self.liveness,
                )
                self.stats.workers_expired += 1
                self._remove_worker(worker)
                continue
            if liveness.send_due(now):
                self._send_worker(worker, mdp.broker_command(worker.identity, mdp.HEARTBEAT))
            next_tick = min(next_tick, liveness.last_sent + interval, liveness.expires_at)
        for name, service in list(self._services.items()):
            if service.requests:
                self._expire_late(service, now)
            if not service.workers:
                if service.requests:
                    self._expire_requests(service, now)
                if not service.requests:
                    del self._services[name]  # nothing to remember; READY makes it again
        routes = self._routes
        while routes and next(iter(routes.values()))[1] <= now - self.route_ttl:
            routes.popitem(last=False)
        self._next_tick = next_tick

    def _expire_late(self, service: _Service, now: float) -> None:
        requests = service.requests
        if any(request.deadline <= now for request in requests):
            kept: deque[_Request] = deque()
            for request in requests:
                if request.deadline <= now:
                    self._drop_late(service, request)
                else:
                    kept.append(request)
            service.requests = kept

    def _expire_requests(self, service: _Service, now: float) -> None:
        requests = service.requests
        name = service.name.decode(errors="replace")
        error = ErrorReply(
            "service_unavailable",
            "ServiceUnavailable",
            f"no worker for service {name!r} within {self.unavailable_after:g} s",
        )
        while requests and now - requests[0].queued_at >= self.unavailable_after:
            request = requests.popleft()
            service.waiting -= len(request.body)
            self.stats.expired_requests += len(request.body)
            self._forget(request)
            self._error_replies(service, request.client, request.ids, error)


_FOREVER: Final = float("inf")


def main(argv: Sequence[str] | None = None) -> int:
    """Run a broker in the foreground: ``python -m trader.bus.broker ENDPOINT``.

    Prints the bound address on the first line of standard output (useful with port 0) and, with
    ``--streams``, the forwarder's two addresses on the second; serves until SIGINT or SIGTERM.
    """
    parser = argparse.ArgumentParser(prog="python -m trader.bus.broker", description=main.__doc__)
    parser.add_argument("endpoint", help="address to bind, e.g. tcp://127.0.0.1:5555")
    parser.add_argument("--heartbeat", type=float, default=mdp.HEARTBEAT_INTERVAL)
    parser.add_argument("--liveness", type=int, default=mdp.HEARTBEAT_LIVENESS)
    parser.add_argument("--unavailable-after", type=float, default=None)
    parser.add_argument(
        "--plaintext", action="store_true", help="allow plaintext TCP (loopback only)"
    )
    parser.add_argument(
        "--streams",
        nargs=2,
        metavar=("XSUB", "XPUB"),
        help="also host the stream forwarder: publishers' and subscribers' endpoints",
    )
    parser.add_argument("--keys", help="CURVE keypair file of the broker (NAME.key_secret)")
    parser.add_argument("--allow", help="directory of the public keys of admitted peers")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    security: Security | None = None
    if args.keys:
        if not args.allow:
            parser.error("--keys needs --allow DIRECTORY (the public keys of admitted peers)")
        security = Security.server(args.keys, args.allow)
    elif args.plaintext:
        security = Security(plaintext_tcp=True)
    forwarder = None
    if args.streams:
        forwarder = StreamForwarder(args.streams[0], args.streams[1], security)
    broker = Broker(
        args.endpoint,
        forwarder=forwarder,
        security=security,
        heartbeat_interval=args.heartbeat,
        liveness=args.liveness,
        unavailable_after=args.unavailable_after,
    )
    print(broker.bind(), flush=True)
    if forwarder is not None:
        print(forwarder.xsub_address, forwarder.xpub_address, flush=True)

    def stop(signum: int, frame: object) -> None:
        broker.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    broker.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
