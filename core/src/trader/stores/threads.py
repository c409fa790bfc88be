"""The threads a store's blocking driver calls run on, so the event loop never blocks.

SQLAlchemy engines and most database drivers are synchronous. A store built on one owns a
:class:`StoreThreads`: it starts it in ``open()``, runs every blocking call through
:meth:`StoreThreads.run`, and stops it in ``close()``. With one worker (the default) the
store's work is serialised in call order; a pool of workers suits a connection pool.

The driver's own exceptions never leave the store: :meth:`StoreThreads.run` turns the ones
listed in ``driver_errors`` into the :class:`~trader.errors.StorageError` the store's
``describe`` builds (it decides what the message says, and keeps secrets out of it), and
passes :class:`~trader.errors.TraderError` through unchanged. Plugin stores use it too.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from trader.errors import StorageError, TraderError

__all__ = ["StoreThreads"]

T = TypeVar("T")


class StoreThreads:
    """Run a store's blocking calls on its own threads, with clear errors when it is closed.

    ``label`` names the store in messages (``"sqlite candle store /data/candles.sqlite"``);
    ``thread_name`` prefixes the threads' names; ``describe(what, error)`` builds the
    :class:`StorageError` for a driver error raised while doing ``what``; ``keep_cause=False``
    drops the driver's exception from the chain (for drivers whose messages may carry a
    connection string).
    """

    def __init__(
        self,
        label: str,
        *,
        thread_name: str,
        driver_errors: tuple[type[Exception], ...],
        describe: Callable[[str, Exception], StorageError],
        workers: int = 1,
        keep_cause: bool = True,
    ) -> None:
        if workers < 1:
            raise ValueError(f"a store needs at least one worker thread, not {workers}")
        self.label = label
        self._thread_name = thread_name
        self._driver_errors = driver_errors
        self._describe = describe
        self._workers = workers
        self._keep_cause = keep_cause
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None

    @property
    def running(self) -> bool:
        """Whether the threads are started (between :meth:`start` and :meth:`stop`)."""
        return self._executor is not None

    def start(self) -> bool:
        """Start the threads; ``False`` (and nothing done) when they already run."""
        with self._lock:
            if self._executor is not None:
                return False
            self._executor = ThreadPoolExecutor(
                max_workers=self._workers, thread_name_prefix=self._thread_name
            )
            return True

    async def stop(self, last: Callable[[], object] | None = None, *, wait: bool = False) -> None:
        """Run ``last`` (closing connections) on the threads, then stop them.

        Harmless when already stopped. With ``wait`` it returns only once the threads ended.
        """
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is None:
            return
        try:
            if last is not None:
                await asyncio.get_running_loop().run_in_executor(executor, last)
        finally:
            executor.shutdown(wait=wait)

    async def run(self, operation: str, job: Callable[[], T], *, subject: object = None) -> T:
        """Run ``job`` on the store's threads and return its result.

        ``operation`` (and ``subject``, such as a series, when given) say what the job does,
        for messages. Raises :class:`StorageError` when the store is not open or was closed
        meanwhile, or when the job raised one of the driver's errors.
        """
        what = operation if subject is None else f"{operation} {subject}"
        executor = self._executor
        if executor is None:
            raise StorageError(
                f"{self.label}: cannot {what}: the store is not open; await open() first "
                "(or use 'async with store:')"
            )
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(executor, self._guarded, what, job)
        except RuntimeError as error:
            if "shutdown" not in str(error):
                raise
            raise StorageError(
                f"{self.label}: cannot {what}: the store was closed meanwhile; open it again"
            ) from error

    def _guarded(self, what: str, job: Callable[[], T]) -> T:
        try:
            return job()
        except TraderError:
            raise
        except self._driver_errors as error:
            if self._keep_cause:
                raise self._describe(what, error) from error
            raise self._describe(what, error) from None
