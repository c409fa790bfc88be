"""Application heartbeats: when to send one, and when a silent peer counts as gone.

ZeroMQ's own heartbeats (set by :func:`trader.bus.transport.make_socket`) drop a dead TCP
connection, but a ROUTER never tells the application, and a peer that is alive at the socket
level may still be stuck. So every long-lived peer pair also exchanges application heartbeats
(MDP's HEARTBEAT command, stream keep-alives) and tracks them with :class:`Liveness`:

.. code-block:: python

    liveness = Liveness(interval=1.0)
    while True:
        poll(timeout=liveness.next_wakeup())     # seconds until something is due
        if message: liveness.beat()              # any traffic from the peer counts
        if liveness.send_due(): send_heartbeat(); liveness.sent()
        if liveness.expired(): reconnect()       # silent for `misses` intervals

The clock is injectable, so the rules are testable without waiting.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Liveness"]


class Liveness:
    """Track one peer: expired after ``misses`` heartbeat intervals without hearing from it.

    ``interval`` is in seconds. A new tracker counts as just heard from (a fresh peer gets the
    full grace period). All methods take an optional ``now`` from the same clock.
    """

    __slots__ = ("_clock", "interval", "last_heard", "last_sent", "misses")

    def __init__(
        self,
        interval: float,
        misses: int = 3,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"heartbeat interval must be positive, not {interval!r}")
        if misses < 1:
            raise ValueError(f"misses must be at least 1, not {misses!r}")
        self.interval = float(interval)
        self.misses = misses
        self._clock = clock
        start = clock()
        self.last_heard = start
        self.last_sent = start

    def now(self) -> float:
        """The tracker's clock."""
        return self._clock()

    def beat(self, now: float | None = None) -> None:
        """Record that the peer was heard from (a heartbeat or any other message)."""
        self.last_heard = self._clock() if now is None else now

    def sent(self, now: float | None = None) -> None:
        """Record that we sent the peer something (resets the send timer)."""
        self.last_sent = self._clock() if now is None else now

    @property
    def expires_at(self) -> float:
        """The clock time at which the peer counts as gone unless heard from before."""
        return self.last_heard + self.misses * self.interval

    def expired(self, now: float | None = None) -> bool:
        """True when the peer has been silent for ``misses`` intervals or longer."""
        at = self._clock() if now is None else now
        return at >= self.expires_at

    def send_due(self, now: float | None = None) -> bool:
        """True when an interval has passed since we last sent the peer anything."""
        at = self._clock() if now is None else now
        return at >= self.last_sent + self.interval

    def next_wakeup(self, now: float | None = None) -> float:
        """Seconds (≥ 0) until a heartbeat is due or the peer expires, for poll timeouts."""
        at = self._clock() if now is None else now
        return max(0.0, min(self.last_sent + self.interval, self.expires_at) - at)
