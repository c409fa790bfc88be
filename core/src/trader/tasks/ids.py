"""Task ids: UUIDv7 strings (RFC 9562) that sort by creation time and are unique across nodes.

Layout of the 128 bits: a 48-bit Unix time in milliseconds, the version (7), 12 bits
``rand_a``, the variant (``10``), and 62 bits ``rand_b``. This generator treats ``rand_a`` and
``rand_b`` together as one 74-bit number and keeps ids strictly increasing within a process
with RFC 9562's "monotonic random" method (section 6.2, method 2): the first id of a
millisecond starts that number at a random value whose top bit is clear (a guard against
rollover), and every further id in the same millisecond adds a random increment of 1 to 2**32.
If the number would overflow, or the wall clock steps back, the timestamp is held at (or moved
one millisecond past) the last one issued instead, so an id is never smaller than the one before.
The remaining random bits keep ids from different processes and hosts apart.

Ids are written in the canonical lowercase 8-4-4-4-12 form, so comparing the strings compares
the numbers: sorting ids sorts tasks by creation.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections.abc import Callable
from typing import Final

__all__ = ["TaskIdGenerator", "is_task_id", "new_task_id", "task_id_time"]

_TAIL_BITS: Final = 74  # rand_a (12) + rand_b (62)
_TAIL_LIMIT: Final = 1 << _TAIL_BITS
_SEED_BITS: Final = _TAIL_BITS - 1  # a fresh millisecond starts with the top bit clear
_MAX_INCREMENT_BITS: Final = 32
_TIME_LIMIT: Final = 1 << 48
_PATTERN: Final = re.compile(
    r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"
)


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class TaskIdGenerator:
    """Make UUIDv7 strings that are unique and strictly increasing in the order they are made.

    ``clock_ms`` gives the wall-clock time in ms since the epoch and ``random_bits(n)`` a random
    integer of ``n`` bits; both default to the real ones and are parameters so tests can drive
    them. Safe to call from several threads.
    """

    def __init__(
        self,
        clock_ms: Callable[[], int] = _wall_clock_ms,
        random_bits: Callable[[int], int] = secrets.randbits,
    ) -> None:
        self._clock_ms = clock_ms
        self._random_bits = random_bits
        self._lock = threading.Lock()
        self._last_time = -1
        self._last_tail = 0

    def __call__(self) -> str:
        """Return a new id, greater than every id this generator returned before."""
        with self._lock:
            now = self._clock_ms()
            if now > self._last_time:
                stamp, tail = now, self._random_bits(_SEED_BITS)
            else:
                # The same millisecond, or the clock stepped back: count up from the last id.
                stamp = self._last_time
                tail = self._last_tail + 1 + self._random_bits(_MAX_INCREMENT_BITS)
                if tail >= _TAIL_LIMIT:
                    stamp, tail = stamp + 1, self._random_bits(_SEED_BITS)
            if not 0 <= stamp < _TIME_LIMIT:
                raise ValueError(f"time {stamp} ms does not fit the 48 bits of a UUIDv7")
            self._last_time, self._last_tail = stamp, tail
        return _format(stamp, tail)


def _format(stamp: int, tail: int) -> str:
    rand_a = tail >> 62
    rand_b = tail & ((1 << 62) - 1)
    value = (stamp << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    digits = f"{value:032x}"
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


_default_generator = TaskIdGenerator()


def new_task_id() -> str:
    """Return a new task id: a UUIDv7 string, unique, and greater than any made before it here."""
    return _default_generator()


def is_task_id(text: str) -> bool:
    """Whether ``text`` is a UUIDv7 in the canonical lowercase form that task ids use."""
    return bool(_PATTERN.match(text))


def task_id_time(task_id: str) -> int:
    """The creation time (ms since the epoch) a task id carries.

    Raises ``ValueError`` if ``task_id`` is not a canonical UUIDv7 string.
    """
    if not is_task_id(task_id):
        raise ValueError(f"{task_id!r} is not a task id (a lowercase UUIDv7 string)")
    return int(task_id[:8] + task_id[9:13], 16)
