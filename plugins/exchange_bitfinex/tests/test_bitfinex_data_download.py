"""``trader data download`` (trader.cli.download_cmd) against the fake Bitfinex: progress,
resume after an interruption, and the stored candles equal to the fake's ground truth."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from trader.cli.download_cmd import download_command
from trader.interfaces import PluginContext
from trader.model import DAY_MS, HOUR_MS, SeriesKey, Timeframe
from trader.stores.sqlite_candles import SqliteCandleOptions, SqliteCandleStore
from trader_exchange_bitfinex.testing import FakeBitfinex, FakeSettings

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def fake() -> Iterator[FakeBitfinex]:
    """The fake on its own thread and event loop (the command runs ``asyncio.run`` itself)."""
    ready = threading.Event()
    holder: dict[str, object] = {}

    def serve() -> None:
        async def main() -> None:
            stop = asyncio.Event()
            holder["stop"], holder["loop"] = stop, asyncio.get_running_loop()
            async with FakeBitfinex(FakeSettings(seed=9, quiet_probability=0.05)) as server:
                holder["fake"] = server
                ready.set()
                await stop.wait()

        asyncio.run(main())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    server = holder["fake"]
    assert isinstance(server, FakeBitfinex)
    yield server
    loop = holder["loop"]
    assert isinstance(loop, asyncio.AbstractEventLoop)
    stop = holder["stop"]
    assert isinstance(stop, asyncio.Event)
    loop.call_soon_threadsafe(stop.set)
    thread.join(10)


def test_download_stores_the_ground_truth_and_resumes(tmp_path: Path, fake: FakeBitfinex) -> None:
    config = tmp_path / "trader.toml"
    config.write_text(
        f"""
[storage.candles]
plugin = "sqlite"
path = "candles.sqlite"

[exchanges.bitfinex]
public_url = "{fake.rest_url}"
private_url = "{fake.rest_url}"
ws_url = "{fake.ws_url}"
candles_per_request = 500
""",
        encoding="utf-8",
    )
    end = fake.clock.now_ms() - fake.clock.now_ms() % HOUR_MS
    start, middle = end - DAY_MS, end - DAY_MS // 2
    runner = CliRunner()
    base = ["-e", "bitfinex", "-s", "BTC/USD", "-t", "1m", "--from", str(start)]
    first = runner.invoke(
        download_command, [*base, "--to", str(middle)], obj={"config_path": config}
    )
    assert first.exit_code == 0, first.output
    assert "resumed" not in first.output
    requests_before = len(fake.requests)
    second = runner.invoke(download_command, [*base, "--to", str(end)], obj={"config_path": config})
    assert second.exit_code == 0, second.output
    assert "resumed from" in second.output  # the first half was not downloaded again
    assert "downloading bitfinex:BTC/USD:1m: " in second.output  # progress lines
    assert len(fake.requests) - requests_before == 2  # 720 candles at 500 a request

    async def stored() -> object:
        context = PluginContext(data_dir=tmp_path, config_dir=tmp_path)
        options = SqliteCandleOptions(path=str(tmp_path / "candles.sqlite"))
        async with SqliteCandleStore(options, context) as store:
            return await store.read(SeriesKey("bitfinex", "BTC/USD", Timeframe.parse("1m")))

    rows = fake.ground_truth("BTC/USD", "1m").rows()
    truth = [row for row in rows if start <= row[0] < end]
    candles = asyncio.run(stored())
    assert candles.rows() == truth  # type: ignore[attr-defined]
    assert 1_300 < len(truth) < 1_440  # quiet minutes have no candle, and that is no loss
