"""Conformance suites and fixtures for trader plugins.

Installing ``trader-sdk`` registers :mod:`trader_sdk.testing.pytest_plugin` with pytest (entry
point ``pytest11``), which provides the fixtures below to every test session. The suites are
classes to subclass:

* :class:`trader_sdk.testing.candle_store.CandleStoreConformance`
* :class:`trader_sdk.testing.state_store.StateStoreConformance`
* :class:`trader_sdk.testing.scheduler.SchedulerConformance`
* :class:`trader_sdk.testing.exchange.ExchangeConformance`
* :class:`trader_sdk.testing.strategy_runtime.StrategyRuntimeConformance`

:mod:`trader_sdk.testing.postgres` starts throwaway PostgreSQL servers for store tests.
"""
