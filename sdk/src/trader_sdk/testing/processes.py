"""Real processes for system tests: start them, wait for their output, and always clean up.

:class:`ProcessGroup` starts Python processes (with a folder of test modules on their path),
reads every stdout line on a thread so a test can wait for a line with a timeout instead of
sleeping, and ends every process it started, also when the test fails::

    group = ProcessGroup(tmp_path)
    try:
        group.start("-m", "trader.bus.broker", "tcp://127.0.0.1:0", "--plaintext")
        endpoint = await group.line("tcp://")
    finally:
        group.stop_all()
"""

from __future__ import annotations

import asyncio
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path


class ProcessGroup:
    """Start Python processes, collect their stdout lines, and end them all at the end."""

    def __init__(self, module_dir: Path) -> None:
        self.module_dir = module_dir
        self.started: list[subprocess.Popen[str]] = []
        self.lines: queue.Queue[tuple[int, str]] = queue.Queue()

    def start(self, *arguments: str) -> subprocess.Popen[str]:
        """Run ``python ARGUMENTS`` with ``module_dir`` first on its path; stdin is a pipe."""
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(self.module_dir), *sys.path])}
        process = subprocess.Popen(
            [sys.executable, *arguments],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.started.append(process)
        threading.Thread(target=self._read, args=(process,), daemon=True).start()
        return process

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.lines.put((process.pid, line.strip()))

    async def line_from(self, prefix: str, timeout: float = 20.0) -> tuple[int, str]:
        """Wait for the next stdout line starting with ``prefix`` (others are skipped); return
        the process id that printed it and the line."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"no line starting with {prefix!r} within {timeout} s")
            try:
                pid, text = await loop.run_in_executor(None, self.lines.get, True, remaining)
            except queue.Empty:
                continue
            if text.startswith(prefix):
                return pid, text

    async def line(self, prefix: str, timeout: float = 20.0) -> str:
        """Wait for the next stdout line starting with ``prefix``; return the line."""
        return (await self.line_from(prefix, timeout))[1]

    def stop_all(self) -> None:
        """End every process: SIGTERM, then SIGKILL after five seconds; close their pipes."""
        for process in self.started:
            if process.poll() is None:
                process.terminate()
        for process in self.started:
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    pipe.close()
