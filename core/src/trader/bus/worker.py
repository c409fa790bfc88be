"""The Majordomo worker (RFC 7/MDP 0.1): serves one service through the broker.

A :class:`Worker` connects a DEALER to the broker, announces its service with READY and answers
each REQUEST with the reply its handler makes. It heartbeats the broker after each interval in
which it sent nothing else and, if the broker stays silent for ``liveness`` intervals (checked
at that deadline, not on a tick) or tells it to DISCONNECT, drops the socket and reconnects with
exponential backoff. It knows nothing of envelopes: the handler takes the
request body frame and returns the reply body frame (see :mod:`trader.bus.service` for typed
handlers, deduplication and error replies).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import zmq

from trader.bus import mdp
from trader.bus.errors import BusError
from trader.bus.liveness import Liveness
from trader.bus.transport import Security, make_socket

__all__ = ["FrameHandler", "Worker"]

log = logging.getLogger(__name__)

#: Turns a request body frame into the reply body frame; None when the request was unreadable
#: (the worker then answers with an empty frame, which frees the broker slot).
FrameHandler = Callable[[bytes], Awaitable[bytes | None]]


class Worker:
    """Serve ``service`` for the broker at ``endpoint`` with ``handler``.

    ``concurrency`` is how many handlers the worker runs at once, batched requests included
    (announced to the broker as its capacity; 1 is plain RFC 7; at most
    :data:`~trader.bus.mdp.MAX_CAPACITY`, else :class:`~trader.bus.errors.BusError`).
    ``reconnect_initial``/``reconnect_max`` bound the backoff between reconnection attempts in
    seconds. Run it with ``await worker.run()`` (returns after
    :meth:`stop`) or start it as a task with :meth:`start`.
    """

    def __init__(
        self,
        endpoint: str,
        service: str,
        handler: FrameHandler,
        *,
        context: zmq.Context[Any] | None = None,
        security: Security | None = None,
        heartbeat_interval: float = mdp.HEARTBEAT_INTERVAL,
        liveness: int = mdp.HEARTBEAT_LIVENESS,
        concurrency: int = 1,
        reconnect_initial: float = 0.05,
        reconnect_max: float = 5.0,
    ) -> None:
        if not service or service.startswith(mdp.MMI_PREFIX.decode()):
            raise ValueError(f"invalid service name {service!r}")
        if not 1 <= concurrency <= mdp.MAX_CAPACITY:
            raise BusError(
                f"worker of {service!r}: concurrency {concurrency} is out of range; "
                f"use 1 to {mdp.MAX_CAPACITY}"
            )
        self.endpoint = endpoint
        self.service = service
        self._service_frame = service.encode()
        self._handler = handler
        self._base_context = context  # a shadow does not keep its context alive
        self._context = mdp.sync_context(context)
        self._security = security
        self.heartbeat_interval = heartbeat_interval
        self.liveness = liveness
        self.concurrency = concurrency
        self.reconnect_initial = reconnect_initial
        self.reconnect_max = reconnect_max
        self.malformed = 0
        self.sessions = 0
        #: Set while a session is open (READY sent); cleared between sessions.
        self.connected = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(concurrency)
        self._next_socket: zmq.Socket[bytes] | None = None

    def start(self) -> asyncio.Task[None]:
        """Run the worker as a task of the running loop and return it.

        The first socket is made here, so a bad endpoint or security setting raises
        :class:`~trader.errors.ConfigError` at once instead of inside the task.
        """
        if self._task is None or self._task.done():
            if self._next_socket is None:
                self._next_socket = self._make_socket()
            self._task = asyncio.create_task(self.run(), name=f"bus-worker-{self.service}")
        return self._task

    def _make_socket(self) -> zmq.Socket[bytes]:
        socket = make_socket(
            self._context,
            zmq.DEALER,
            self.endpoint,
            bind=False,
            security=self._security,
            heartbeat_ms=max(1, int(self.heartbeat_interval * 1000)),
            options=mdp.QUEUE_OPTIONS,
        )
        return socket

    async def stop(self) -> None:
        """Say DISCONNECT to the broker, stop serving and wait for the loop to end."""
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def next_delay(self, previous: float, heard: bool) -> float:
        """Return the pause before the next connection attempt.

        It starts at ``reconnect_initial`` again after a session in which the broker answered,
        and doubles up to ``reconnect_max`` while attempts go unanswered.
        """
        if heard:
            return self.reconnect_initial
        return min(previous * 2, self.reconnect_max)

    async def run(self) -> None:
        """Serve until :meth:`stop`: connect, serve a session, back off, reconnect."""
        delay = self.reconnect_initial
        while not self._stop.is_set():
            heard = await self._session()
            if self._stop.is_set():
                break
            delay = self.next_delay(delay, heard)
            log.info("bus worker %r: reconnecting to the broker in %.2f s", self.service, delay)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    async def _session(self) -> bool:
        """Serve one connection; return whether the broker was heard from at all."""
        socket, self._next_socket = self._next_socket, None
        if socket is None:
            socket = self._make_socket()
        self.sessions += 1
        session = _Session(self, socket)
        try:
            session.send(mdp.worker_ready(self._service_frame, self.concurrency))
            self.connected.set()
            waits = [
                asyncio.create_task(session.heartbeat()),
                asyncio.create_task(session.lost.wait()),
                asyncio.create_task(self._stop.wait()),
            ]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in waits:
                    task.cancel()
                await asyncio.gather(*waits, return_exceptions=True)
            if self._stop.is_set():
                session.pump.send(mdp.worker_disconnect())
                session.pump.close(linger_ms=200)  # let DISCONNECT reach the broker
        finally:
            self.connected.clear()
            session.pump.close()
        return session.heard

    def _malformed(self, frames: list[bytes], why: str) -> None:
        self.malformed += 1
        log.warning(
            "bus worker %r dropped a malformed message (%s, %d frames); %d dropped so far",
            self.service,
            why,
            len(frames),
            self.malformed,
        )


class _Session:
    """One connection to the broker: its socket pump, liveness and request tasks."""

    def __init__(self, worker: Worker, socket: zmq.Socket[bytes]) -> None:
        self.worker = worker
        self.heard = False
        self.busy = 0
        self.liveness = Liveness(worker.heartbeat_interval, worker.liveness)
        self.lost = asyncio.Event()
        self.pump = mdp.SocketPump(socket, self.on_message)

    def send(self, frames: list[bytes]) -> None:
        if self.pump.send(frames):
            self.liveness.sent()

    async def heartbeat(self) -> None:
        """Heartbeat the broker when idle; end the session once it is silent too long.

        Wakes at the next deadline (a heartbeat due, the broker's expiry), not on a fixed tick,
        so a silent broker is noticed ``liveness`` intervals after it was last heard.
        """
        worker = self.worker
        liveness = self.liveness
        while True:
            now = liveness.now()
            if liveness.expired(now):
                log.warning(
                    "bus worker %r: broker silent for %d heartbeats; reconnecting",
                    worker.service,
                    worker.liveness,
                )
                self.lost.set()
                return
            if liveness.send_due(now):
                # RFC 7: a HEARTBEAT only when nothing else went to the broker for an interval.
                self.send(mdp.worker_heartbeat(self.busy))
            await asyncio.sleep(liveness.next_wakeup())

    def on_message(self, frames: list[bytes]) -> None:
        self.liveness.beat()
        self.heard = True
        worker = self.worker
        if len(frames) < 3 or frames[0] != b"" or frames[1] != mdp.WORKER:
            worker._malformed(frames, "not an MDP worker message")
            return
        command = frames[2]
        if command == mdp.REQUEST:
            # ["", MDPW01, REQUEST, client, "", body...]
            if len(frames) < 6 or frames[4] != b"":
                worker._malformed(frames, "REQUEST without client address and body")
                return
            self.busy += 1
            if len(frames) == 6:
                task = asyncio.create_task(self.serve_one(frames[3], frames[5]))
            else:
                task = asyncio.create_task(self.serve_batch(frames[3], frames[5:]))
            worker._handlers.add(task)
            task.add_done_callback(worker._handlers.discard)
        elif command == mdp.HEARTBEAT:
            pass
        elif command == mdp.DISCONNECT:
            log.info("bus worker %r: broker said DISCONNECT; reconnecting", worker.service)
            self.lost.set()
        else:
            worker._malformed(frames, f"unexpected command {command!r}")

    async def _run(self, body: bytes) -> bytes | None:
        # At most `concurrency` handlers run at once, however the requests were batched.
        async with self.worker._slots:
            try:
                return await self.worker._handler(body)
            except Exception:
                log.exception("bus worker %r: handler failed; no reply sent", self.worker.service)
                return None

    async def serve_one(self, client: bytes, body: bytes) -> None:
        try:
            reply = await self._run(body)
        finally:
            self.busy -= 1
        # A reply always goes back, if only an empty frame: it frees the broker's slot.
        self.send(mdp.worker_reply(client, [reply if reply is not None else b""]))

    async def serve_batch(self, client: bytes, bodies: list[bytes]) -> None:
        try:
            replies = await asyncio.gather(*(self._run(body) for body in bodies))
        finally:
            self.busy -= 1
        frames = [reply for reply in replies if reply is not None] or [b""]
        self.send(mdp.worker_reply(client, frames))
