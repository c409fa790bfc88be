"""A bare websocket client for the v2 protocol, for tests that check frames one by one."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from types import TracebackType
from typing import Any

import aiohttp


class ConnectionDropped(Exception):
    """The server closed or dropped the websocket; ``code`` is the close code (1006: abrupt)."""

    def __init__(self, code: int | None) -> None:
        super().__init__(f"websocket closed with code {code}")
        self.code = code


class WireClient:
    """Send JSON frames and read the server's frames decoded, with timeouts, nothing more.

    ``async with WireClient(url) as client:`` connects; :meth:`receive` returns the next frame,
    :meth:`wait_for` the first frame matching a predicate (the frames it skipped are kept in
    :attr:`skipped`). A dropped connection raises :class:`ConnectionDropped` with its code.
    """

    def __init__(self, url: str, *, autoping: bool = True) -> None:
        self.url = url
        self.autoping = autoping
        self.skipped: list[Any] = []
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse[bool] | None = None

    async def __aenter__(self) -> WireClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        """Open the websocket (raises ``aiohttp.WSServerHandshakeError`` when refused)."""
        self._session = aiohttp.ClientSession()
        try:
            self._ws = await self._session.ws_connect(self.url, autoping=self.autoping)
        except BaseException:
            await self._session.close()
            raise

    async def close(self) -> None:
        """Close the websocket and the HTTP session."""
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()

    @property
    def ws(self) -> aiohttp.ClientWebSocketResponse[bool]:
        """The underlying aiohttp websocket."""
        if self._ws is None:
            raise RuntimeError("not connected")
        return self._ws

    async def send(self, message: Any) -> None:
        """Send ``message`` as one JSON text frame."""
        await self.ws.send_str(json.dumps(message))

    async def receive(self, timeout: float = 5.0) -> Any:
        """Return the next frame decoded from JSON; raise ``TimeoutError`` after ``timeout`` s."""
        try:
            message = await asyncio.wait_for(self.ws.receive(), timeout)
        except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
            raise TimeoutError(f"no frame within {timeout} s") from None
        if message.type == aiohttp.WSMsgType.TEXT:
            return json.loads(message.data)
        if message.type == aiohttp.WSMsgType.CLOSE:
            # The code the server sent: aiohttp may report 1006 afterwards when the server
            # closes the TCP connection before the client's close reply goes out.
            raise ConnectionDropped(int(message.data))
        if message.type in (
            aiohttp.WSMsgType.CLOSING,
            aiohttp.WSMsgType.CLOSED,
            aiohttp.WSMsgType.ERROR,
        ):
            code = self.ws.close_code
            raise ConnectionDropped(None if code is None else int(code))
        return await self.receive(timeout)

    async def wait_for(self, predicate: Callable[[Any], bool], timeout: float = 5.0) -> Any:
        """Return the first frame for which ``predicate`` is true, keeping the others."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            frame = await self.receive(max(0.0, deadline - loop.time()))
            if predicate(frame):
                return frame
            self.skipped.append(frame)

    async def subscribe_candles(self, key: str, **extra: Any) -> int:
        """Subscribe to candles ``key``; return the chanId (the snapshot is left unread)."""
        await self.send({"event": "subscribe", "channel": "candles", "key": key, **extra})
        reply = await self.wait_for(
            lambda f: isinstance(f, dict) and f.get("event") in ("subscribed", "error")
        )
        if reply["event"] == "error":
            raise RuntimeError(f"subscribe failed: {reply}")
        return int(reply["chanId"])
