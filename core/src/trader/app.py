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
    store = cast(CandleStore, _build(config, host, Kind.CANDLE_STORE, "candles"))
    async with store:
        yield store


@asynccontextmanager
async def open_state_store(
    config: Config, host: PluginHost | None = None
) -> AsyncIterator[StateStore]:
    """Build, open and finally close the state store ``[storage.state]`` names."""
    store = cast(StateStore, _build(config, host, Kind.STATE_STORE, "state"))
    async with store:
        yield store


def _build(config: Config, host: PluginHost | None, kind: Kind, table: str) -> object:
    """Validate the options of ``[storage.<table>]`` and build the component it names."""
    from trader.config import validate_options

    host = host or get_plugin_manager()
    component = getattr(config.storage, table)
    options = validate_options(
        host.registration(kind, component.plugin),
        component.plugin_options(),
        where=f"{config.label}: storage.{table}",
        reserved=("plugin",),
        config_dir=config.config_dir,
        environ=config.environ,
    )
    return host.build(kind, component.plugin, options, config.context())
