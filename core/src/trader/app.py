"""Wiring: build the components a configuration names, through the plugin host."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, cast

from trader.interfaces import CandleStore, StateStore
from trader.plugins import PluginHost, get_plugin_manager
from trader.registry import Kind

if TYPE_CHECKING:
    from trader.config import Config


@asynccontextmanager
async def open_candle_store(
    config: Config, host: PluginHost | None = None
) -> AsyncIterator[CandleStore]:
    """Build, open and finally close the candle store ``[storage.candles]`` names."""
    host = host or get_plugin_manager()
    component = config.storage.candles
    store = cast(
        CandleStore,
        host.build(
            Kind.CANDLE_STORE,
            component.plugin,
            _options(
                host, Kind.CANDLE_STORE, component.plugin, component.options, "storage.candles"
            ),
            config.context(),
        ),
    )
    async with store:
        yield store


@asynccontextmanager
async def open_state_store(
    config: Config, host: PluginHost | None = None
) -> AsyncIterator[StateStore]:
    """Build, open and finally close the state store ``[storage.state]`` names."""
    host = host or get_plugin_manager()
    component = config.storage.state
    store = cast(
        StateStore,
        host.build(
            Kind.STATE_STORE,
            component.plugin,
            _options(host, Kind.STATE_STORE, component.plugin, component.options, "storage.state"),
            config.context(),
        ),
    )
    async with store:
        yield store


def _options(host: PluginHost, kind: Kind, name: str, raw: dict[str, object], where: str) -> object:
    from trader.config import validate_options

    return validate_options(host.registration(kind, name), raw, where=where)
